"""DeepSpeed ZeRO configs: every "auto" resolved from the TrainingArguments values, the way the Trainer checks them."""

from __future__ import annotations

import json

import pytest

from emotionthinker.config import load_config
from models.deepspeed_configs import (
    MODEL_DEPENDENT, DeepSpeedConfigError, deepspeed_config_path, load_deepspeed_template, resolve_deepspeed_config, zero_stage,
)  # fmt: skip
from models.sft import training_kwargs


@pytest.fixture
def kwargs(tmp_path):
    cfg = load_config("paper", environ={}, overrides={"paths": {"workspace": str(tmp_path)}})
    return training_kwargs("stage1", cfg, tmp_path)


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


@pytest.mark.parametrize(("name", "stage"), [("zero2", 2), ("zero3", 3)])
def test_packaged_configs_resolve_completely(kwargs, name, stage):
    template = load_deepspeed_template(name)
    assert zero_stage(template) == stage
    assert any(v == "auto" for _, v in leaves(template))
    ds = resolve_deepspeed_config(name, kwargs, world_size=8, hidden_size=3584, on_cpu=False)
    assert not [k for k, v in leaves(ds) if v == "auto"]
    micro, accumulation = kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"]
    assert ds["train_micro_batch_size_per_gpu"] == micro and ds["gradient_accumulation_steps"] == accumulation
    assert ds["train_batch_size"] == 8 * micro * accumulation
    assert ds["optimizer"]["params"]["lr"] == kwargs["learning_rate"] == 1e-5  # the paper's stage-I lr
    assert ds["optimizer"]["params"]["betas"] == [kwargs["adam_beta1"], kwargs["adam_beta2"]]
    assert ds["zero_optimization"]["reduce_bucket_size"] == 3584 * 3584
    assert "torch_adam" not in ds["optimizer"]["params"]  # GPU: DeepSpeed's fused AdamW
    assert load_deepspeed_template(name) == template  # the template itself is untouched
    if stage == 3:
        assert ds["zero_optimization"]["stage3_param_persistence_threshold"] == 35840
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_cpu_uses_torch_adam(kwargs):
    # (That transformers' Trainer accepts the resolved config unchanged is shown by the DeepSpeed run
    # in tests/integration/test_deepspeed_zero.py: it raises on any mismatch.)
    ds = resolve_deepspeed_config("zero3", {**kwargs, "bf16": False}, world_size=1, hidden_size=None, on_cpu=True)
    assert ds["optimizer"]["params"]["torch_adam"] is True
    # Without the hidden size (ZeRO-3 loads the model after the arguments) only the model-dependent keys stay auto.
    assert sorted(k for k, v in leaves(ds) if v == "auto") == sorted(MODEL_DEPENDENT)
    assert ds["bf16"]["enabled"] is False and ds["train_batch_size"] == kwargs["per_device_train_batch_size"] * kwargs[
        "gradient_accumulation_steps"]


def test_a_user_config_path_and_errors(tmp_path, kwargs):
    custom = tmp_path / "my.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    assert resolve_deepspeed_config(custom, kwargs, world_size=1, hidden_size=8, on_cpu=True)["train_micro_batch_size_per_gpu"] == 4
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"zero_optimization": {"stage": 2, "mystery": "auto"}}))
    with pytest.raises(DeepSpeedConfigError, match="zero_optimization.mystery"):
        resolve_deepspeed_config(unknown, kwargs, world_size=1, hidden_size=None, on_cpu=True)
    with pytest.raises(DeepSpeedConfigError, match="no such file"):
        deepspeed_config_path("zero9")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeepSpeedConfigError, match="not valid JSON"):
        load_deepspeed_template(tmp_path / "bad.json")
