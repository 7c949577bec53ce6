"""Non-LLM baseline: a linear classifier on the frozen audio encoder's mean-pooled states.

It bounds what the encoder of the configured AudioLM carries about emotion, independent of the
language model: if the probe beats the audio LLM, the LLM is not using what its encoder hears.
Features: the encoder's last hidden states (Qwen2Audio: after its average pooling and layer norm;
Qwen2.5-Omni thinker: the audio tower's output tokens), averaged over the frames of the clip itself
(window padding excluded). Classifier: standardisation + L2 logistic regression (eval.probe_c) with
balanced class weights, since the score is UAR.

Protocol, chosen from the data:
    split        train on the `train` split of the training manifest (default: the evaluated
                 manifest), evaluate the benchmark's records; the two must not share a clip
    speaker_cv   when no disjoint training clip exists (e.g. RAVDESS evaluated zero-shot over the
                 whole corpus), leave-one-speaker-out over the evaluated records: each speaker's
                 clips are predicted by a probe trained on the other speakers
Predictions go into the same per-clip rows, metrics and MLflow run layout as an LLM evaluation
(model_kind "linear_probe"; no format rate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emotionthinker.audio import AudioError, load_audio
from emotionthinker.config import Config
from emotionthinker.errors import InputError

log = logging.getLogger(__name__)


class BaselineError(InputError):
    """The probe cannot be trained or evaluated (too few classes or speakers, overlapping data)."""


@torch.no_grad()
def encoder_features(lm, audios: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """[N, d] mean-pooled encoder states of each clip (float64)."""
    core = lm._core()
    tower = core.model.audio_tower
    out: list[np.ndarray] = []
    for start in range(0, len(audios), batch_size):
        chunk = [np.asarray(a, dtype=np.float32) for a in audios[start : start + batch_size]]
        feats = lm.feature_extractor(chunk, sampling_rate=lm.sampling_rate, padding="max_length", truncation=True,
                                     return_attention_mask=True, return_tensors="pt")  # fmt: skip
        x = feats["input_features"].to(lm.device, lm.model.dtype)
        mask = feats["attention_mask"].to(lm.device)
        _, out_len = tower._get_feat_extract_output_lengths(mask.sum(-1))
        if lm.family == "qwen2audio":
            from transformers.masking_utils import create_bidirectional_mask

            after_conv = (mask.sum(-1) - 1) // 2 + 1
            positions = (x.shape[-1] - 2) // 2 + 1
            valid = (torch.arange(positions, device=x.device)[None, :] < after_conv[:, None]).long()
            attn = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(len(chunk), positions, 1,
                                             dtype=lm.model.dtype, device=x.device), attention_mask=valid)  # fmt: skip
            hidden = tower(x, attention_mask=attn).last_hidden_state
            for i, n in enumerate(out_len.tolist()):
                out.append(hidden[i, : max(1, n)].float().mean(0).cpu().numpy())
        else:  # qwen2_5omni: the tower returns the clips' tokens concatenated
            hidden = core.model.get_audio_features(x, feature_attention_mask=mask).last_hidden_state
            for part in torch.split(hidden, out_len.tolist()):
                out.append(part.float().mean(0).cpu().numpy())
    return np.stack(out).astype(np.float64)


def _fit_predict(x_train: np.ndarray, y_train: Sequence[str], x_test: np.ndarray, c: float, seed: int) -> list[str]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(y_train)) < 2:
        raise BaselineError(f"the probe needs at least two classes in its training data, got {sorted(set(y_train))}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed))
    clf.fit(x_train, list(y_train))
    return [str(p) for p in clf.predict(x_test)]


def _load(records: Sequence[dict[str, Any]], cfg: Config) -> tuple[list[dict[str, Any]], list[np.ndarray], list[dict[str, Any]]]:
    from emotionthinker.evaluation.predict import _quarantine

    kept, audios, quarantined = [], [], []
    for rec in records:
        try:
            audios.append(load_audio(rec["audio_path"], cfg.audio))
            kept.append(rec)
        except AudioError as exc:
            quarantined.append(_quarantine(rec, exc))
    return kept, audios, quarantined


def probe_predictions(
    lm,
    train_records: Sequence[dict[str, Any]],
    eval_records: Sequence[dict[str, Any]],
    cfg: Config,
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(predicted labels, kept eval records, quarantined, info) under the protocol of the module docstring."""
    eval_kept, eval_audio, quarantined = _load(eval_records, cfg)
    eval_ids = {r["id"] for r in eval_kept}
    train = [r for r in train_records if r["id"] not in eval_ids]
    t0 = time.perf_counter()
    x_eval = encoder_features(lm, eval_audio, cfg.eval.batch_size)
    if train:
        train_kept, train_audio, _ = _load(train, cfg)
        x_train = encoder_features(lm, train_audio, cfg.eval.batch_size)
        pred = _fit_predict(x_train, [r["emotion"] for r in train_kept], x_eval, cfg.eval.probe_c, cfg.models.seed)
        info = {"mode": "split", "n_train": len(train_kept), "n_folds": 1}
    else:
        speakers = [r.get("speaker") or "?" for r in eval_kept]
        groups = sorted(set(speakers))
        if len(groups) < 2:
            raise BaselineError("no training clip outside the evaluated set and fewer than two speakers to cross-validate")
        y = [r["emotion"] for r in eval_kept]
        pred = [""] * len(eval_kept)
        for g in groups:
            test_idx = [i for i, s in enumerate(speakers) if s == g]
            train_idx = [i for i, s in enumerate(speakers) if s != g]
            fold = _fit_predict(x_eval[train_idx], [y[i] for i in train_idx], x_eval[test_idx], cfg.eval.probe_c, cfg.models.seed)
            for i, p in zip(test_idx, fold):
                pred[i] = p
        info = {"mode": "speaker_cv", "n_train": len(eval_kept), "n_folds": len(groups)}
    info |= {"feature_dim": int(x_eval.shape[1]), "features_and_fit_s": round(time.perf_counter() - t0, 2)}
    return pred, eval_kept, quarantined, info


