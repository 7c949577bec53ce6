"""Speaker age group from a configurable pretrained model, or the explicit value 'unknown'.

``cfg.traits.age_model`` names a hub id (``hub:<id>`` or a bare ``owner/name``) or a
local folder. Two kinds of model are understood:
- audEERING's wav2vec2 age/gender models (``architectures: ["AgeGenderModel"]``): a
  wav2vec2 encoder, mean-pooled, with an age regression head (0..1 = 0..100 years)
  and a female/male/child head; the head classes are defined here as in the model card;
- any transformers audio-classification model whose labels name ages or age groups
  ("teens", "twenties", "20-29", "child", "senior", ...).
Weights load from safetensors only (nothing is unpickled). With no model configured,
or one that cannot be loaded (offline, missing files), the answer is 'unknown' with
age_source 'none': the platform never guesses an age.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from emotionthinker.config import Config

log = logging.getLogger(__name__)

AGE_LEVELS = ("Child", "Teenager", "Young Adult", "Middle-aged", "Elderly")
UNKNOWN = "unknown"
AgeSource = Literal["model", "none"]


class AgeModelUnavailableError(RuntimeError):
    reason = "age_model_unavailable"


@dataclass(frozen=True)
class AgeEstimate:
    age_level: str  # one of AGE_LEVELS or "unknown"
    age_source: AgeSource
    years: float | None = None
    detail: str = ""


def age_level_from_years(years: float) -> str:
    """Band edges follow common usage: <13 child, 13-19 teen, 20-39 young adult, 40-59 middle-aged, 60+ elderly."""
    if years < 13:
        return "Child"
    if years < 20:
        return "Teenager"
    if years < 40:
        return "Young Adult"
    if years < 60:
        return "Middle-aged"
    return "Elderly"


_DECADES = {"teens": 15, "twenties": 25, "thirties": 35, "forties": 45, "fourties": 45, "fifties": 55,
            "sixties": 65, "seventies": 75, "eighties": 85, "nineties": 95}
_WORDS = {"child": "Child", "children": "Child", "kid": "Child", "teen": "Teenager", "teenager": "Teenager",
          "adolescent": "Teenager", "young": "Young Adult", "youth": "Young Adult", "middle": "Middle-aged",
          "senior": "Elderly", "elderly": "Elderly", "old": "Elderly", "older": "Elderly"}


def age_level_from_label(label: str) -> str | None:
    """Map a classifier label ("twenties", "20-29", "age_30s", "senior", "Young Adult") to an age level."""
    text = label.strip().lower().replace("_", " ").replace("-", " ")
    for level in AGE_LEVELS:
        if text == level.lower().replace("-", " "):
            return level
    for word, years in _DECADES.items():
        if word in text:
            return age_level_from_years(years)
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if numbers:
        lo = numbers[0]
        hi = numbers[1] if len(numbers) > 1 else lo + (9 if re.search(rf"{lo}\s*s\b", text) else 0)
        return age_level_from_years((lo + hi) / 2)
    for word, level in _WORDS.items():
        if re.search(rf"\b{word}\b", text):
            return level
    return None


def _age_gender_model_class():
    """audEERING's AgeGenderModel (wav2vec2 + age and gender heads), built lazily: torch is heavy."""
    import torch
    from torch import nn
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    class Head(nn.Module):
        def __init__(self, config, num_labels: int) -> None:
            super().__init__()
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.dropout = nn.Dropout(config.final_dropout)
            self.out_proj = nn.Linear(config.hidden_size, num_labels)

        def forward(self, x):
            return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))

    class AgeGenderModel(Wav2Vec2PreTrainedModel):
        def __init__(self, config) -> None:
            super().__init__(config)
            self.wav2vec2 = Wav2Vec2Model(config)
            self.age = Head(config, 1)
            self.gender = Head(config, 3)
            self.post_init()

        def forward(self, input_values):
            pooled = self.wav2vec2(input_values)[0].mean(dim=1)
            return pooled, self.age(pooled), torch.softmax(self.gender(pooled), dim=-1)

    return AgeGenderModel


