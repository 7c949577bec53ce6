"""SFT sample files and the collator: parsing errors, audio quarantine, labels only on the target."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sft_fixtures import shared_sft_dir

from emotionthinker.labels import SYSTEM_PROMPT
from models.backbone import IGNORE_INDEX, AudioLM
from models.sft import SftCollator, SftDataError, SftDataset, check_audio, read_samples, sample_file


@pytest.fixture(scope="module")
def cfg_module(tmp_path_factory):
    from emotionthinker.config import load_config

    return load_config("test", environ={}, overrides={"paths": {"workspace": str(tmp_path_factory.mktemp("ws"))}})


@pytest.fixture(scope="module")
def data_dir(cfg_module):
    return shared_sft_dir(cfg_module)


@pytest.fixture(scope="module")
def lm(cfg_module):
    return AudioLM.from_source("random:qwen2audio-tiny", cfg_module)


def test_sample_files_parse_with_absolute_audio_paths(data_dir):
    samples = read_samples(sample_file(data_dir, "stage1", "train"))
    assert {s.task for s in samples} == {"attribute", "asr", "cot"}
    assert all(s.audio.is_absolute() and s.audio.is_file() for s in samples)
    cot = next(s for s in samples if s.task == "cot")
    assert cot.system == SYSTEM_PROMPT and cot.prompt.startswith("<audio>")


def test_relative_audio_resolves_against_the_sample_file(tmp_path, data_dir):
    rec = json.loads(sample_file(data_dir, "stage2", "train").read_text().splitlines()[0])
    clip = tmp_path / "clips" / "a.wav"
    clip.parent.mkdir()
    shutil.copy(rec["audio"][0], clip)
    (tmp_path / "s.jsonl").write_text(json.dumps({**rec, "audio": ["clips/a.wav"]}) + "\n")
    assert read_samples(tmp_path / "s.jsonl")[0].audio == clip.resolve()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audio": ["a.wav", "b.wav"]}, "exactly one audio"),
        ({"target": "  "}, "empty or non-text target"),
        ({"prompt": None}, "empty or non-text prompt"),
        ({"task": None, "__drop__": "task"}, "missing field"),
    ],
)
def test_malformed_samples_raise_with_file_and_line(tmp_path, change, message):
    rec = {"id": "x", "task": "asr", "audio": ["a.wav"], "system": "", "prompt": "<audio>Transcribe.", "target": "hi"}
    rec.update({k: v for k, v in change.items() if k != "__drop__"})
    rec.pop(change.get("__drop__", "__none__"), None)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n" + json.dumps(rec) + "\n")
    with pytest.raises(SftDataError, match=rf"bad.jsonl:2: .*{message}"):
        read_samples(path)


def test_duplicate_ids_and_missing_files_raise(tmp_path):
    rec = {"id": "x", "task": "asr", "audio": ["a.wav"], "prompt": "<audio>Say.", "target": "hi"}
    (tmp_path / "dup.jsonl").write_text((json.dumps(rec) + "\n") * 2)
    with pytest.raises(SftDataError, match="duplicate sample id x"):
        read_samples(tmp_path / "dup.jsonl")
    with pytest.raises(SftDataError, match="not found"):
        read_samples(tmp_path / "none.jsonl")


def test_unusable_audio_is_quarantined_with_its_reason(tmp_path, data_dir, cfg_module):
    lines = sample_file(data_dir, "stage2", "train").read_text().splitlines()
    good, missing, empty = (json.loads(x) for x in lines[:3])
    (tmp_path / "empty.wav").write_bytes(b"")
    missing["audio"], empty["audio"] = [str(tmp_path / "gone.wav")], [str(tmp_path / "empty.wav")]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, missing, empty)))
    ok, quarantined = check_audio(read_samples(path), cfg_module)
    assert [s.id for s in ok] == [good["id"]]
    assert {q["id"]: q["reason"] for q in quarantined} == {missing["id"]: "unreadable_path", empty["id"]: "empty"}


def test_collator_labels_cover_exactly_the_target_and_end_of_turn(lm, data_dir, cfg_module):
    samples = read_samples(sample_file(data_dir, "stage1", "train"))
    picked = [next(s for s in samples if s.task == t) for t in ("cot", "attribute", "asr")]  # two system prompts
    items = [SftDataset(picked, cfg_module)[i] for i in range(3)]
    batch = SftCollator(lm)(items)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "input_features", "feature_attention_mask"}
    n, width = batch["input_ids"].shape
    assert n == 3 and batch["labels"].shape == (n, width) and batch["input_features"].shape[0] == 3
    end = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, sample in enumerate(picked):
        labels = batch["labels"][row]
        supervised = labels[labels != IGNORE_INDEX].tolist()
        assert supervised[-1] == end
        assert lm.tokenizer.decode(supervised[:-1]) == sample.target
        # Left padding: padding comes first, is masked out, and carries no label.
        mask = batch["attention_mask"][row]
        pads = int((mask == 0).sum())
        assert mask[pads:].all() and (labels[:pads] == IGNORE_INDEX).all()
        text = lm.tokenizer.decode(batch["input_ids"][row][pads:])
        assert (sample.system or "") in text and sample.prompt.replace("<audio>", "") in text


def test_collated_batch_trains_the_model(lm, data_dir, cfg_module):
    samples = read_samples(sample_file(data_dir, "stage2", "train"))[:2]
    batch = SftCollator(lm)([SftDataset(samples, cfg_module)[i] for i in range(2)])
    out = lm.model(**batch)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert lm.model.model.multi_modal_projector.linear.weight.grad.abs().sum() > 0
    lm.model.zero_grad()
