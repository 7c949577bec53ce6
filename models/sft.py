"""Prosody-centric SFT of an AudioLM (DESIGN.md stage 5) with transformers' Trainer.

Stage I  trains the adapter, the language model and the top `sft.stage1_encoder_layers` of the audio
         encoder on the prosody corpus (stage1.*.jsonl);
Stage II trains LoRA adapters on the language model on cold-start CoT (stage2.*.jsonl); they are merged
         into the weights before the model is saved.

TRL's SFTTrainer is not used: it tokenises text (and images) itself and has no audio inputs. The
collator here builds AudioLM chat inputs, with labels only on the target (assistant) tokens.

One training function (`train_stage`) serves every profile: plain CPU, DeepSpeed ZeRO-2/3 on CPU, and
multi-GPU DeepSpeed (paper). `run_stage` runs it in this process, or, when DeepSpeed or several
processes are configured, under torchrun (`python -m models.sft`), because DeepSpeed needs a
distributed launcher and must not initialise inside a flow's worker thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from emotionthinker.audio import AudioError, load_audio, probe
from emotionthinker.config import Config
from emotionthinker.errors import InputError
from emotionthinker.stored_paths import stored_path_from_file
from models.assemble import write_manifest
from models.backbone import IGNORE_INDEX, AudioLM
from models.checkpoints import (
    ensure_room_for_checkpoint, finished_stage, is_rank_zero, last_checkpoint, prune_checkpoints, read_done,
    stage_lock, write_done,
)  # fmt: skip
from models.lora import apply_lora, merge_adapter_dir, numel, trainable_counts

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")
SPLITS = ("train", "validation")
REQUIRED_FIELDS = ("id", "task", "audio", "prompt", "target")
DEEPSPEED_FILE = "deepspeed_config.json"
TRAIN_SAMPLES_FILE = "train_samples.jsonl"
CONFIG_FILE = "launch_config.json"  # the resolved Config a torchrun rank loads
LAUNCH_LOG = "launch.log"


class SftDataError(InputError):
    """An SFT sample file or sample is malformed (missing field, several clips, empty target, ...)."""


class SftTrainingError(RuntimeError):
    """A training stage failed (e.g. the torchrun launch exited non-zero)."""


# -- samples --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SftSample:
    """One supervised example: a clip, the chat prompt (with `<audio>`), and the assistant target."""

    id: str
    task: str
    audio: Path
    prompt: str
    target: str
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: dict[str, Any], base_dir: Path) -> "SftSample":
        if not isinstance(rec, dict):
            raise SftDataError(f"sample is not a JSON object: {str(rec)[:80]}")
        missing = [k for k in REQUIRED_FIELDS if k not in rec]
        if missing:
            raise SftDataError(f"sample {rec.get('id', '?')}: missing field(s) {missing}")
        audio = rec["audio"]
        if isinstance(audio, str):
            audio = [audio]
        if not isinstance(audio, list) or len(audio) != 1 or not isinstance(audio[0], str):
            raise SftDataError(f"sample {rec['id']}: expected exactly one audio path, got {audio!r}")
        for name in ("prompt", "target"):
            if not isinstance(rec[name], str) or not rec[name].strip():
                raise SftDataError(f"sample {rec['id']}: empty or non-text {name}")
        return cls(
            id=str(rec["id"]),
            task=str(rec["task"]),
            audio=Path(stored_path_from_file(audio[0], base_dir)),
            prompt=rec["prompt"],
            target=rec["target"],
            system=rec.get("system") or None,  # "" or null: no system turn
            meta=dict(rec.get("meta") or {}),
        )

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "audio": [str(self.audio)], "system": self.system,
                "prompt": self.prompt, "target": self.target, "meta": self.meta}  # fmt: skip


def sample_file(data_dir: Path, stage: str, split: str) -> Path:
    return Path(data_dir) / f"{stage}.{split}.jsonl"


def read_samples(path: str | Path) -> list[SftSample]:
    """Parse a sample file; a malformed line raises SftDataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise SftDataError(f"SFT sample file not found: {path}")
    out, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = SftSample.from_record(json.loads(line), path.parent)
            except json.JSONDecodeError as exc:
                raise SftDataError(f"{path}:{n}: not JSON ({exc})") from None
            except SftDataError as exc:
                raise SftDataError(f"{path}:{n}: {exc}") from None
            if sample.id in seen:
                raise SftDataError(f"{path}:{n}: duplicate sample id {sample.id}")
            seen.add(sample.id)
            out.append(sample)
    return out


