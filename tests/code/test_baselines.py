"""Baselines through the same evaluation path: random tiny models of the paper's baseline classes
(Qwen2.5-Omni thinker, Qwen2-Audio) evaluated by source, the transformers-folder path that hub ids
(released EmotionThinker, Qwen2.5-Omni-7B, Qwen2-Audio-7B-Instruct) take, and the linear probe on the
frozen encoder. The clips are synthetic tones: the models are random, only the path is under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotionthinker.evaluation.identity import describe_model

pytestmark = pytest.mark.usefixtures("prefect_harness")
LABELS = ("angry", "sad", "happy")


@pytest.fixture
def tone_manifest(tmp_path: Path) -> Path:
    """Eight 1.2 s clips (two speakers, three labels; 'test' split for speaker s2)."""
    rows = []
    sr = 16000
    t = np.arange(int(1.2 * sr)) / sr
    for i in range(8):
        label = LABELS[i % 3]
        f0 = {"angry": 260.0, "sad": 140.0, "happy": 200.0}[label] * (1.1 if i >= 4 else 1.0)
        y = 0.3 * np.sin(2 * np.pi * f0 * t) * np.hanning(t.size)
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, y.astype(np.float32), sr)
        rows.append({"id": f"tone-{i}", "audio_path": str(path), "corpus": "tones", "split": "test" if i >= 4 else "train",
                     "speaker": "s2" if i >= 4 else "s1", "gender": "male", "emotion": label, "source_label": label,
                     "duration_s": 1.2})  # fmt: skip
    out = tmp_path / "tones.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.mark.parametrize("source", ["random:qwen2.5omni-tiny", "random:qwen2audio-tiny"])
def test_baseline_classes_evaluate_through_the_flow(source, cfg, config_file, tone_manifest):
    from mlflow import MlflowClient

    from emotionthinker.evaluation.metrics import metrics_from_rows
    from emotionthinker.evaluation.predict import read_outputs_table
    from flows.evaluate import evaluate_flow

    out = evaluate_flow(model_source=source, manifest=str(tone_manifest), profile="test", config_file=config_file(),
                        judges=[], split="all")  # fmt: skip
    assert out["n"] == 8 and out["model"]["variant"] == "backbone" and out["model"]["kind"] == "random"
    rows = read_outputs_table(out["outputs"]["jsonl"])
    assert metrics_from_rows(rows).uar == pytest.approx(out["metrics"]["uar"])
    assert all(0 < r["n_tokens"] <= cfg.models.max_new_tokens for r in rows)
    tags = MlflowClient(cfg.tracking_uri).get_run(out["run_id"]).data.tags
    assert tags["model_source"] == source and tags["model_kind"] == "random" and "model_version" not in tags


def test_transformers_folder_takes_the_hub_code_path(cfg, config_file, tone_manifest, tmp_path):
    """A `save_pretrained` folder (no audiolm.json) loads like a hub checkpoint: AutoConfig -> family class."""
    from flows.evaluate import evaluate_flow
    from models.backbone import AudioLM

    lm = AudioLM.from_source("random:qwen2.5omni-tiny", cfg)
    folder = tmp_path / "omni-hf"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    lm.feature_extractor.save_pretrained(folder)
    assert not (folder / "audiolm.json").exists()
    out = evaluate_flow(model_source=str(folder), manifest=str(tone_manifest), profile="test", config_file=config_file(),
                        judges=[], variant="backbone")  # fmt: skip
    assert out["n"] == 8 and out["model"]["kind"] == "path" and out["model"]["identity"].startswith(str(folder))
    hub = describe_model("hub:Qwen/Qwen2.5-Omni-7B", cfg)  # naming only: loading needs the hub
    assert (hub.label, hub.variant, hub.kind) == ("hub:Qwen/Qwen2.5-Omni-7B", "backbone", "hub")


@pytest.mark.parametrize("source", ["random:qwen2audio-tiny", "random:qwen2.5omni-tiny"])
def test_linear_probe_split_and_speaker_cv(source, cfg, config_file, tone_manifest):
    from mlflow import MlflowClient

    from emotionthinker.evaluation.baselines import encoder_features, run_linear_probe
    from emotionthinker.evaluation.metrics import metrics_from_rows
    from emotionthinker.evaluation.predict import read_outputs_table
    from emotionthinker.records import read_jsonl
    from models.backbone import AudioLM

    config_file()  # the test's MLflow store
    split = run_linear_probe(cfg, source, str(tone_manifest), split="test")
    assert split["probe"]["mode"] == "split" and split["probe"]["n_train"] == 4 and split["n"] == 4
    cv = run_linear_probe(cfg, source, str(tone_manifest), split="all")  # evaluated clips include every train clip
    assert cv["probe"] == cv["probe"] | {"mode": "speaker_cv", "n_folds": 2} and cv["n"] == 8
    rows = read_outputs_table(cv["outputs"]["jsonl"])
    assert metrics_from_rows(rows).uar == pytest.approx(cv["metrics"]["uar"]) and "format_rate" not in cv["metrics"]
    tags = MlflowClient(cfg.tracking_uri).get_run(cv["run_id"]).data.tags
    assert tags["model_kind"] == "linear_probe" and tags["model_label"] == f"linear probe ({source})"

    # Features are per clip: the same clip alone or in a batch with a longer one gives the same vector.
    lm = AudioLM.from_source(source, cfg)
    from emotionthinker.audio import load_audio

    audios = [load_audio(r["audio_path"], cfg.audio) for r in read_jsonl(tone_manifest)[:2]]
    short = audios[0][:8000]
    together = encoder_features(lm, [short, audios[1]])
    alone = encoder_features(lm, [short])
    assert together.shape == (2, lm.model.config.audio_config.d_model if lm.family == "qwen2audio" else together.shape[1])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-4, atol=1e-5)


def test_reward_model_judge_counts_unparseable_answers(cfg, tone_manifest):
    """The rm judge through models/reward_model.py: a random model never answers JSON, so every clip is a
    counted failure (no crash, no invented score)."""
    from emotionthinker.evaluation.judges import rm_judge
    from emotionthinker.records import read_jsonl
    from models.backbone import AudioLM

    recs = read_jsonl(tone_manifest)[:3]
    rows = [{"id": r["id"], "audio_path": r["audio_path"], "output": "<think>High and fast.</think><answer>angry</answer>"}
            for r in recs]  # fmt: skip
    res = rm_judge(rows, cfg, lm=AudioLM.from_source("random:qwen2audio-tiny", cfg))
    assert res.name == "rm" and res.scores == [None, None, None] and res.failures == {"unparseable": 3}
    assert all(isinstance(d["raw"], str) for d in res.details)
