"""The steps of the `sft` flow as plain functions: load samples -> stage I -> stage II -> sample
generations -> held-out evaluation (trained and, for comparison, untrained base) -> registration.

MLflow layout: one parent run `sft` (data version, evaluation, generation tables, the registered
model's artifacts) and a child run per trained stage (its parameters, per-step loss, learning rate and
gradient norm, a loss-curve image, the resolved DeepSpeed config). Each stage trains into a folder
named by its fingerprint (models/checkpoints.py): a rerun resumes the last checkpoint, or reuses a
finished stage without training or logging a new run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config, project_path
from emotionthinker.stored_paths import absolute_path
from emotionthinker.validation import ValidationFailed
from models.checkpoints import files_sha1, finished_stage, fingerprint, stage_dir
from models.sft import (
    DEEPSPEED_FILE, SPLITS, STAGES, SftDataError, SftSample, StageResult, check_audio, quarantine_reasons,
    read_samples, run_stage, sample_file,
)  # fmt: skip

log = logging.getLogger(__name__)

# SftConfig fields that do not change what a stage trains (so they stay out of its fingerprint).
# num_processes is not one of them: the global batch is per-device batch x accumulation x processes.
_NOT_TRAINING = {"data_dir", "output_dir", "stages", "eval_max_samples", "eval_batch_size", "eval_max_new_tokens",
                 "eval_base", "generation_samples", "register_model", "registered_model_name", "registered_alias",
                 "save_steps", "save_total_limit", "logging_steps"}  # fmt: skip


@dataclass
class SftData:
    data_dir: Path
    samples: dict[str, list[SftSample]]  # "stage1.train" -> usable samples
    quarantined: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    data_version: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def held_out(self) -> list[SftSample]:
        """Validation samples of both stages, each id once (a CoT sample can sit in both files)."""
        seen, out = set(), []
        for stage in STAGES:
            for s in self.samples.get(f"{stage}.validation", []):
                if s.id not in seen:
                    seen.add(s.id)
                    out.append(s)
        return out

    def counts(self) -> dict[str, Any]:
        return {name: dict(Counter(s.task for s in samples)) for name, samples in self.samples.items()}


def resolve_data_dir(cfg: Config, data_dir: str | Path | None = None) -> Path:
    """A folder named on the command line is relative to the cwd; sft.data_dir, to the project root."""
    if data_dir:
        return absolute_path(data_dir)
    return project_path(cfg.sft.data_dir) if cfg.sft.data_dir else cfg.data_dir / "sft"


def output_root(cfg: Config) -> Path:
    return cfg.stage_dir(cfg.sft.output_dir, "sft")


def base_source(cfg: Config) -> str:
    return cfg.sft.base_source or cfg.models.policy_source


def data_version(data_dir: Path, files: list[Path], cfg: Config) -> dict[str, str]:
    """sha1 of the sample files always; the DVC md5 too when the folder is DVC-tracked (<dir>.dvc beside it)."""
    from emotionthinker.versioning import VersioningError, read_dvc_md5

    version = {"sft_files_sha1": files_sha1(files)}
    pointer = data_dir.with_name(data_dir.name + ".dvc")
    if pointer.is_file():
        try:
            version["sft_dvc_md5"] = read_dvc_md5(pointer)
        except (VersioningError, OSError, ValueError) as exc:
            log.warning("unreadable DVC pointer %s: %s", pointer, exc)
    return version


def load_sft_data(cfg: Config, data_dir: str | Path | None = None) -> SftData:
    """Read the train files of the configured stages and every validation file; quarantine samples
    whose audio is unusable.

    A train file is required for every configured stage; validation files are optional (no
    evaluation without them) and read for both stages, since the evaluation scores CoT (stage II)
    as well as attribute and comparative questions (stage I) whichever stages train. Raises
    ValidationFailed when a file's quarantine share exceeds validation.max_failure_rate,
    SftDataError on malformed files.
    """
    root = resolve_data_dir(cfg, data_dir)
    data = SftData(root, {})
    for stage in STAGES:
        for split in SPLITS:
            if split == "train" and stage not in cfg.sft.stages:
                continue
            path = sample_file(root, stage, split)
            if not path.is_file():
                if split == "train":
                    raise SftDataError(f"{stage} needs {path}; build the SFT corpus first (`emotionthinker sft-data`)")
                continue
            samples, quarantined = check_audio(read_samples(path), cfg)
            name = f"{stage}.{split}"
            total = len(samples) + len(quarantined)
            if total and len(quarantined) / total > cfg.validation.max_failure_rate:
                raise ValidationFailed(f"sft {name}", len(quarantined) / total, cfg.validation.max_failure_rate,
                                       quarantine_reasons(quarantined))  # fmt: skip
            if split == "train" and cfg.sft.max_train_samples:
                samples = samples[: cfg.sft.max_train_samples]
            if split == "train" and not samples:
                raise SftDataError(f"{path} holds no usable sample")
            data.samples[name], data.quarantined[name], data.files[name] = samples, quarantined, path
    data.data_version = data_version(root, [data.files[k] for k in sorted(data.files)], cfg)
    return data


def _other_stage_fields(stage: str) -> tuple[str, ...]:
    """Settings of the other stage: changing stage II's LoRA must not invalidate a finished stage I."""
    return ("stage2_", "lora_") if stage == "stage1" else ("stage1_",)


