"""What each SFT stage trains: stage I (encoder per config, adapter, LM) and stage II (LoRA on the LM only, merged)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotionthinker.config import load_config
from models.backbone import AudioLM
from models.lora import LoraError, apply_lora, language_model_targets, merge_adapter_dir, merge_lora
from models.sft import set_stage1_trainable

FAMILIES = ("random:qwen2audio-tiny", "random:qwen2.5omni-tiny")
ADAPTER = {"random:qwen2audio-tiny": "model.multi_modal_projector.", "random:qwen2.5omni-tiny": "model.audio_tower.proj."}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config("test", environ={}, overrides={"paths": {"workspace": str(tmp_path_factory.mktemp("ws"))}})


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("source", FAMILIES)
@pytest.mark.parametrize("layers", [-1, 0, 1])
def test_stage1_trains_adapter_and_lm_and_the_configured_encoder_layers(cfg, source, layers):
    lm = AudioLM.from_source(source, cfg)
    model = lm.model
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    counts = set_stage1_trainable(model, layers)
    names = trainable(model)
    assert any(n.startswith(ADAPTER[source]) for n in names)
    lm_params = {n for n, _ in model.named_parameters() if n.startswith(("model.language_model.", "lm_head."))}
    assert lm_params <= names
    assert not any(n.startswith("model.visual.") for n in names)
    assert not names & fixed  # parameters the model keeps fixed stay fixed
    encoder = {n for n in names if n.startswith("model.audio_tower.") and not n.startswith(ADAPTER[source])}
    n_layers = len(model.model.audio_tower.layers)
    trained_layers = {int(n.split(".")[3]) for n in encoder if n.startswith("model.audio_tower.layers.")}
    if layers == 0:
        assert encoder == set() and counts["encoder_trainable_parameters"] == 0
    elif layers == 1:
        assert trained_layers == {n_layers - 1}
        assert not any(n.startswith("model.audio_tower.conv") for n in encoder)
    else:
        assert trained_layers == set(range(n_layers)) and any(n.startswith("model.audio_tower.conv1") for n in encoder)
    assert counts["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("source", FAMILIES)
def test_lora_wraps_only_language_model_layers(cfg, source):
    lm = AudioLM.from_source(source, cfg)
    targets = language_model_targets(lm.model, ["q_proj", "v_proj"])
    assert targets and all(t.startswith("model.language_model.") for t in targets)
    counts = apply_lora(lm, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    lora = {n for n, _ in lm.model.named_parameters() if "lora_" in n}
    assert lora and all(".language_model." in n for n in lora)  # the encoder's q_proj/v_proj get none
    assert trainable(lm.model) == lora
    assert counts["lora_layers"] == len(targets) and counts["trainable_parameters"] < counts["parameters"] / 5
    with pytest.raises(LoraError, match="already"):
        apply_lora(lm, r=4, alpha=8, dropout=0.0, target_modules=["q_proj"])


def test_unknown_lora_target_is_an_error(cfg):
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    with pytest.raises(LoraError, match="not_a_layer"):
        language_model_targets(lm.model, ["q_proj", "not_a_layer"])


def _logits(lm, clip):
    inputs = lm.build_chat_inputs([clip], completions=["<think>x</think><answer>sad</answer>"])
    inputs.pop("labels"), inputs.pop("completion_mask")
    with torch.no_grad():
        return lm.model(**inputs).logits


def test_merged_lora_model_equals_the_adapted_model_in_memory_and_from_a_saved_adapter(cfg, tmp_path):
    clip = (0.2 * np.sin(np.linspace(0, 600, 16000))).astype(np.float32)
    lm = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    base_logits = _logits(lm, clip)
    apply_lora(lm, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    torch.manual_seed(1)
    for name, p in lm.model.named_parameters():
        if "lora_B" in name:  # B starts at zero (adapter = identity); make it do something
            p.data.normal_(0, 0.5)
    lm.model.eval()
    adapted = _logits(lm, clip)
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    lm.model.save_pretrained(tmp_path / "adapter")
    merge_lora(lm)
    assert not hasattr(lm.model, "peft_config") and not any("lora_" in n for n, _ in lm.model.named_parameters())
    torch.testing.assert_close(_logits(lm, clip), adapted, atol=1e-5, rtol=1e-4)
    fresh = AudioLM.from_source("random:qwen2audio-tiny", cfg)
    merge_adapter_dir(fresh, tmp_path / "adapter")
    torch.testing.assert_close(_logits(fresh, clip), adapted, atol=1e-5, rtol=1e-4)
    with pytest.raises(LoraError, match="no LoRA"):
        merge_lora(fresh)
