"""AudioLM on the `test` profile's random tiny models of both families (no downloads, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emotionthinker.config import load_config
from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from models.backbone import IGNORE_INDEX, AudioLM, AudioLMError, pad_completions
from models.sources import SourceError

FAMILIES = {"random:qwen2audio-tiny": "qwen2audio", "random:qwen2.5omni-tiny": "qwen2_5omni"}
SR = 16000


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    return load_config("test", environ={}, overrides={"paths": {"workspace": str(root), "cache": str(root / "cache")}})


@pytest.fixture(scope="module", params=list(FAMILIES))
def lm(request, cfg):
    return AudioLM.from_source(request.param, cfg)


def clips(*seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Noise-modulated tones: different lengths so padding and per-clip token counts are exercised."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * SR)) / SR
        out.append((0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return out


def n_audio_tokens(seconds: float, window_s: int) -> int:
    frames = min(int(seconds * 100), window_s * 100)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def test_builds_the_named_family(lm, cfg):
    assert lm.family == FAMILIES[lm.source]
    assert lm.window_s == cfg.models.audio_window_s
    assert 10_000 < lm.num_parameters() < 1_000_000
    assert not lm.model.training


def test_chat_inputs_hold_prompts_and_one_audio_token_per_frame(lm):
    audios = clips(1.0, 2.5, 9.0)  # the last one is longer than the 4 s window and gets cut
    inputs = lm.build_chat_inputs(audios)
    ids = inputs["input_ids"]
    assert ids.shape[0] == 3 and inputs["attention_mask"].shape == ids.shape
    assert inputs["input_features"].shape == (3, 80, lm.window_s * 100)
    counts = (ids == lm.audio_token_id).sum(-1).tolist()
    assert counts == [n_audio_tokens(s, lm.window_s) for s in (1.0, 2.5, 9.0)]
    # Left padding: every prompt ends at the last column with the assistant header.
    assert inputs["attention_mask"][:, -1].all() and not inputs["attention_mask"][0, 0]
    text = lm.tokenizer.decode(ids[1][inputs["attention_mask"][1].bool()])
    assert SYSTEM_PROMPT in text
    assert USER_PROMPT.replace("<audio>", "") in text
    assert "<audio>" not in text and text.endswith("<|im_start|>assistant\n")
    assert text.index("<|audio_bos|>") < text.index("What is the emotion")


def test_prompt_marker_places_the_clip(lm):
    inputs = lm.build_chat_inputs(clips(1.0), ["Listen: <audio> What is the pitch level?"], system=None)
    text = lm.tokenizer.decode(inputs["input_ids"][0])
    assert "<|im_start|>system" not in text
    assert text.index("Listen: ") < text.index("<|audio_bos|>") < text.index(" What is the pitch level?")


def test_qwen2audio_inputs_equal_the_transformers_processor(cfg):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    audios, prompts = clips(1.2, 3.3), ["<audio>hello", "<audio>how fast is this?"]
    ours = lm.build_chat_inputs(audios, prompts, system="sys")
    texts = [lm._render(p, "sys") for p in prompts]
    ref = lm.processor(text=texts, audio=audios, sampling_rate=SR, return_tensors="pt", padding=True)
    for key in ("input_ids", "attention_mask", "input_features", "feature_attention_mask"):
        assert torch.equal(ours[key], ref[key].to(ours[key].dtype)), key


def test_supervised_inputs_label_only_the_answer(lm):
    answers = ["<think>steady voice</think><answer>neutral</answer>", "<answer>sad</answer>"]
    batch = lm.build_chat_inputs(clips(1.0, 2.0), completions=answers)
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape
    for row, answer in enumerate(answers):
        kept = labels[row][labels[row] != IGNORE_INDEX]
        assert lm.tokenizer.decode(kept) == answer + "<|im_end|>"
    with torch.no_grad():
        loss = lm.model(**{k: v for k, v in batch.items() if k != "completion_mask"}).loss
    assert torch.isfinite(loss)


def test_generate_three_tokens_grouped_by_prompt(lm):
    torch.manual_seed(0)
    out = lm.generate(clips(1.0, 2.0), max_new_tokens=3, do_sample=True, temperature=1.0, num_return_sequences=2)
    assert out.num_return_sequences == 2 and len(out.texts) == len(out.completion_ids) == 4
    assert all(1 <= len(ids) <= 3 for ids in out.completion_ids)
    greedy = [lm.generate(clips(1.0, 2.0), max_new_tokens=3).completion_ids for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_completion_logprobs_match_generation_scores(lm):
    """Log-probs of generated tokens must equal what generate() sampled from (same positions, same audio)."""
    out = lm.generate(clips(1.0, 3.0), max_new_tokens=3)
    inputs = {k: v for k, v in out.inputs.items()}
    with torch.no_grad():
        ref = lm.model.generate(**inputs, max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(ref.scores, dim=1).log_softmax(-1)
    lp = lm.completion_logprobs(out.inputs, out.completion_ids)
    assert lp.logprobs.shape == lp.mask.shape == (2, max(len(c) for c in out.completion_ids))
    for row, ids in enumerate(out.completion_ids):
        expected = scores[row, torch.arange(len(ids)), torch.tensor(ids)]
        assert torch.allclose(lp.logprobs[row, : len(ids)], expected, atol=1e-5)
        assert lp.mask[row].sum() == len(ids)


def test_completion_logprobs_at_temperature_match_sampling_scores(lm):
    inputs = lm.build_chat_inputs(clips(1.0, 3.0))
    torch.manual_seed(1)
    with torch.no_grad():
        ref = lm.model.generate(
            **inputs, max_new_tokens=4, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
            num_return_sequences=2, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    sampled = [lm._strip(row) for row in ref.sequences[:, inputs["input_ids"].shape[1] :].tolist()]
    scores = torch.stack(ref.scores, dim=1).log_softmax(-1)  # scores after the temperature warper
    lp = lm.completion_logprobs(inputs, sampled, temperature=0.7)
    plain = lm.completion_logprobs(inputs, sampled)
    for row, ids in enumerate(sampled):
        expected = scores[row, torch.arange(len(ids)), torch.tensor(ids)]
        assert torch.allclose(lp.logprobs[row, : len(ids)], expected, atol=1e-5)
    assert not torch.allclose(lp.logprobs, plain.logprobs)


def test_completion_logprobs_grouping_padding_and_gradient(lm):
    inputs = lm.build_chat_inputs(clips(1.0, 2.0))
    completions = ["<answer>sad</answer>", "ok", "<answer>sad</answer>", "<answer>happy</answer>"]  # k = 2 per prompt
    lp = lm.completion_logprobs(inputs, completions)
    lengths = [len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
    assert lp.mask.sum(-1).tolist() == lengths
    assert (lp.logprobs[~lp.mask] == 0).all() and (lp.logprobs[lp.mask] < 0).all()
    # A completion scores the same alone as in a padded, grouped batch.
    alone = lm.completion_logprobs({k: v[:1] for k, v in inputs.items()}, ["ok"])
    assert torch.allclose(alone.logprobs[0, : lengths[1]], lp.logprobs[1, : lengths[1]], atol=1e-5)
    # Differentiable: training uses these log-probs directly.
    lp.sum().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lm.model.parameters())
    lm.model.zero_grad(set_to_none=True)


def test_save_load_round_trip_is_exact(lm, tmp_path):
    folder = lm.save(tmp_path / "saved")
    assert any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin"))
    assert json.loads((folder / "audiolm.json").read_text())["family"] == lm.family
    again = AudioLM.from_source(str(folder), load_config("test", environ={}))
    assert again.family == lm.family and again.window_s == lm.window_s
    ref, got = lm.model.state_dict(), again.model.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    inputs = lm.build_chat_inputs(clips(1.5))
    assert torch.equal(inputs["input_ids"], again.build_chat_inputs(clips(1.5))["input_ids"])
    assert torch.equal(
        lm.completion_logprobs(inputs, ["<answer>fear</answer>"]).logprobs.detach(),
        again.completion_logprobs(inputs, ["<answer>fear</answer>"]).logprobs.detach(),
    )


def test_freeze_audio_encoder(cfg):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    lm.freeze_audio_encoder()
    tower = lm.model.model.audio_tower
    assert not any(p.requires_grad for p in tower.parameters())
    assert all(p.requires_grad for p in lm.model.lm_head.parameters())


@pytest.mark.parametrize(
    "audios, prompts, match",
    [
        ([np.zeros((2, SR), np.float32)], None, "1-D mono"),
        ([np.array([], np.float32)], None, "empty"),
        ([np.full(SR, np.nan, np.float32)], None, "NaN"),
        ([], None, "no audio"),
        ([np.ones(SR, np.float32)] * 2, ["<audio>a"], "2 audios"),
        ([np.ones(SR, np.float32)], ["<audio><audio>two clips?"], "one clip per prompt"),
    ],
)
def test_bad_inputs_raise_clear_errors(cfg, audios, prompts, match):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    with pytest.raises(AudioLMError, match=match):
        lm.build_chat_inputs(audios, prompts)


def test_completion_count_must_match_prompts(cfg):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    inputs = lm.build_chat_inputs(clips(1.0, 1.0))
    with pytest.raises(AudioLMError, match="multiple"):
        lm.completion_logprobs(inputs, ["a", "b", "c"])
    with pytest.raises(AudioLMError, match="completions for"):
        lm.build_chat_inputs(clips(1.0, 1.0), completions=["a"])


@pytest.mark.parametrize("source", ["registry:emotionthinker-base@champion", "packaged:whisper-tiny.en"])
def test_sources_that_are_not_audio_llms_here_raise(cfg, source):
    with pytest.raises(SourceError):
        AudioLM.from_source(source, cfg)


def test_a_folder_without_manifest_or_model_is_rejected(cfg, tmp_path):
    with pytest.raises((AudioLMError, OSError, ValueError)):
        AudioLM.from_source(str(tmp_path), cfg)


def test_pad_completions_right_pads_k_per_prompt_and_refuses_a_count_that_is_not_a_multiple():
    ids, mask, k = pad_completions([[5, 6, 7], [8], [], [9, 9]], n_prompts=2, pad_id=0)
    assert k == 2 and ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0], [9, 9, 0]]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3, [True, True, False]]
    assert pad_completions([[], []], 1, 0)[0].shape == (2, 1)  # at least one column: the first token is still scored
    for bad in ([], [[1], [2], [3]]):
        with pytest.raises(AudioLMError, match="positive multiple"):
            pad_completions(bad, 2, 0)