def stage_fingerprint(stage: str, base_id: str, data: SftData, cfg: Config) -> str:
    other = _other_stage_fields(stage)
    sft = {k: v for k, v in cfg.sft.model_dump(mode="json").items() if k not in _NOT_TRAINING and not k.startswith(other)}
    return fingerprint({
        "stage": stage, "base": base_id, "train": files_sha1([data.files[f"{stage}.train"]]), "sft": sft,
        "models": cfg.models.model_dump(mode="json"), "profile": cfg.profile,
    })  # fmt: skip


def _loss_figure(result: StageResult):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    steps, losses = zip(*result.losses)
    ax.plot(steps, losses, marker="o", markersize=3)
    ax.set(xlabel="step", ylabel="training loss", title=f"SFT {result.stage}")
    ax.grid(alpha=0.3)
    return fig


def train_stage_logged(stage: str, base: str, base_id: str, data: SftData, cfg: Config, parent_run_id: str | None) -> StageResult:
    """One stage in its own MLflow child run; a finished stage with the same fingerprint is reused as is."""
    from emotionthinker.tracking import start_stage_run

    fp = stage_fingerprint(stage, base_id, data, cfg)
    folder = stage_dir(output_root(cfg), stage, fp)
    if (done := finished_stage(folder)) is not None:
        log.info("%s: reusing finished stage %s", stage, folder)
        return StageResult.from_dict({**done, "reused": True})
    samples = data.samples[f"{stage}.train"]
    params = {
        "stage": stage, "base_source": base, "fingerprint": fp, "n_train_samples": len(samples),
        "train_tasks": dict(Counter(s.task for s in samples)), "sft": cfg.sft, "models": cfg.models,
    }  # fmt: skip
    with start_stage_run(cfg, f"sft_{stage}", params=params, data_version=data.data_version,
                         parent_run_id=parent_run_id, run_name=f"sft-{stage}") as run:  # fmt: skip
        result = run_stage(stage, base, samples, cfg, folder, run_id=run.run_id, fingerprint=fp)
        run.log_params({f"parameters.{k}": v for k, v in result.parameters.items()} | {"resumed_from": result.resumed_from or ""})
        summary = {"runtime_s": result.runtime_s, "global_step": result.global_step}
        summary |= {k: v for k, v in (("train_loss", result.train_loss), ("first_loss", result.first_loss),
                                      ("last_loss", result.last_loss)) if v is not None}  # fmt: skip
        run.log_metrics({f"{stage}/{k}": v for k, v in summary.items()}, step=result.global_step)
        if result.losses:
            run.log_figure(_loss_figure(result), f"{stage}_loss.png")
        if (folder / DEEPSPEED_FILE).is_file():
            run.log_artifact(folder / DEEPSPEED_FILE)
    return result


def evaluate_logged(model_source: str, data: SftData, cfg: Config, run_id: str | None, prefix: str) -> dict[str, float]:
    """Held-out metrics of a model, logged as <prefix>/<metric> with the per-sample table."""
    from models.backbone import AudioLM
    from models.sft_eval import evaluate

    held_out = data.held_out()
    if not held_out:
        log.warning("no validation samples in %s: nothing to evaluate", data.data_dir)
        return {}
    result = evaluate(AudioLM.from_source(model_source, cfg), held_out, cfg)
    if run_id:
        from emotionthinker.tracking import attach_run

        run = attach_run(cfg, run_id)
        run.log_metrics({f"{prefix}/{k}": v for k, v in result.metrics.items()})
        run.log_table(result.rows, f"{prefix}_generations.json")
    return result.metrics


def sample_generations_logged(model_source: str, data: SftData, cfg: Config, run_id: str | None) -> list[dict[str, Any]]:
    from models.backbone import AudioLM
    from models.sft_eval import sample_generations

    held_out = data.held_out()
    if not held_out or not cfg.sft.generation_samples:
        return []
    rows = sample_generations(AudioLM.from_source(model_source, cfg), held_out, cfg, cfg.sft.generation_samples)
    if run_id:
        from emotionthinker.tracking import attach_run

        attach_run(cfg, run_id).log_table(rows, "sample_generations.json")
    return rows


def register_logged(model_dir: str, cfg: Config, run_id: str, metrics: dict[str, float], data: SftData) -> dict[str, str]:
    """Register the final model (safetensors folder) as cfg.sft.registered_model_name @ registered_alias."""
    from emotionthinker.registry import register_model
    from emotionthinker.tracking import attach_run, git_sha

    name, alias = cfg.sft.registered_model_name, cfg.sft.registered_alias
    tags = {"profile": cfg.profile, "git_sha": git_sha(), **data.data_version,
            **{f"eval.{k}": f"{v:.4f}" for k, v in metrics.items()}}  # fmt: skip
    version = register_model(cfg, run_id, model_dir, name, alias, tags=tags,
                             description="EmotionThinker-Base: prosody-centric SFT (stage I full, stage II LoRA merged).")  # fmt: skip
    attach_run(cfg, run_id).set_tags({"registered_model": f"{name}/{version}", "registered_alias": alias})
    return {"name": name, "version": version, "alias": alias, "source": f"registry:{name}@{alias}"}
