"""Stressed words: per-word prominence from word timings, behind a pluggable detector interface.

The default detector is acoustic: a stressed word stands out from the rest of its own
utterance by a higher F0 peak, more energy and a longer duration than its length
predicts. Each cue is z-scored within the utterance (so speaker and recording level
cancel out) and the weighted sum is the word's prominence. F0 peaks are taken above the
utterance's declination line (a Theil-Sen fit over the voiced frames, robust to the
accents themselves): a statement's F0 falls from start to end, and raw peaks called the
first word stressed in 48 of the 57 words chosen on RAVDESS. A WhiStress-style model
(Whisper + stress head) plugs in through the same interface where its weights exist.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from emotionthinker.config import AsrConfig, ProsodyConfig, project_path
from emotionthinker.prosody.asr import Word, hub_cache_dir


class StressModelUnavailableError(RuntimeError):
    reason = "stress_model_unavailable"


@dataclass(frozen=True)
class WordProminence:
    word: str
    start: float
    end: float
    prominence: float
    stressed: bool
    # Raw cues (None where a cue cannot be measured, e.g. an unvoiced word has no F0 peak).
    f0_peak_st: float | None = None  # semitones above the utterance's F0 declination line
    energy_db: float | None = None  # dB re the utterance's speech energy
    duration_ratio: float | None = None  # duration per syllable / utterance median

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class StressDetector(Protocol):
    name: str

    def detect(self, y: np.ndarray, sr: int, words: Sequence[Word], f0_track: Any = None) -> list[WordProminence]:
        """Prominence for every word, in order; ``f0_track`` may be None (the detector measures it)."""
        ...


def stressed_words(prominences: Sequence[WordProminence]) -> list[str]:
    return [p.word for p in prominences if p.stressed]


# -- helpers ---------------------------------------------------------------------------------


_VOWEL_GROUPS = re.compile(r"[aeiouyäöüàáâèéêìíîòóôùúû]+", re.IGNORECASE)


def count_syllables(word: str) -> int:
    """Vowel groups, minus a silent final 'e' in English spellings; at least 1 (digits count per char)."""
    w = word.lower()
    if w.isdigit():
        return len(w)
    n = len(_VOWEL_GROUPS.findall(w))
    if n > 1 and w.endswith("e") and not w.endswith(("le", "ee", "ie", "ye")):
        n -= 1
    return max(n, 1)


def as_times_f0(track: Any) -> tuple[np.ndarray, np.ndarray]:
    """Accept (times, f0) pairs or objects with ``times`` and ``f0_hz``/``f0``; unvoiced -> NaN."""
    if isinstance(track, tuple) and len(track) == 2:
        times, f0 = track
    else:
        times = getattr(track, "times")
        f0 = getattr(track, "f0_hz", None)
        if f0 is None:
            f0 = getattr(track, "f0")
    times = np.asarray(times, dtype=float)
    f0 = np.asarray(f0, dtype=float).copy()
    if times.shape != f0.shape:
        raise ValueError(f"F0 track times {times.shape} and values {f0.shape} differ in shape")
    f0[~(f0 > 0)] = np.nan
    return times, f0


def _zscore(values: np.ndarray, missing_as_min: bool) -> np.ndarray:
    """z-scores over finite entries; missing ones get the lowest z (or 0), a flat cue gives all 0."""
    out = np.zeros_like(values, dtype=float)
    ok = np.isfinite(values)
    if ok.sum() >= 2:
        sd = float(np.std(values[ok]))
        if sd > 1e-9:
            out[ok] = (values[ok] - float(np.mean(values[ok]))) / sd
    if (~ok).any():
        out[~ok] = float(out[ok].min()) if (missing_as_min and ok.any()) else 0.0
    return out


def declination_line(times: np.ndarray, st: np.ndarray, max_points: int = 200) -> tuple[float, float]:
    """(slope st/s, intercept st) of a Theil-Sen line through the voiced frames (NaN: unvoiced).

    The median of pairwise slopes ignores the frames of one or two accented words, where a
    least-squares line would bend towards them. Frames are thinned evenly to bound the pair count.
    """
    ok = np.isfinite(st)
    t, v = times[ok], st[ok]
    if t.size == 0:
        return 0.0, float("nan")
    idx = np.unique(np.linspace(0, t.size - 1, min(t.size, max_points)).astype(int))
    i, j = np.triu_indices(idx.size, 1)
    dt = t[idx][j] - t[idx][i]
    pos = dt > 0
    slope = float(np.median((v[idx][j] - v[idx][i])[pos] / dt[pos])) if pos.any() else 0.0
    return slope, float(np.median(v - slope * t))


def _max_stressed(n_words: int, max_words: int, max_share: float) -> int:
    return min(max_words, max(1, math.ceil(max_share * n_words))) if n_words >= 2 else 0


# -- acoustic detector -----------------------------------------------------------------------


class AcousticProminenceDetector:
    """F0 peak + energy + relative duration, z-scored within the utterance and weighted."""

    name = "acoustic"

    def __init__(self, cfg: AsrConfig | None = None, prosody: ProsodyConfig | None = None) -> None:
        self.cfg = cfg or AsrConfig()
        self.prosody = prosody or ProsodyConfig()

    def detect(self, y: np.ndarray, sr: int, words: Sequence[Word], f0_track: Any = None) -> list[WordProminence]:
        y = np.asarray(y, dtype=np.float64)
        if not words:
            return []
        if f0_track is None:
            from emotionthinker.prosody.f0 import track_f0

            f0_track = track_f0(y, sr, self.prosody)
        times, f0 = as_times_f0(f0_track)
        st = 12 * np.log2(f0 / 100.0)  # unvoiced frames are NaN already
        if self.cfg.stress_pitch_baseline == "declination":
            slope, intercept = declination_line(times, st)
        else:
            slope, intercept = 0.0, float(np.nanmedian(st)) if np.isfinite(st).any() else float("nan")
        above_line = st - (slope * times + intercept)

        n = len(words)
        pitch = np.full(n, np.nan)
        power = np.full(n, np.nan)
        per_syll = np.full(n, np.nan)
        for i, w in enumerate(words):
            if w.end <= w.start:
                continue
            in_word = (times >= w.start) & (times < w.end) & np.isfinite(above_line)
            if in_word.any():
                # 90th percentile, not max: one octave-jump frame must not make a word 'stressed'.
                pitch[i] = float(np.percentile(above_line[in_word], 90))
            seg = y[int(w.start * sr) : max(int(w.end * sr), int(w.start * sr) + 1)]
            if seg.size:
                power[i] = float(np.mean(seg**2))
            per_syll[i] = (w.end - w.start) / count_syllables(w.word)

        speech_power = float(np.nanmean(power)) if np.isfinite(power).any() else float("nan")
        energy_db = 10 * np.log10((power + 1e-12) / (speech_power + 1e-12))
        dur_ratio = per_syll / float(np.nanmedian(per_syll)) if np.isfinite(per_syll).any() else per_syll

        c = self.cfg
        weights = np.array([c.stress_weight_pitch, c.stress_weight_energy, c.stress_weight_duration])
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(3, 1 / 3)
        z = np.vstack([
            _zscore(pitch, missing_as_min=True),
            _zscore(energy_db, missing_as_min=True),
            _zscore(np.log(dur_ratio), missing_as_min=True),
        ])
        prominence = weights @ z

        k = _max_stressed(n, c.stress_max_words, c.stress_max_share)
        ranked = [i for i in np.argsort(-prominence, kind="stable") if prominence[i] >= c.stress_threshold][:k]
        chosen = set(int(i) for i in ranked)

        def opt(v: float) -> float | None:
            return round(float(v), 3) if np.isfinite(v) else None

        return [
            WordProminence(w.word, w.start, w.end, round(float(prominence[i]), 3), i in chosen,
                           opt(pitch[i]), opt(energy_db[i]), opt(dur_ratio[i]))
            for i, w in enumerate(words)
        ]


# -- WhiStress-style detector ----------------------------------------------------------------


class _StressHead:
    """WhiStress head: one extra Whisper decoder block reading an encoder layer, then a 2-layer MLP."""

    def __init__(self, config, state: dict[str, Any]) -> None:
        import torch
        from transformers.models.whisper.modeling_whisper import WhisperDecoderLayer

        d = config.d_model
        self.block = WhisperDecoderLayer(config, layer_idx=0)
        self.classifier = torch.nn.Sequential()
        self.classifier.add_module("fc1", torch.nn.Linear(d, 2 * d))
        self.classifier.add_module("relu", torch.nn.ReLU())
        self.classifier.add_module("fc2", torch.nn.Linear(2 * d, 2))
        self.block.load_state_dict(state["additional_decoder_block"])
        self.classifier.load_state_dict(state["classifier"])
        self.block.eval()
        self.classifier.eval()


class WhiStressDetector:
    """Word stress from a WhiStress-style model (Whisper backbone + stress head).

    ``source`` is ``hub:<repo id>`` (e.g. slprl/WhiStress) or a local folder holding
    ``metadata.json`` (``whisper_tag``, ``layer_for_head``) and the head weights as
    ``classifier.safetensors``/``additional_decoder_block.safetensors`` (or the released
    ``.pt`` state dicts, read with ``torch.load(weights_only=True)``, which refuses pickled code).
    The known word sequence is forced through the decoder, so the stress labels line up
    with the words we already have timings for.
    """

    name = "whistress"
    WEIGHT_FILES = ("classifier", "additional_decoder_block")

    def __init__(self, source: str, download_root: str = "", local_files_only: bool = False) -> None:
        self.source = source
        folder = self._resolve(source, download_root, local_files_only)
        try:
            meta = json.loads((folder / "metadata.json").read_text())
            self.layer = int(meta.get("layer_for_head", 9))
            backbone = str(meta.get("whisper_tag", "openai/whisper-small.en"))
        except (OSError, ValueError) as exc:
            raise StressModelUnavailableError(f"WhiStress metadata.json unreadable in {folder}: {exc}") from None
        if (folder / backbone).is_dir():
            backbone = str(folder / backbone)
        try:
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            self.processor = WhisperProcessor.from_pretrained(backbone, local_files_only=local_files_only)
            self.whisper = WhisperForConditionalGeneration.from_pretrained(backbone, local_files_only=local_files_only).eval()
        except (OSError, ValueError) as exc:
            raise StressModelUnavailableError(
                f"WhiStress backbone {backbone!r} is unavailable ({type(exc).__name__}: {exc}); it is fetched "
                "from the Hugging Face Hub, which this machine cannot reach: use asr.stress_detector='acoustic'"
            ) from None
        self.head = _StressHead(self.whisper.config, {n: self._load_state(folder, n) for n in self.WEIGHT_FILES})

    @staticmethod
    def _resolve(source: str, download_root: str, local_files_only: bool) -> Path:
        if source.startswith("hub:"):
            repo_id = source.split(":", 1)[1]
            try:
                from huggingface_hub import snapshot_download

                return Path(snapshot_download(
                    repo_id, cache_dir=hub_cache_dir(download_root), local_files_only=local_files_only,
                    allow_patterns=["metadata.json", "*.safetensors", "*.pt"],
                ))
            except Exception as exc:  # offline, 404, auth: all mean the same to the caller
                raise StressModelUnavailableError(
                    f"WhiStress weights {repo_id!r} are unavailable ({type(exc).__name__}: {exc}); "
                    "the Hugging Face Hub cannot be reached offline: use asr.stress_detector='acoustic' "
                    "or point asr.stress_model at a local folder"
                ) from None
        folder = project_path(source)  # a folder named in the config: relative to the project root
        if not (folder / "metadata.json").is_file():
            raise StressModelUnavailableError(
                f"WhiStress weights not found: {folder} has no metadata.json (expected the files of slprl/WhiStress)"
            )
        return folder

    @staticmethod
    def _load_state(folder: Path, name: str) -> dict[str, Any]:
        st, pt = folder / f"{name}.safetensors", folder / f"{name}.pt"
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(str(st))
        if pt.is_file():
            import torch

            return torch.load(str(pt), map_location="cpu", weights_only=True)
        raise StressModelUnavailableError(f"WhiStress weights missing: neither {st.name} nor {pt.name} in {folder}")

    def detect(self, y: np.ndarray, sr: int, words: Sequence[Word], f0_track: Any = None) -> list[WordProminence]:
        import torch

        if not words:
            return []
        if sr != 16000:
            import librosa

            y = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=16000)
        y = np.asarray(y, dtype=np.float32)
        y = y / max(float(np.max(np.abs(y))), 1e-9)  # the model was trained on peak-normalised audio
        feats = self.processor.feature_extractor(y, sampling_rate=16000, return_tensors="pt").input_features
        ids = self.processor.tokenizer(" ".join(w.word for w in words), return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.whisper(input_features=feats, decoder_input_ids=ids, output_hidden_states=True)
            h = self.head.block(
                hidden_states=out.decoder_hidden_states[self.layer],
                encoder_hidden_states=out.encoder_hidden_states[self.layer],
            )
            h = h[0] if isinstance(h, tuple) else h
            p_stress = torch.softmax(self.head.classifier(h), dim=-1)[0, :, 1].numpy()
        # Decoder position i predicts token i+1: the label for token i sits at position i-1.
        p_token = np.concatenate([p_stress[-1:], p_stress[:-1]])
        tokenizer = self.processor.tokenizer
        special = set(tokenizer.all_special_ids)
        word_probs: list[float] = []
        for tok, p in zip(ids[0].tolist(), p_token):
            name = tokenizer.convert_ids_to_tokens(tok)
            if tok in special or (name.startswith("<|") and name.endswith("|>")):  # prompt/task/eos tokens
                continue
            piece = tokenizer.decode([tok])
            if piece.startswith(" ") or not word_probs:
                word_probs.append(float(p))
            else:  # a sub-word token: the word is stressed if any piece is
                word_probs[-1] = max(word_probs[-1], float(p))
        if len(word_probs) != len(words):
            raise RuntimeError(f"WhiStress tokens grouped into {len(word_probs)} words, expected {len(words)}")
        return [WordProminence(w.word, w.start, w.end, round(p, 3), p >= 0.5) for w, p in zip(words, word_probs)]


def build_stress_detector(cfg: AsrConfig, prosody: ProsodyConfig | None = None) -> StressDetector:
    """The configured detector, built once per process and configuration (a model loads once).

    A WhiStress model that cannot load raises StressModelUnavailableError.
    """
    return _cached_detector(cfg.model_dump_json(), (prosody or ProsodyConfig()).model_dump_json())


@functools.lru_cache(maxsize=4)
def _cached_detector(asr_json: str, prosody_json: str) -> StressDetector:
    cfg = AsrConfig.model_validate_json(asr_json)
    if cfg.stress_detector == "whistress":
        return WhiStressDetector(cfg.stress_model, cfg.download_root, cfg.local_files_only)
    return AcousticProminenceDetector(cfg, ProsodyConfig.model_validate_json(prosody_json))
