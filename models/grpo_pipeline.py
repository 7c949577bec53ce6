"""The steps of the `grpo_ptr` flow as plain functions: prompts (with quarantine) -> training in a folder
named by a fingerprint of everything that decides the result -> `emotionthinker-policy` registered.

A rerun with the same inputs reuses the finished policy, and an interrupted run resumes from its last
checkpoint. Registry sources are fingerprinted by the version they resolve to, so moving an alias
(a new EmotionThinker-Base or reward model) starts a fresh run instead of resuming an old one.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from emotionthinker.config import Config
from emotionthinker.validation import ValidationFailed
from models.checkpoints import fingerprint, stage_dir
from models.grpo_data import GrpoData, load_grpo_data
from models.grpo_trainer import GrpoResult, policy_source, run_grpo
from models.sources import source_identity

log = logging.getLogger(__name__)

# GrpoConfig fields that do not change what is trained (kept out of the fingerprint).
_NOT_TRAINING = {"output_dir", "save_steps", "save_total_limit", "log_completions_steps", "num_completions_to_log",
                 "register_model", "registered_model_name", "registered_alias", "policy_source", "max_steps"}  # fmt: skip


def output_root(cfg: Config) -> Path:
    return cfg.stage_dir(cfg.grpo.output_dir, "grpo")


def load_data(path: str | Path, cfg: Config) -> GrpoData:
    """The prompt set; raises ValidationFailed when the quarantined share exceeds validation.max_failure_rate."""
    data = load_grpo_data(path, cfg)
    total = data.n_usable + len(data.quarantined)  # before grpo.max_prompts: a small pick is no failure
    rate = len(data.quarantined) / total if total else 0.0
    if rate > cfg.validation.max_failure_rate:
        raise ValidationFailed("grpo prompts", rate, cfg.validation.max_failure_rate,
                               Counter(q["reason"] for q in data.quarantined))  # fmt: skip
    return data


def reward_identity(cfg: Config, reward_source: str | None) -> str | None:
    g = cfg.grpo
    if g.plain_grpo or g.alpha_reasoning == 0:
        return None
    if reward_source:
        return source_identity(reward_source, cfg)
    from models.reward_model import base_source

    return source_identity(base_source(cfg) if g.untrained_rm else cfg.rm.scorer_source, cfg)


def run_fingerprint(cfg: Config, data: GrpoData, policy: str, reward_source: str | None) -> str:
    """max_steps stays out: a longer run of the same settings continues the shorter one's checkpoints."""
    grpo = {k: v for k, v in cfg.grpo.model_dump(mode="json").items() if k not in _NOT_TRAINING}
    return fingerprint({
        "policy": source_identity(policy, cfg), "reward": reward_identity(cfg, reward_source),
        "prompts": data.data_version["grpo_prompts_sha1"], "n_prompts": len(data.prompts),
        "grpo": grpo, "models": cfg.models.model_dump(mode="json"), "profile": cfg.profile,
    })  # fmt: skip


def run_name(cfg: Config) -> str:
    g = cfg.grpo
    flags = [f for f in ("plain_grpo", "untrained_rm", "no_trust_weight", "no_progressive") if getattr(g, f)]
    return "grpo-ptr" + "".join(f"-{f.replace('_', '-')}" for f in flags)


def train_logged(data: GrpoData, cfg: Config, run_id: str, policy: str | None = None,
                 reward_source: str | None = None, scorer: Any = None) -> GrpoResult:  # fmt: skip
    """Train (or reuse / resume) in <output_root>/grpo-<fingerprint>; per-step metrics go to run_id."""
    source = policy_source(cfg, policy)
    fp = run_fingerprint(cfg, data, source, reward_source)
    folder = stage_dir(output_root(cfg), "grpo", fp)
    final = folder / "final"
    if final.is_dir() and not (final / "grpo_result.json").is_file():  # a crash while saving the final model
        import shutil

        shutil.rmtree(final)
    if (final / "grpo_result.json").is_file():
        import json

        done = json.loads((final / "grpo_result.json").read_text())
        if done.get("global_step", 0) < cfg.grpo.max_steps:  # a longer run asked for: continue from the checkpoints
            (final / "grpo_result.json").unlink()
    result = run_grpo(cfg, data.prompts, folder, policy=source, reward_source=reward_source, scorer=scorer,
                      run_id=run_id, fingerprint=fp)  # fmt: skip
    return result


def log_result(cfg: Config, run_id: str, result: GrpoResult, data: GrpoData) -> None:
    from emotionthinker.tracking import attach_run

    run = attach_run(cfg, run_id)
    run.log_params({"fingerprint": result.fingerprint, "resumed_from": result.resumed_from or "",
                    **{f"parameters.{k}": v for k, v in result.parameters.items()}})  # fmt: skip
    run.set_tags({"reused": str(result.reused)})
    if data.quarantined:
        run.log_table(data.quarantined, "quarantine.json")
    run.log_metrics({"runtime_s": result.runtime_s}, step=result.global_step)


def register_logged(model_dir: str, cfg: Config, run_id: str, result: GrpoResult, data: GrpoData) -> dict[str, str]:
    """Register the policy as grpo.registered_model_name @ grpo.registered_alias (`challenger`)."""
    from emotionthinker.registry import register_model
    from emotionthinker.tracking import attach_run, git_sha

    name, alias = cfg.grpo.registered_model_name, cfg.grpo.registered_alias
    summary = {f"train.{k}": f"{v:.4f}" for k, v in result.summary().items() if isinstance(v, float)}
    tags = {"profile": cfg.profile, "git_sha": git_sha(), "schedule": cfg.grpo.reasoning_schedule,
            "switch_step": str(result.switch_step), "steps": str(result.global_step), **data.data_version, **summary}  # fmt: skip
    version = register_model(cfg, run_id, model_dir, name, alias, tags=tags,
                             description="EmotionThinker policy: GRPO-PTR from EmotionThinker-Base.")  # fmt: skip
    attach_run(cfg, run_id).set_tags({"registered_model": f"{name}/{version}", "registered_alias": alias})
    return {"name": name, "version": version, "alias": alias, "source": f"registry:{name}@{alias}"}
