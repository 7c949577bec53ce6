"""Steps of the sft flow that need no training: loading the sample files, data version, stage fingerprints."""

from __future__ import annotations

import json
import shutil

import pytest
from sft_fixtures import shared_sft_dir

from emotionthinker.validation import ValidationFailed
from models.sft import SftDataError
from models.sft_pipeline import load_sft_data, stage_fingerprint


@pytest.fixture
def data_dir(cfg, tmp_path):
    copy = tmp_path / "sft"
    shutil.copytree(shared_sft_dir(cfg), copy)
    return copy


def test_loads_every_stage_file_and_versions_the_data(cfg, data_dir):
    data = load_sft_data(cfg, data_dir)
    assert set(data.samples) == {"stage1.train", "stage1.validation", "stage2.train", "stage2.validation"}
    assert data.counts()["stage2.train"] == {"cot": len(data.samples["stage2.train"])}
    held_out = data.held_out()
    assert len({s.id for s in held_out}) == len(held_out)  # CoT samples of both validation files, once each
    assert set(data.data_version) == {"sft_files_sha1"}
    (data_dir.parent / "sft.dvc").write_text("outs:\n- md5: 0123abcd.dir\n  path: sft\n")
    assert load_sft_data(cfg, data_dir).data_version["sft_dvc_md5"] == "0123abcd.dir"


def test_missing_train_file_and_too_many_bad_clips_stop_the_flow(cfg, data_dir):
    cfg.sft.stages = ["stage2"]
    (data_dir / "stage1.train.jsonl").unlink()
    # Stage I not asked for: no stage-I train file needed; its validation file still serves the evaluation.
    assert set(load_sft_data(cfg, data_dir).samples) == {"stage1.validation", "stage2.train", "stage2.validation"}
    cfg.sft.stages = ["stage1", "stage2"]
    with pytest.raises(SftDataError, match="stage1 needs .*stage1.train.jsonl"):
        load_sft_data(cfg, data_dir)
    path = data_dir / "stage2.train.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows[: len(rows) // 2]:
        r["audio"] = [str(data_dir / "missing.wav")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.sft.stages = ["stage2"]
    with pytest.raises(ValidationFailed, match="unreadable_path"):
        load_sft_data(cfg, data_dir)
    cfg.validation.max_failure_rate = 0.6
    data = load_sft_data(cfg, data_dir)
    assert len(data.quarantined["stage2.train"]) == len(rows) // 2


def test_a_stage_fingerprint_follows_only_what_that_stage_trains(cfg, data_dir):
    data = load_sft_data(cfg, data_dir)
    fp1, fp2 = stage_fingerprint("stage1", "base", data, cfg), stage_fingerprint("stage2", "stage1:x", data, cfg)
    more = cfg.model_copy(deep=True)
    more.sft.num_processes = 2 * cfg.sft.num_processes  # a larger global batch trains both stages differently
    assert stage_fingerprint("stage1", "base", data, more) != fp1 and stage_fingerprint("stage2", "stage1:x", data, more) != fp2
    for field in ("stage2_learning_rate", "lora_r"):  # stage II settings, one at a time, each to a new value
        changed = cfg.model_copy(deep=True)
        setattr(changed.sft, field, getattr(cfg.sft, field) * 2)
        assert stage_fingerprint("stage1", "base", data, changed) == fp1, field
        assert stage_fingerprint("stage2", "stage1:x", data, changed) != fp2, field
    cfg.sft.stage2_learning_rate, cfg.sft.lora_r = 2 * cfg.sft.stage2_learning_rate, 2 * cfg.sft.lora_r
    cfg.sft.eval_max_samples, cfg.sft.save_steps = 3, 7  # evaluation and bookkeeping
    assert stage_fingerprint("stage1", "base", data, cfg) == fp1
    assert stage_fingerprint("stage2", "stage1:x", data, cfg) != fp2
    cfg.sft.stage1_learning_rate = 1e-3
    assert stage_fingerprint("stage1", "base", data, cfg) != fp1
    assert stage_fingerprint("stage1", "other-base", data, cfg) != stage_fingerprint("stage1", "base", data, cfg)
    before = stage_fingerprint("stage2", "stage1:x", data, cfg)
    (data_dir / "stage2.train.jsonl").write_text((data_dir / "stage2.train.jsonl").read_text().splitlines()[0] + "\n")
    assert stage_fingerprint("stage2", "stage1:x", load_sft_data(cfg, data_dir), cfg) != before  # other data
