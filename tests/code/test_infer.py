"""`emotionthinker infer`: a clip's annotation with the shipped reference calibration, the model's answer,
and a clear message when no model is registered."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from emotionthinker import config as config_module
from emotionthinker.evaluation.infer import (
    NoModelError, annotate_clip, default_model_source, format_inference, infer_clip,
    load_calibration,
)  # fmt: skip
from emotionthinker.prosody.levels import REFERENCE_CALIBRATION


@pytest.fixture
def clip(tmp_path):
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    f0 = 180 * 2 ** (np.linspace(0, 5, t.size) / 12)  # a 5-semitone rise
    y = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2)
    path = tmp_path / "rise.wav"
    sf.write(path, y.astype(np.float32), sr)
    return path


def test_the_reference_calibration_is_used_and_global(cfg):
    calib, path = load_calibration(cfg)
    assert path == REFERENCE_CALIBRATION  # no annotate run in this workspace
    assert calib.group_for("pitch", "infer", "female") == "global/female"
    assert calib.group_for("energy", "infer", "unknown") == "global"
    t = calib.groups["pitch"]["global/female"]
    assert t.low_below < t.high_above and t.n >= 50


def test_newest_annotate_calibration_wins(cfg, tmp_path):
    folder = cfg.data_dir / "annotated" / "x"
    folder.mkdir(parents=True)
    (folder / "annotated.calibration.json").write_text(REFERENCE_CALIBRATION.read_text())
    _, path = load_calibration(cfg)
    assert path == folder / "annotated.calibration.json"


def test_infer_clip_prints_annotation_and_answer(cfg, clip):
    from models.backbone import AudioLM

    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    inf = infer_clip(clip, cfg, "random:qwen2audio-tiny", use_asr=False, gender="female", lm=lm)
    ann = inf.annotation.record["annotations"]
    assert ann["gender"] == "Female" and ann["pitch_level"] in ("low", "normal", "high")
    assert inf.annotation.record["prosody"]["calibration"]["pitch"] == "global/female"
    assert inf.annotation.record["prosody"]["f0_median_hz"] == pytest.approx(180 * 2 ** (2.5 / 12), rel=0.08)
    text = format_inference(inf)
    for needle in ("clip: ", "speaker: gender Female (given)", "pitch ", "energy ", "speed ", "intonation ",
                   f"calibrated by {REFERENCE_CALIBRATION}):", "model: random:qwen2audio-tiny", "reasoning: ", "answer: "):  # fmt: skip
        assert needle in text, needle
    assert "age not determined" in text


def test_no_registered_model_is_a_clear_error(cfg, clip):
    with pytest.raises(NoModelError, match="emotionthinker-policy@champion.*--model"):
        default_model_source(cfg)
    from typer.testing import CliRunner

    from emotionthinker.cli import app

    cfg_file = cfg.workspace / "c.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"profile"})))
    res = CliRunner().invoke(app, ["infer", str(clip), "--no-asr", "-p", "test", "-c", str(cfg_file)])
    assert res.exit_code == 2 and "no model to run" in res.output


def test_annotate_clip_without_gender_model_says_so(cfg, clip):
    ann = annotate_clip(clip, cfg, use_asr=False)
    assert ann.record["annotations"]["gender"] == "unknown"
    # The whole hint, not cut at a character count: it used to end "... no such registered ".
    note = next(n for n in ann.notes if n.startswith("gender not determined"))
    assert "no gender model registered as registry:emotionthinker-gender@champion" in note
    assert note.endswith("train and register one with `emotionthinker train-gender`; or pass --gender")
    assert ann.record["prosody"]["calibration"]["pitch"] == "global"


def test_a_clip_named_relative_to_the_cwd_is_found_there(cfg, clip, tmp_path, monkeypatch):
    # Records resolve relative audio paths against the project root; a command-line clip must not.
    monkeypatch.chdir(clip.parent)
    assert not (config_module.PROJECT_ROOT / clip.name).exists()
    ann = annotate_clip(clip.name, cfg, use_asr=False)
    assert ann.record["audio_path"] == str(clip) and ann.record["prosody"]["duration_s"] > 0