def write_samples(path: Path, samples: Sequence[SftSample]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_record(), ensure_ascii=False, sort_keys=True) + "\n")
    return path


def check_audio(samples: Sequence[SftSample], cfg: Config) -> tuple[list[SftSample], list[dict[str, Any]]]:
    """(usable samples, quarantined [{id, audio, reason, detail}]): a header probe per distinct clip."""
    verdict: dict[Path, AudioError | None] = {}
    ok, quarantined = [], []
    for s in samples:
        if s.audio not in verdict:
            try:
                probe(s.audio, cfg.audio)
                verdict[s.audio] = None
            except AudioError as exc:
                verdict[s.audio] = exc
        err = verdict[s.audio]
        if err is None:
            ok.append(s)
        else:
            quarantined.append({"id": s.id, "audio": str(s.audio), "reason": err.reason, "detail": str(err)})
    return ok, quarantined


def quarantine_reasons(quarantined: Sequence[dict[str, Any]]) -> Counter:
    return Counter(q["reason"] for q in quarantined)


# -- dataset and collator ---------------------------------------------------------------------------
class SftDataset(torch.utils.data.Dataset):
    """Samples with their audio decoded on access (a corpus can be larger than memory)."""

    def __init__(self, samples: Sequence[SftSample], cfg: Config):
        if not samples:
            raise SftDataError("no training samples")
        self.samples = list(samples)
        self.audio_cfg = cfg.audio

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        try:
            audio = load_audio(s.audio, self.audio_cfg)
        except AudioError as exc:
            raise SftDataError(f"sample {s.id}: {exc}") from exc
        return {"id": s.id, "audio": audio, "prompt": s.prompt, "system": s.system, "target": s.target}


class SftCollator:
    """Batch of samples -> AudioLM inputs with labels on the target tokens only.

    Each sample is tokenised on its own (samples carry different system prompts), then the batch is
    left-padded as a whole; padding gets attention 0 and label IGNORE_INDEX, so it neither attends
    nor counts in the loss, and rotary positions are relative, so the left offset changes nothing.
    """

    def __init__(self, lm: AudioLM):
        self.lm = lm

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        parts = [
            self.lm.build_chat_inputs([it["audio"]], [it["prompt"]], [it["target"]], system=it["system"]) for it in items
        ]
        width = max(p["input_ids"].shape[1] for p in parts)
        pad_id = self.lm.tokenizer.pad_token_id

        def left_pad(name: str, value: int) -> torch.Tensor:
            rows = []
            for p in parts:
                t = p[name][0]
                rows.append(torch.cat([torch.full((width - t.shape[0],), value, dtype=t.dtype), t]))
            return torch.stack(rows)

        return {
            "input_ids": left_pad("input_ids", pad_id),
            "attention_mask": left_pad("attention_mask", 0),
            "labels": left_pad("labels", IGNORE_INDEX),
            "input_features": torch.cat([p["input_features"] for p in parts]),
            "feature_attention_mask": torch.cat([p["feature_attention_mask"] for p in parts]),
        }


# -- what trains ----------------------------------------------------------------------------------
LM_PREFIXES = ("model.language_model.", "lm_head.")
ADAPTER_PREFIXES = ("model.multi_modal_projector.", "model.audio_tower.proj.")  # qwen2audio, qwen2.5-omni
ENCODER_PREFIX = "model.audio_tower."
ENCODER_TOP_NORMS = ("model.audio_tower.layer_norm.", "model.audio_tower.ln_post.")  # output norm of the encoder