def run_linear_probe(
    cfg: Config,
    encoder_source: str | None = None,
    manifest: str | None = None,
    benchmark: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    train_manifest: str | None = None,
    root: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate the probe, log one MLflow evaluation run, return its summary."""
    from emotionthinker.evaluation import report
    from emotionthinker.evaluation.data import eval_root
    from emotionthinker.evaluation.identity import ModelInfo
    from emotionthinker.evaluation.predict import PredictionResult, output_row
    from emotionthinker.records import iter_jsonl
    from models.backbone import AudioLM

    t0 = time.perf_counter()
    data = report.prepare_data(cfg, manifest, benchmark, split, limit, root)
    source = encoder_source or cfg.models.policy_source
    lm = AudioLM.from_source(source, cfg)
    lm.model.eval()
    train_path = train_manifest or str(data.manifest)
    train_records = [r for r in iter_jsonl(train_path) if r.get("split") == "train"]
    pred, kept, quarantined, info = probe_predictions(lm, train_records, data.records, cfg)
    rows = []
    for rec, label in zip(kept, pred):
        row = output_row(rec, "", 0)
        row |= {"output": label, "answer": label, "predicted": label, "predicted_strict": label, "answer_source": "probe",
                "format_ok": None, "correct": label == rec["emotion"]}  # fmt: skip
        rows.append(row)
    label = f"linear probe ({source})"
    model = ModelInfo(source=source, label=label, kind="linear_probe", model_name="linear-probe", identity=label)
    directory = eval_root(cfg) / "runs" / data.benchmark / "linear-probe"
    directory.mkdir(parents=True, exist_ok=True)
    result = PredictionResult(rows, quarantined, directory, len(rows), time.perf_counter() - t0, cfg.eval.batch_size, 0,
                              extra={"probe": info | {"train_manifest": train_path, "encoder": source, "c": cfg.eval.probe_c}})  # fmt: skip
    metrics, flat = report.score(result, data, cfg)
    out = report.log_run(cfg, model, data, result, metrics, flat, {})
    return {"run_id": out.run_id, "benchmark": data.benchmark, "metrics": out.metrics, "probe": info,
            "outputs": {k: str(v) for k, v in out.outputs.items()}, "n": len(rows)}  # fmt: skip