class AgeEstimator:
    """Loads the configured model once; ``estimate(y16k)`` returns an AgeEstimate."""

    def __init__(self, source: str, local_files_only: bool = False) -> None:
        self.source = source
        location = source.split(":", 1)[1] if source.startswith("hub:") else source
        if not location:
            raise AgeModelUnavailableError("no age model configured")
        try:
            from transformers import AutoConfig, AutoFeatureExtractor

            config = AutoConfig.from_pretrained(location, local_files_only=local_files_only)
            self.extractor = AutoFeatureExtractor.from_pretrained(location, local_files_only=local_files_only)
            archs = list(getattr(config, "architectures", None) or [])
            if "AgeGenderModel" in archs:
                self.kind = "age_gender"
                self.model = _age_gender_model_class().from_pretrained(
                    location, local_files_only=local_files_only, use_safetensors=True)
            else:
                from transformers import AutoModelForAudioClassification

                self.kind = "classifier"
                self.model = AutoModelForAudioClassification.from_pretrained(
                    location, local_files_only=local_files_only, use_safetensors=True)
                labels = self.model.config.id2label
                self.levels = {int(i): age_level_from_label(str(name)) for i, name in labels.items()}
                if not any(self.levels.values()):
                    raise AgeModelUnavailableError(
                        f"age model {source!r} has no age labels (labels: {sorted(map(str, labels.values()))[:8]})")
        except AgeModelUnavailableError:
            raise
        except Exception as exc:  # offline hub, missing files, unsupported architecture
            raise AgeModelUnavailableError(f"age model {source!r} is unavailable ({type(exc).__name__}: {exc})") from None
        self.model.eval()

    def estimate(self, y16k: np.ndarray) -> AgeEstimate:
        import torch

        inputs = self.extractor(np.asarray(y16k, dtype=np.float32), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            if self.kind == "age_gender":
                _, age, _gender = self.model(inputs["input_values"])
                years = float(np.clip(age[0, 0].item(), 0.0, 1.0) * 100.0)
                return AgeEstimate(age_level_from_years(years), "model", round(years, 1), self.source)
            logits = self.model(**inputs).logits[0]
        probs = torch.softmax(logits, dim=-1).numpy()
        # Sum the probability of every label per age level, so "20s" + "30s" both vote Young Adult.
        votes: dict[str, float] = {}
        for i, p in enumerate(probs):
            level = self.levels.get(i)
            if level:
                votes[level] = votes.get(level, 0.0) + float(p)
        best = max(votes, key=votes.get)
        return AgeEstimate(best, "model", None, f"{self.source} p={votes[best]:.2f}")


@functools.lru_cache(maxsize=2)
def _cached_estimator(source: str) -> AgeEstimator | None:
    if not source:
        return None
    try:
        return AgeEstimator(source)
    except AgeModelUnavailableError as exc:
        log.warning("%s; age_level will be 'unknown'", exc)  # logged once per process, not per clip
        return None


def estimate_age(y16k: np.ndarray, source: str) -> AgeEstimate:
    estimator = _cached_estimator(source)
    if estimator is None:
        return AgeEstimate(UNKNOWN, "none", None, "no age model configured" if not source else f"{source} unavailable")
    return estimator.estimate(y16k)


def estimate_age_for_config(y16k: np.ndarray, cfg: Config) -> tuple[str, str]:
    """(age_level, age_source) for the annotate stage: ('unknown', 'none') without a usable model."""
    est = estimate_age(y16k, cfg.traits.age_model)
    return est.age_level, est.age_source


__all__ = [
    "AGE_LEVELS", "UNKNOWN", "AgeEstimate", "AgeEstimator", "AgeModelUnavailableError",
    "age_level_from_label", "age_level_from_years", "estimate_age", "estimate_age_for_config",
]