def set_stage1_trainable(model: torch.nn.Module, encoder_layers: int) -> dict[str, int]:
    """Stage I: adapter + LM train; of the encoder the top `encoder_layers` (-1 all, 0 none) and its output norm.

    Parameters the model itself keeps frozen (e.g. fixed position tables) stay frozen; anything else
    (the vision tower of Qwen2.5-Omni) is frozen.
    """
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    n_layers = len(model.model.audio_tower.layers)
    top = n_layers if encoder_layers < 0 else min(encoder_layers, n_layers)
    top_layers = tuple(f"{ENCODER_PREFIX}layers.{i}." for i in range(n_layers - top, n_layers))
    for name, p in model.named_parameters():
        if name.startswith(ADAPTER_PREFIXES) or name.startswith(LM_PREFIXES):
            train = True
        elif name.startswith(ENCODER_PREFIX):
            train = encoder_layers < 0 or (top > 0 and name.startswith(top_layers + ENCODER_TOP_NORMS))
        else:
            train = False
        p.requires_grad_(train and name not in fixed)
    encoder_trainable = sum(numel(p) for n, p in model.named_parameters() if p.requires_grad and n.startswith(ENCODER_PREFIX)
                            and not n.startswith(ADAPTER_PREFIXES))  # fmt: skip
    return trainable_counts(model) | {"encoder_trainable_parameters": encoder_trainable, "encoder_layers_trained": top}


# -- training -------------------------------------------------------------------------------------
@dataclass
class StageResult:
    stage: str
    model_dir: str  # final/ (an AudioLM save, loadable with AudioLM.load / from_source)
    global_step: int
    train_loss: float | None
    losses: list[tuple[int, float]]  # (step, loss) as logged
    runtime_s: float
    resumed_from: str | None
    reused: bool  # True: a finished model with the same fingerprint was found; nothing trained
    n_samples: int
    parameters: dict[str, int]
    deepspeed_stage: int | None
    fingerprint: str = ""

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"first_loss": self.first_loss, "last_loss": self.last_loss}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageResult":
        names = cls.__dataclass_fields__
        out = cls(**{k: v for k, v in d.items() if k in names})
        out.losses = [tuple(x) for x in out.losses]  # type: ignore[misc]
        return out


def on_cpu() -> bool:
    return not torch.cuda.is_available()


def training_kwargs(stage: str, cfg: Config, out_dir: Path) -> dict[str, Any]:
    """TrainingArguments keyword values for a stage (also what fills the DeepSpeed "auto" values)."""
    sft = cfg.sft
    first = stage == "stage1"
    max_steps = sft.stage1_max_steps if first else sft.stage2_max_steps
    cpu = on_cpu()
    return dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=sft.per_device_batch_size,
        gradient_accumulation_steps=sft.gradient_accumulation_steps,
        learning_rate=sft.stage1_learning_rate if first else sft.stage2_learning_rate,
        num_train_epochs=sft.stage1_epochs if first else sft.stage2_epochs,
        max_steps=max_steps if max_steps > 0 else -1,
        weight_decay=sft.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        warmup_steps=sft.warmup_steps,
        lr_scheduler_type=sft.lr_scheduler_type,
        max_grad_norm=sft.max_grad_norm,
        logging_steps=sft.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=sft.save_steps,
        save_total_limit=sft.save_total_limit,
        report_to="none",  # MLflow gets the metrics from mlflow_step_logger, on the stage's own run
        use_cpu=cpu,
        bf16=cfg.models.dtype == "bfloat16" and not cpu,
        optim="adamw_torch",
        seed=sft.seed,
        data_seed=sft.seed,
        remove_unused_columns=False,  # the collator needs the raw fields
        label_names=["labels"],
        dataloader_num_workers=0,
        activation_checkpointing=sft.gradient_checkpointing,
        ddp_backend="gloo" if cpu and _world_size() > 1 else None,  # several CPU processes: gloo (no NCCL)
        disable_tqdm=True,
    )


