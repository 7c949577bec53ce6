"""Calibrated prosodic levels: tertiles per corpus (pitch per corpus x gender).

A fixed Hz or dB threshold would label every female voice 'high' and every
quiet recording 'low'; levels are therefore relative to the corpus the clip
belongs to. Thresholds are the 1/3 and 2/3 quantiles of:
- pitch: median F0 in semitones, per corpus x gender;
- energy: RMS dBFS over speech frames, per corpus;
- speed: articulation rate (syllables per second of speech), per corpus; the
  rate over the whole clip would change with leading/trailing silence.
A group with fewer than cfg.min_group_size finite values falls back; pitch
to the same gender over all corpora ("global/<gender>", fitted down to a few
dozen clips, since pooling genders would rank clips by gender), and to all
records ("global") only for clips of unknown gender. A batch-wide group under
cfg.min_batch_group_size (a handful of clips: tertiles of two clips call one
'low' and the other 'high') takes the thresholds of the reference calibration
shipped here instead ("reference", "reference/<gender>": RAVDESS and EmoDB,
see its "source"). The calibration is a JSON artifact, so a later batch can
be labelled with exactly the same thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotionthinker.config import Config, ProsodyConfig
from emotionthinker.errors import InputError

CALIBRATION_VERSION = 1
GLOBAL = "global"
REFERENCE = "reference"
# Global tertiles over the shared RAVDESS and EmoDB clips (evaluation.infer.fit_reference_calibration).
REFERENCE_CALIBRATION = Path(__file__).with_name("reference_calibration.json")
# attribute -> (measure name, level names low/mid/high)
ATTRIBUTES: dict[str, tuple[str, tuple[str, str, str]]] = {
    "pitch": ("f0_median_st", ("low", "normal", "high")),
    "energy": ("rms_dbfs", ("low", "normal", "high")),
    "speed": ("articulation_rate_sps", ("slow", "normal", "fast")),
}


class CalibrationError(InputError):
    """The calibration cannot be fitted or read."""


@dataclass(frozen=True)
class Thresholds:
    low_below: float  # values < low_below -> low
    high_above: float  # values > high_above -> high; in between -> normal
    n: int

    def level(self, value: float, names: tuple[str, str, str]) -> str:
        if value < self.low_below:
            return names[0]
        return names[2] if value > self.high_above else names[1]


@dataclass
class Calibration:
    min_group_size: int
    # attribute -> group key ("<corpus>", "<corpus>/<gender>", "global/<gender>", "global") -> thresholds
    groups: dict[str, dict[str, Thresholds]] = field(default_factory=dict)

    def group_for(self, attribute: str, corpus: str, gender: str) -> str:
        """Most specific fitted group for this record (the key written into the record)."""
        fitted = self.groups[attribute]
        if attribute == "pitch":
            candidates = [f"{corpus}/{gender}", f"{GLOBAL}/{gender}", f"{REFERENCE}/{gender}", GLOBAL, REFERENCE]
        else:
            candidates = [corpus, GLOBAL, REFERENCE]
        for key in candidates:
            if key in fitted:
                return key
        raise CalibrationError(f"no {attribute} calibration for {corpus}/{gender} and no global one")

    def to_json(self) -> str:
        payload = {
            "version": CALIBRATION_VERSION,
            "min_group_size": self.min_group_size,
            "measures": {a: m for a, (m, _) in ATTRIBUTES.items()},
            "groups": {
                a: {k: {"low_below": t.low_below, "high_above": t.high_above, "n": t.n} for k, t in sorted(g.items())}
                for a, g in self.groups.items()
            },
        }
        return json.dumps(payload, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        try:
            payload = json.loads(text)
            if not isinstance(payload, dict):
                raise CalibrationError(f"not a calibration file: a JSON {type(payload).__name__}, expected an object")
            if payload.get("version") != CALIBRATION_VERSION:
                raise CalibrationError(f"calibration version {payload.get('version')!r}, expected {CALIBRATION_VERSION}")
            if payload.get("measures") != {a: m for a, (m, _) in ATTRIBUTES.items()}:
                raise CalibrationError(f"calibration was fitted on other measures: {payload.get('measures')}")
            groups = {
                a: {k: Thresholds(float(t["low_below"]), float(t["high_above"]), int(t["n"])) for k, t in payload["groups"][a].items()}
                for a in ATTRIBUTES
            }
            return cls(int(payload["min_group_size"]), groups)
        except CalibrationError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a field of the wrong type
            raise CalibrationError(f"not a calibration file: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"cannot read the calibration {path}: {exc}") from None
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from None


def load_reference_calibration() -> Calibration:
    return Calibration.load(REFERENCE_CALIBRATION)


def _value(measures: Any, name: str) -> float:
    raw = measures.get(name) if isinstance(measures, Mapping) else getattr(measures, name)
    return float("nan") if raw is None else float(raw)


# A small gender group still gets its own pitch thresholds: pooling genders would rank clips by
# gender (every female voice 'high'), a far larger error than tertiles of a few dozen clips.
_GENDERS = ("male", "female")
_ALWAYS_FITTED: dict[str, tuple[str, ...]] = {"pitch": tuple(f"{GLOBAL}/{g}" for g in _GENDERS)}


def _tertiles(values: list[float]) -> Thresholds:
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [1 / 3, 2 / 3])
    return Thresholds(float(lo), float(hi), len(values))


def fit_calibration(
    records_measures: Iterable[tuple[str, str, Any]], cfg: ProsodyConfig | Config, reference: Calibration | None = None
) -> Calibration:
    """Fit tertile thresholds from (corpus, gender, measures) triples.

    measures is a ProsodyMeasures or a mapping with the same keys (a record's
    "prosody" field). Missing/NaN values (e.g. no voicing) are left out of
    that attribute's statistics. Groups below cfg.min_group_size are not fitted,
    so records of those groups fall back when levels are assigned. With a
    `reference`, global groups below cfg.min_batch_group_size are replaced by
    the reference's (keys "reference", "reference/<gender>").
    """
    pcfg = cfg.prosody if isinstance(cfg, Config) else cfg
    values: dict[str, dict[str, list[float]]] = {a: {} for a in ATTRIBUTES}
    for corpus, gender, measures in records_measures:
        for attribute, (name, _) in ATTRIBUTES.items():
            v = _value(measures, name)
            if not np.isfinite(v):
                continue
            keys = [f"{corpus}/{gender}", f"{GLOBAL}/{gender}", GLOBAL] if attribute == "pitch" else [corpus, GLOBAL]
            for key in keys:
                values[attribute].setdefault(key, []).append(v)
    if not values["energy"].get(GLOBAL):
        raise CalibrationError("no records with finite measures to calibrate on")
    groups: dict[str, dict[str, Thresholds]] = {}
    for attribute, by_group in values.items():
        groups[attribute] = {
            k: _tertiles(v) for k, v in by_group.items()
            if k in (GLOBAL, *_ALWAYS_FITTED.get(attribute, ())) or len(v) >= pcfg.min_group_size
        }
    if reference is not None:
        _take_reference_for_small_batches(groups, reference, pcfg.min_batch_group_size)
    return Calibration(pcfg.min_group_size, groups)


def _take_reference_for_small_batches(
    groups: dict[str, dict[str, Thresholds]], reference: Calibration, min_size: int
) -> None:
    for attribute, fitted in groups.items():
        for key in [k for k in fitted if k == GLOBAL or k.startswith(GLOBAL + "/")]:
            ref = reference.groups.get(attribute, {}).get(key)
            if fitted[key].n < min_size and ref is not None:
                del fitted[key]
                fitted[REFERENCE + key[len(GLOBAL):]] = ref


def calibration_gender(record: Mapping[str, Any]) -> str:
    """The corpus's speaker gender, else the classifier's (annotations.gender), else 'unknown'."""
    for value in (record.get("gender"), (record.get("annotations") or {}).get("gender")):
        if str(value).lower() in _GENDERS:
            return str(value).lower()
    return "unknown"


def fit_calibration_from_records(
    records: Iterable[Mapping[str, Any]], cfg: ProsodyConfig | Config, reference: Calibration | None = None
) -> Calibration:
    """fit_calibration over annotated records (keys corpus, gender and prosody)."""
    return fit_calibration(((r["corpus"], calibration_gender(r), r["prosody"]) for r in records), cfg, reference)


def assign_levels(
    measures: Any, corpus: str, gender: str, calibration: Calibration
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Levels for one clip and the calibration group each came from.

    Returns ({"pitch_level", "energy_level", "speed_level"}, {"pitch", "energy", "speed"}).
    A level is None when its measure is missing (no voiced frame: no pitch to
    rank); the caller decides whether that record is quarantined.
    """
    levels: dict[str, str | None] = {}
    used: dict[str, str] = {}
    for attribute, (name, names) in ATTRIBUTES.items():
        group = calibration.group_for(attribute, corpus, gender or "unknown")
        used[attribute] = group
        v = _value(measures, name)
        levels[f"{attribute}_level"] = calibration.groups[attribute][group].level(v, names) if np.isfinite(v) else None
    return levels, used