def mlflow_step_logger(run, prefix: str):
    """Trainer callback: every logged value (loss, lr, grad norm) as an MLflow metric at its global step; a resumed
    stage also logs the values from before its checkpoint."""
    from transformers import TrainerCallback

    def numbers(logs: dict) -> dict[str, float]:
        return {f"{prefix}/{k}": float(v) for k, v in logs.items() if k != "step" and isinstance(v, (int, float))}

    class MlflowStepLogger(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            """A resumed stage logs into a new run: give it the steps before the checkpoint (the trainer state's
            log history) too, so its curves start at step 1."""
            if run is None or not state.is_world_process_zero or not state.global_step:
                return
            run.log_missing_steps(((int(e["step"]), numbers(e)) for e in state.log_history if e.get("step") is not None),
                                  f"{prefix}/loss")  # fmt: skip

        def on_log(self, args, state, control, logs=None, **kwargs):
            if run is None or not state.is_world_process_zero or not logs:
                return
            if values := numbers(logs):
                run.log_metrics(values, step=state.global_step)

    return MlflowStepLogger()


def disk_room_guard(stage_path: Path):
    """Trainer callback: check the free disk at the start and before every checkpoint save, so a save that
    cannot fit stops training with CheckpointSpaceError instead of tearing (models.checkpoints)."""
    from transformers import TrainerCallback

    class DiskRoomGuard(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step < state.max_steps:
                ensure_room_for_checkpoint(stage_path, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if control.should_save:  # set by transformers' flow callback, which runs before this one
                ensure_room_for_checkpoint(stage_path, model)

    return DiskRoomGuard()


def sft_trainer_class():
    """transformers' Trainer with a resume path that restores the weights of models with renamed keys.

    `save_pretrained` writes Qwen2-Audio / Qwen2.5-Omni checkpoints in their original (legacy) key
    names, but `Trainer._load_from_checkpoint` loads the file with a plain `load_state_dict(strict=False)`:
    every key misses, the warning is easy to overlook, and training silently resumes from the
    initial weights with the checkpoint's optimizer state (transformers issue #43701, open in 5.23).
    Loading the checkpoint with `from_pretrained`, which applies the renaming, and copying the
    weights strictly fixes that. DeepSpeed (its own checkpoint format) and LoRA adapters (peft's
    loader) keep transformers' path.
    """
    from transformers import Trainer

    class SftTrainer(Trainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            model = self.model if model is None else model
            weights = Path(resume_from_checkpoint) / "model.safetensors"
            if self.is_deepspeed_enabled or hasattr(model, "peft_config") or not weights.is_file():
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            saved = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype, use_safetensors=True)
            model.load_state_dict(saved.state_dict(), strict=True)
            log.info("restored model weights from %s", resume_from_checkpoint)

    return SftTrainer


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def train_stage(
    stage: str,
    base_source: str,
    samples: Sequence[SftSample],
    cfg: Config,
    stage_path: Path,
    run_id: str | None = None,
    fingerprint: str = "",
    callbacks: Sequence[Any] = (),
) -> StageResult:
    """Train one stage from `base_source` on `samples`; resume from the last checkpoint in `stage_path`.

    Writes stage_path/final (an AudioLM save) and, last, its DONE_FILE. A finished stage with the
    same folder is returned as is (reused). With DeepSpeed every rank calls this; rank 0 writes.
    """
    from transformers import TrainingArguments

    if stage not in STAGES:
        raise ValueError(f"unknown SFT stage {stage!r}; known: {STAGES}")
    stage_path = Path(stage_path)
    if (done := finished_stage(stage_path)) is not None:
        return StageResult.from_dict({**done, "reused": True})
    stage_path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(cfg.sft.seed)
    kwargs = training_kwargs(stage, cfg, stage_path)
    ds_config = None
    if cfg.sft.deepspeed:
        from models.deepspeed_configs import resolve_deepspeed_config, skip_shm_comm_compile

        # Bucket sizes stay "auto": transformers fills them from the model's hidden size at Trainer start.
        ds_config = resolve_deepspeed_config(cfg.sft.deepspeed, kwargs, world_size=_world_size(), hidden_size=None,
                                             on_cpu=on_cpu())  # fmt: skip
        skip_shm_comm_compile(_world_size())
    # Arguments before the model: with ZeRO-3 they make from_pretrained partition the weights while
    # loading (deepspeed.zero.Init), so no rank ever holds a whole 7B model.
    args = TrainingArguments(**kwargs, deepspeed=ds_config)
    lm = AudioLM.from_source(base_source, cfg)
    if stage == "stage1":
        counts = set_stage1_trainable(lm.model, cfg.sft.stage1_encoder_layers)
    else:
        s = cfg.sft
        torch.manual_seed(s.seed)  # the adapters' random init must not depend on what ran before (DeepSpeed init)
        counts = apply_lora(lm, s.lora_r, s.lora_alpha, s.lora_dropout, s.lora_target_modules)
    if cfg.sft.gradient_checkpointing:
        lm.model.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input (frozen embeddings)

    run = None
    if run_id and args.process_index == 0:
        from emotionthinker.tracking import attach_run

        run = attach_run(cfg, run_id)
    trainer = sft_trainer_class()(
        model=lm.model,
        args=args,
        train_dataset=SftDataset(samples, cfg),
        data_collator=SftCollator(lm),
        callbacks=[mlflow_step_logger(run, stage), disk_room_guard(stage_path), *callbacks],
    )
    resume = last_checkpoint(stage_path)
    if resume is not None:
        log.info("%s: resuming from %s", stage, resume)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    final = stage_path / "final"
    provenance = {"source": f"sft:{stage}", "base": base_source, "stage": stage, "fingerprint": fingerprint}
    saved = save_final_model(trainer, lm, stage, base_source, cfg, stage_path)
    if trainer.is_world_process_zero():
        write_manifest(final, saved.family, saved.window_s, **provenance)
        if ds_config is not None:  # as DeepSpeed ran it, transformers' last "auto" values filled in
            (stage_path / DEEPSPEED_FILE).write_text(json.dumps(args.hf_deepspeed_config.config, indent=2))

    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    result = StageResult(
        stage=stage,
        model_dir=str(final),
        global_step=int(trainer.state.global_step),
        train_loss=float(output.metrics["train_loss"]) if "train_loss" in output.metrics else None,
        losses=losses,
        runtime_s=round(time.perf_counter() - started, 2),
        resumed_from=str(resume) if resume else None,
        reused=False,
        n_samples=len(samples),
        parameters=counts,
        deepspeed_stage=int(ds_config["zero_optimization"]["stage"]) if ds_config else None,
        fingerprint=fingerprint,
    )
    if trainer.is_world_process_zero():
        write_done(stage_path, result.to_dict())
        prune_checkpoints(stage_path)
    return result


def _plain_base(base_source: str, cfg: Config) -> AudioLM:
    """The stage's starting model loaded whole (on rank 0), also inside a ZeRO-3 run."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # else from_pretrained would partition it again (training is over)
    return AudioLM.from_source(base_source, cfg)


def save_final_model(trainer, lm: AudioLM, stage: str, base_source: str, cfg: Config, stage_path: Path) -> AudioLM:
    """Write stage_path/final as a plain AudioLM save (safetensors, no peft layers); every rank must call.

    Stage I: the trained weights; under DeepSpeed the consolidated state dict (ZeRO-3 gathers the
    partitions) is loaded strictly into a whole copy of the base. transformers' own DeepSpeed save
    renames Qwen2-Audio's keys twice (`language_model.model.model.*`) and the result loads as random
    weights. Stage II: the adapter (safetensors) merged into a whole copy of the base. Returns the
    model that was saved (on rank 0; `lm` elsewhere).
    """
    final = stage_path / "final"
    rank0 = trainer.is_world_process_zero()
    if stage == "stage1":
        if not trainer.is_deepspeed_enabled:
            if rank0:
                lm.save(final)
            return lm
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)  # collective: every rank takes part
        if rank0:
            whole = _plain_base(base_source, cfg)
            whole.model.load_state_dict(state, strict=True)
            whole.save(final)
            lm = whole
        trainer.accelerator.wait_for_everyone()
        return lm
    adapter = stage_path / "adapter"
    trainer.save_model(str(adapter))  # peft writes the adapter weights only (gathered under ZeRO-3)
    if rank0:
        (adapter / "training_args.bin").unlink(missing_ok=True)  # the Trainer's pickle; nothing reads it
        merged = _plain_base(base_source, cfg)
        merge_adapter_dir(merged, adapter)
        merged.save(final)
        lm = merged
    trainer.accelerator.wait_for_everyone()
    return lm


def needs_launcher(cfg: Config) -> bool:
    """DeepSpeed and multi-process runs go through torchrun; plain runs train in this process."""
    return bool(cfg.sft.deepspeed) or cfg.sft.num_processes > 1


def run_stage(
    stage: str,
    base_source: str,
    samples: Sequence[SftSample],
    cfg: Config,
    stage_path: Path,
    run_id: str | None = None,
    fingerprint: str = "",
    timeout_s: float | None = None,
) -> StageResult:
    """Train a stage here, or under torchrun with cfg.sft.num_processes processes (see module docstring);
    one process at a time per stage folder."""
    with stage_lock(stage_path, SftTrainingError):
        return _run_stage_locked(stage, base_source, samples, cfg, Path(stage_path), run_id, fingerprint, timeout_s)


def _run_stage_locked(stage: str, base_source: str, samples: Sequence[SftSample], cfg: Config, stage_path: Path,
                      run_id: str | None, fingerprint: str, timeout_s: float | None) -> StageResult:  # fmt: skip
    if not needs_launcher(cfg):
        return train_stage(stage, base_source, samples, cfg, stage_path, run_id, fingerprint)
    if (done := finished_stage(stage_path)) is not None:
        return StageResult.from_dict({**done, "reused": True})
    stage_path.mkdir(parents=True, exist_ok=True)
    write_samples(stage_path / TRAIN_SAMPLES_FILE, samples)
    (stage_path / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.sft.num_processes}",
        "-m", "models.sft", "--stage", stage, "--base", base_source, "--stage-dir", str(stage_path),
        "--fingerprint", fingerprint,
    ] + (["--run-id", run_id] if run_id else [])  # fmt: skip
    log_path = stage_path / LAUNCH_LOG
    log.info("launching %s (log: %s)", " ".join(cmd), log_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as out:
        returncode = subprocess.run(cmd, env=env, timeout=timeout_s, stdout=out, stderr=subprocess.STDOUT).returncode
    if returncode != 0 or (done := read_done(stage_path)) is None:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SftTrainingError(f"{stage} under torchrun exited with {returncode} (log {log_path}):\n{tail}")
    return StageResult.from_dict(done)


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry point: one rank of `train_stage`, inputs written by `run_stage` into the stage folder."""
    parser = argparse.ArgumentParser(prog="python -m models.sft", description=main.__doc__)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--base", required=True, help="model source to start from")
    parser.add_argument("--stage-dir", required=True, type=Path)
    parser.add_argument("--fingerprint", default="")
    parser.add_argument("--run-id", default=None)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = Config.model_validate_json((a.stage_dir / CONFIG_FILE).read_text())
    samples = read_samples(a.stage_dir / TRAIN_SAMPLES_FILE)
    result = train_stage(a.stage, a.base, samples, cfg, a.stage_dir, a.run_id, a.fingerprint)
    if is_rank_zero():
        print(json.dumps({"global_step": result.global_step, "model_dir": result.model_dir}))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through run_stage in tests
    raise SystemExit(main())


