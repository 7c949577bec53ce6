"""GRPO-PTR trainer (DESIGN.md stage 7) on accelerate; names follow TRL's GRPOTrainer/GRPOConfig.

TRL's GRPOTrainer takes no audio, and its reward functions see only one process's share of a group
(TRL issue #3896), while the trust weight and the advantages need whole groups. One step here:

1. Prompts: `n = per_device_train_batch_size * processes / K` prompts, each repeated K times and
   the rows split over the processes in order (as TRL's RepeatSampler does), so a group may straddle
   processes. Which prompts a step sees depends only on the step number (resume is exact).
2. Sampling: each process samples its rows' completions from the policy with the clip as input
   (softmax at `temperature`, prompt encoded once per group: models/grpo_rollout.py).
3. R_f and R_o per completion; every group is gathered whole across processes
   (models/distributed_groups.py). Training accuracy = mean R_o of the step.
4. Progressive schedule: fed that accuracy, it says whether R_t is on (never with plain_grpo,
   always with no_progressive). Only then does the reward model score the reasonings (its cost is
   paid only while R_t counts; models/grpo_scoring.py encodes each clip once for its group), in a
   worker thread while the reference and policy forward passes, which need no reward, run; R_t is
   gathered too.
5. R = a_f R_f + a_o R_o + a_t tau R_t with tau per group (tau = 1 with no_trust_weight), advantages
   normalised within each group; each process takes back its own rows.
6. Loss: clipped ratio objective + beta * k3 KL to the frozen reference (the initial policy,
   EmotionThinker-Base), per token then averaged per sequence (TRL loss_type "grpo"). With
   num_iterations = 1 the old log-probs are the current ones detached (ratio 1, as TRL); larger
   values reuse a batch with the ratio and clipping doing their work.

Checkpoints (`checkpoint-<step>/`): accelerate `save_state` (model as safetensors, optimizer,
scheduler, RNG) plus `trainer_state.json` (step, schedule state, per-step history), written last
so a torn save is never resumed. A run resumes from its last checkpoint and continues at the next
step; the schedule, the history and the prompt order continue with it. At the start and before each
save the free disk is checked against the last checkpoint's size (or, before the first, weights plus
Adam moments): a save that cannot fit fails first, with the checkpoint a rerun resumes from, instead
of tearing.

(Under DeepSpeed the model state is DeepSpeed's own checkpoint format, as accelerate saves it.)

DeepSpeed runs through accelerate's DeepSpeedPlugin with the ZeRO configs of
models/deepspeed_configs (ZeRO-3: weights gathered for sampling as TRL does, the reference as a
ZeRO-3 inference engine); DeepSpeed and multi-process runs are launched under torchrun
(`run_grpo`), as the SFT stage does.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from emotionthinker.config import Config
from emotionthinker.records import write_text_atomic
from models.backbone import AudioLM
from models.checkpoints import ensure_room_for_checkpoint, is_rank_zero, last_checkpoint, prune_checkpoints, stage_lock
from models.distributed_groups import gather_groups
from models.grpo_data import GrpoDataset, GrpoPrompt, read_prompts, write_prompts
from models.grpo_math import ProgressiveSchedule, group_advantages, grpo_loss, ptr_rewards
from models.grpo_rollout import group_logprobs, sample_groups
from models.rewards import Alphas, Scores, format_reward, outcome_reward, reasoning_reward

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"  # models.checkpoints.last_checkpoint looks for this name
RESULT_FILE = "grpo_result.json"  # in final/, written last: the run finished
CONFIG_FILE = "launch_config.json"
PROMPTS_FILE = "prompts.jsonl"
LAUNCH_LOG = "launch.log"
CURVE_FILE = "reward_accuracy.png"


class GrpoTrainingError(RuntimeError):
    """The trainer cannot run as configured, or a launched run failed."""


@runtime_checkable
class ReasoningScorer(Protocol):
    """What scores reasoning for R_t: models.reward_model.RewardModel, or a deterministic scorer in tests."""

    def score(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[Scores | None]: ...


def extract_reasoning(completion: str) -> str:
    from models.reward_model import extract_reasoning as extract

    return extract(completion)


# -- policy as one module ---------------------------------------------------------------------------
class PolicyLogprobs(torch.nn.Module):
    """The policy whose forward returns completion log-probs, so that DDP and DeepSpeed wrap the very
    forward that produces the loss (they hook the module's __call__)."""

    def __init__(self, lm: AudioLM, shared_prefix: bool):
        super().__init__()
        self.model = lm.model  # the same module object: AudioLM and this wrapper share the weights
        self._lm = (lm,)  # a tuple, so the AudioLM is not registered as a second owner of the weights
        self.shared_prefix = shared_prefix

    # What TRL's unwrap_model_for_generation (ZeRO-3 sampling) asks of the unwrapped model.
    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.model, "is_gradient_checkpointing", False))

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def forward(self, inputs: dict[str, torch.Tensor], completion_ids: Sequence[Sequence[int]], temperature: float):
        out = group_logprobs(self._lm[0], inputs, completion_ids, temperature, self.shared_prefix)
        return out.logprobs, out.mask


def set_policy_trainable(model: torch.nn.Module, freeze_encoder: bool) -> dict[str, int]:
    """Adapter + LM train, the audio encoder per models.freeze_encoder, anything else (a vision tower) frozen."""
    from models.sft import set_stage1_trainable

    return set_stage1_trainable(model, 0 if freeze_encoder else -1)


def register_zero3_external_parameters(model: torch.nn.Module) -> int:
    """ZeRO-3 gathers a module's own weights when its forward starts; Whisper-style audio encoders read
    their position table (`embed_positions.weight`) without calling that submodule, so it must be
    registered as an external parameter of the encoder or it is read while still partitioned."""
    import deepspeed

    n = 0
    for module in model.modules():
        table = getattr(module, "embed_positions", None)
        if isinstance(table, torch.nn.Embedding):
            deepspeed.zero.register_external_parameter(module, table.weight)
            n += 1
    return n


# -- results ----------------------------------------------------------------------------------------
@dataclass
class GrpoResult:
    model_dir: str
    global_step: int
    resumed_from: str | None
    switch_step: int | None
    history: list[dict[str, float]]
    runtime_s: float
    n_prompts: int
    reused: bool = False
    fingerprint: str = ""
    parameters: dict[str, int] = field(default_factory=dict)
    deepspeed_stage: int | None = None  # ZeRO stage the run trained under (None: no DeepSpeed)

    def window_mean(self, key: str, first: bool, n: int = 5) -> float | None:
        values = [h[key] for h in self.history if key in h]
        values = values[:n] if first else values[-n:]
        return sum(values) / len(values) if values else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"global_step": self.global_step, "switch_step": self.switch_step}
        for key in ("reward", "accuracy"):
            out[f"{key}_first5"] = self.window_mean(key, True)
            out[f"{key}_last5"] = self.window_mean(key, False)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GrpoResult":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# -- the trainer ------------------------------------------------------------------------------------
def _seed_for(seed: int, step: int, rank: int) -> int:
    # Distinct per rank (a group split over two ranks must not sample the same completions twice).
    return (seed * 1_000_003 + step * 1_009 + rank) % (2**63 - 1)


def _pad_cat(tensors: list[torch.Tensor], value: float | bool) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    padded = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors]
    return torch.cat(padded, dim=0)


@dataclass
class _Bucket:
    """Local groups that sample the same number of completions (one generate call)."""

    k: int
    group_ids: list[int]  # position of the prompt within the step (unique per step)
    indices: list[int]  # dataset index of each group's prompt
    inputs: dict[str, torch.Tensor] | None = None
    completion_ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


class GrpoPtrTrainer:
    """See the module docstring. `train()` runs to cfg.grpo.max_steps and returns a GrpoResult."""

    def __init__(
        self,
        cfg: Config,
        policy: AudioLM,
        dataset: GrpoDataset,
        output_dir: str | Path,
        *,
        reference: AudioLM | None = None,
        scorer: ReasoningScorer | None = None,
        run: Any = None,
        accelerator: Any = None,
        fingerprint: str = "",
    ):
        g = cfg.grpo
        self.cfg, self.g = cfg, g
        self.policy, self.dataset, self.scorer = policy, dataset, scorer
        self.output_dir = Path(output_dir)
        self.fingerprint = fingerprint
        self.schedule = ProgressiveSchedule.from_config(g)
        if g.reasoning_schedule != "never" and g.alpha_reasoning > 0 and scorer is None:
            raise GrpoTrainingError("R_t can switch on (not plain_grpo) but no reward model (scorer) was given")
        self.accelerator = accelerator or make_accelerator(cfg, policy)
        acc = self.accelerator
        world = acc.num_processes
        if (g.per_device_train_batch_size * world) % g.num_generations:
            raise GrpoTrainingError(
                f"per_device_train_batch_size ({g.per_device_train_batch_size}) x processes ({world}) must be a "
                f"multiple of num_generations ({g.num_generations}): groups must be whole across processes"
            )
        self.alphas = Alphas(g.alpha_format, g.alpha_outcome, g.alpha_reasoning)
        self.parameters = set_policy_trainable(policy.model, cfg.models.freeze_encoder)
        policy.model.eval()  # no dropout: log-probs must be those the completions were sampled with (TRL disable_dropout)

        # The frozen reference: a copy of the initial policy, taken before any checkpoint is restored.
        if g.beta != 0.0 and reference is None:
            reference = AudioLM(copy.deepcopy(policy.model), policy.tokenizer, policy.feature_extractor, policy.family,
                                policy.window_s, policy.source, policy.processor)  # fmt: skip
        self.reference = reference
        if reference is not None:
            for p in reference.model.parameters():
                p.requires_grad_(False)
            reference.model.eval()

        if self._zero_stage() == 3:
            register_zero3_external_parameters(policy.model)
            if reference is not None:
                register_zero3_external_parameters(reference.model)
        module = PolicyLogprobs(policy, g.shared_prefix)
        params = [p for p in module.parameters() if p.requires_grad]
        if self._deepspeed_has_optimizer():
            from accelerate.utils import DummyOptim

            optimizer = DummyOptim(params, lr=g.learning_rate, weight_decay=g.weight_decay)
            self.module, self.optimizer = acc.prepare(module, optimizer)
            self.scheduler = None
        else:
            optimizer = torch.optim.AdamW(params, lr=g.learning_rate, weight_decay=g.weight_decay)
            warmup = g.warmup_steps
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
            self.module, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
        if reference is not None:
            if self._zero_stage() == 3:
                from trl.models.utils import prepare_deepspeed

                reference.model = prepare_deepspeed(reference.model, acc)
            else:
                reference.model.to(acc.device)
        if scorer is not None and hasattr(scorer, "lm"):
            scorer.lm.model.to(acc.device)
        self.history: list[dict[str, float]] = []
        self.step_done = 0
        self.run = run if acc.is_main_process else None
        self.resumed_from: str | None = None

    # -- helpers ------------------------------------------------------------------------------------
    def _deepspeed(self) -> bool:
        return getattr(self.accelerator.state, "deepspeed_plugin", None) is not None

    def _deepspeed_has_optimizer(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return plugin is not None and "optimizer" in plugin.deepspeed_config

    def _zero_stage(self) -> int:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return int(plugin.zero_stage) if plugin is not None else 0

    @contextmanager
    def _generation_model(self):
        """ZeRO-3 partitions the weights: gather them for sampling (TRL's unwrap_model_for_generation)."""
        if self._zero_stage() == 3:
            from trl.models.utils import unwrap_model_for_generation

            with unwrap_model_for_generation(self.module, self.accelerator):
                yield
        else:
            yield

    def _local_buckets(self, step: int) -> list[_Bucket]:
        g, acc = self.g, self.accelerator
        k, per = g.num_generations, g.per_device_train_batch_size
        n_prompts = per * acc.num_processes // k
        indices = self.dataset.step_prompt_indices(step, n_prompts)
        rows = [j for j in range(n_prompts) for _ in range(k)][acc.process_index * per : (acc.process_index + 1) * per]
        counts: dict[int, int] = {}
        for j in rows:
            counts[j] = counts.get(j, 0) + 1
        buckets: dict[int, _Bucket] = {}
        for j, c in counts.items():
            b = buckets.setdefault(c, _Bucket(c, [], []))
            b.group_ids.append(j)
            b.indices.append(indices[j])
        return [buckets[c] for c in sorted(buckets)]

    def _prompt(self, index: int) -> GrpoPrompt:
        return self.dataset.prompts[index]

    def _score_reasoning_timed(self, buckets: list[_Bucket]) -> tuple[torch.Tensor, int, float]:
        started = time.perf_counter()
        with torch.no_grad():  # grad mode is per thread: this may run in a worker
            rt, unparseable = self._score_reasoning(buckets)
        return rt, unparseable, time.perf_counter() - started

    def _score_reasoning(self, buckets: list[_Bucket]) -> tuple[torch.Tensor, int]:
        """R_t of each local completion (identical reasonings of one clip scored once) and the unparseable count."""
        g = self.g
        keys, audios, questions, reasonings = [], [], [], []
        unique: dict[tuple[int, str], int] = {}
        row_keys = []
        for b in buckets:
            for n, text in enumerate(b.texts):
                index = b.indices[n // b.k]
                key = (index, extract_reasoning(text))
                if key not in unique:
                    unique[key] = len(keys)
                    keys.append(key)
                    audios.append(self.dataset.audio(index))
                    questions.append(self._prompt(index).prompt)
                    reasonings.append(key[1])
                row_keys.append(unique[key])
        scores = list(self.scorer.score(audios, questions, reasonings)) if keys else []  # type: ignore[union-attr]
        if len(scores) != len(keys):
            raise GrpoTrainingError(f"reward model returned {len(scores)} scores for {len(keys)} reasonings")
        weights = dict(g.reasoning_weights)
        rt = [reasoning_reward(scores[i], weights, g.unparseable_reasoning_score) for i in row_keys]
        unparseable = sum(scores[i] is None for i in row_keys)
        return torch.tensor(rt, dtype=torch.float32), unparseable

    # -- one step -----------------------------------------------------------------------------------
    def step(self, step: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """One GRPO-PTR step; returns (metrics of the global batch, sample-completion rows)."""
        g, acc, lm = self.g, self.accelerator, self.policy
        timings: dict[str, float] = {}
        t_step = t0 = time.perf_counter()
        buckets = self._local_buckets(step)

        # 2. sampling
        generator = torch.Generator(device=lm.device).manual_seed(_seed_for(g.seed, step, acc.process_index))
        with torch.no_grad(), self._generation_model():
            for b in buckets:
                audios = [self.dataset.audio(i) for i in b.indices]
                prompts = [self._prompt(i).prompt for i in b.indices]
                gen = sample_groups(lm, audios, prompts, b.k, g.max_completion_length, g.temperature, generator)
                b.inputs, b.completion_ids, b.texts = gen.inputs, gen.completion_ids, gen.texts
        timings["generate"] = time.perf_counter() - t0

        # 3. R_f, R_o; gather whole groups
        t0 = time.perf_counter()
        texts = [t for b in buckets for t in b.texts]
        group_ids = torch.tensor([gid for b in buckets for gid in b.group_ids for _ in range(b.k)], dtype=torch.long)
        golds = [self._prompt(i).gold for b in buckets for i in b.indices for _ in range(b.k)]
        prompt_ids = [self._prompt(i).id for b in buckets for i in b.indices for _ in range(b.k)]
        lengths = torch.tensor([len(c) for b in buckets for c in b.completion_ids], dtype=torch.float32)
        eos = lm.eos_token_ids
        truncated = torch.tensor([float(not c or c[-1] not in eos) for b in buckets for c in b.completion_ids])
        rf = torch.tensor([format_reward(t) for t in texts], dtype=torch.float32)
        ro = torch.tensor([outcome_reward(t, gold) for t, gold in zip(texts, golds)], dtype=torch.float32)
        gathered = gather_groups(
            {"group_ids": group_ids, "rf": rf, "ro": ro, "length": lengths, "truncated": truncated,
             "texts": texts, "gold": golds, "prompt_ids": prompt_ids},
            num_generations=g.num_generations,
        )  # fmt: skip
        accuracy = float(gathered["ro"].mean())
        timings["rewards"] = time.perf_counter() - t0

        # 4. progressive schedule, then R_t only when it counts. The reward model scores in a worker
        #    thread while the reference and policy forward passes, which need no reward, run here.
        reasoning_on = self.schedule.update(step, accuracy) and g.alpha_reasoning > 0 and self.scorer is not None
        pool = ThreadPoolExecutor(max_workers=1) if reasoning_on and g.overlap_reward_model else None
        pending = pool.submit(self._score_reasoning_timed, buckets) if pool is not None else None
        scored = self._score_reasoning_timed(buckets) if reasoning_on and pool is None else None

        # 6a. reference (and old) log-probs and the first policy forward pass
        t0 = time.perf_counter()
        ref_lp = old_lp = None
        with torch.no_grad():
            if self.reference is not None:
                ref_lp = _pad_cat([group_logprobs(self.reference, b.inputs, b.completion_ids, g.temperature, g.shared_prefix).logprobs
                                   for b in buckets], 0.0)  # fmt: skip
            if g.num_iterations > 1:
                old_lp = _pad_cat([self.module(b.inputs, b.completion_ids, g.temperature)[0] for b in buckets], 0.0)
        timings["reference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        first_outs = [self.module(b.inputs, b.completion_ids, g.temperature) for b in buckets]
        timings["policy_forward"] = time.perf_counter() - t0

        # 5. R_t gathered, then rewards, trust and advantages on the global view
        t0 = time.perf_counter()
        rt_global = torch.zeros_like(gathered["rf"])
        unparseable = 0
        if reasoning_on:
            try:
                rt_local, unparseable_local, timings["reasoning"] = pending.result() if pending is not None else scored
            finally:
                if pool is not None:
                    pool.shutdown()
            rt_global = gather_groups({"group_ids": group_ids, "rt": rt_local}, num_generations=g.num_generations)["rt"]
            count = torch.tensor(float(unparseable_local), device=acc.device)
            unparseable = int(acc.reduce(count, reduction="sum").item())
        else:
            timings["reasoning"] = 0.0
        timings["reasoning_wait"] = time.perf_counter() - t0
        alphas = self.alphas if reasoning_on else self.alphas._replace(reasoning=0.0)
        rewards, trust = ptr_rewards(gathered["rf"], gathered["ro"], rt_global, gathered["group_ids"], alphas,
                                     use_trust=not g.no_trust_weight, empty_value=g.tau_when_one_side_empty)  # fmt: skip
        advantages = group_advantages(rewards, gathered["group_ids"], scale=g.scale_rewards == "group")
        local_adv = gathered.local(advantages).to(acc.device)

        # 6b. the update(s)
        t0 = time.perf_counter()
        losses = []
        grad_norm = float("nan")
        for iteration in range(g.num_iterations):
            outs = first_outs if iteration == 0 else [self.module(b.inputs, b.completion_ids, g.temperature) for b in buckets]
            logp = _pad_cat([o[0] for o in outs], 0.0)
            mask = _pad_cat([o[1] for o in outs], False)
            loss = grpo_loss(logp, old_lp if old_lp is not None else logp.detach(), local_adv, mask,
                             epsilon=g.epsilon, beta=g.beta, logp_ref=ref_lp)  # fmt: skip
            acc.backward(loss.loss)
            if acc.sync_gradients:
                norm = acc.clip_grad_norm_(self.module.parameters(), g.max_grad_norm)
                grad_norm = float(norm) if norm is not None else float("nan")
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
        timings["update"] = time.perf_counter() - t0
        timings["step"] = time.perf_counter() - t_step

        # metrics of the global batch (scalars averaged over processes)
        last = losses[-1]
        local = torch.stack([last.loss.detach(), last.policy_loss.detach(), last.kl.detach(), last.clip_fraction.detach()]).float()
        reduced = acc.reduce(local.to(acc.device), reduction="mean").cpu().tolist()
        group_std = _group_std(rewards, gathered["group_ids"])
        m: dict[str, float] = {
            "reward": float(rewards.mean()), "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "rewards/format/mean": float(gathered["rf"].mean()), "rewards/outcome/mean": float(gathered["ro"].mean()),
            "accuracy": accuracy, "accuracy_window": float(self.schedule.window_accuracy or 0.0),
            "reasoning/on": float(reasoning_on),
            "loss": reduced[0], "policy_loss": reduced[1], "kl": reduced[2], "clip_ratio/region_mean": reduced[3],
            "frac_reward_zero_std": float((group_std == 0).float().mean()),
            "completions/mean_length": float(gathered["length"].mean()),
            "completions/min_length": float(gathered["length"].min()),
            "completions/max_length": float(gathered["length"].max()),
            "completions/clipped_ratio": float(gathered["truncated"].mean()),
            "grad_norm": grad_norm,
            "learning_rate": float(self.optimizer.param_groups[0]["lr"]),
            **{f"time/{k}_s": v for k, v in timings.items()},
        }  # fmt: skip
        if reasoning_on:
            m |= {
                "rewards/reasoning/mean": float(rt_global.mean()),
                "tau/mean": float(trust.group_tau.mean()), "tau/min": float(trust.group_tau.min()),
                "tau/frac_below_1": float((trust.group_tau < 1).float().mean()),
                "reasoning/unparseable": float(unparseable),
            }  # fmt: skip
        if self.schedule.switch_step == step:
            m["reasoning/switch_step"] = float(step)
        rows = []
        n_rows = min(g.num_completions_to_log, len(gathered["texts"]))
        for i in range(n_rows):
            rows.append({
                "step": step, "prompt_id": gathered["prompt_ids"][i], "gold": gathered["gold"][i],
                "completion": gathered["texts"][i], "format": float(gathered["rf"][i]), "outcome": float(gathered["ro"][i]),
                "reasoning": float(rt_global[i]) if reasoning_on else None, "tau": float(trust.tau[i]) if reasoning_on else None,
                "reward": float(rewards[i]), "advantage": float(advantages[i]),
            })  # fmt: skip
        return m, rows

    # -- loop, checkpoints ----------------------------------------------------------------------------
    def train(self) -> GrpoResult:
        started = time.perf_counter()
        start = self.resume()
        if start:
            self._log_restored_history()
        g = self.g
        if start < g.max_steps:  # a disk too small for one checkpoint fails now, not after save_steps of work
            ensure_room_for_checkpoint(self.output_dir, self.accelerator.unwrap_model(self.module))
        for step in range(start + 1, g.max_steps + 1):
            metrics, rows = self.step(step)
            self.step_done = step
            self.history.append({"step": float(step), **{k: v for k, v in metrics.items() if not math.isnan(v)}})
            self._log_step(step, metrics, rows)
            if step % g.save_steps == 0 or step == g.max_steps:
                self.save_checkpoint(step)
        final = self.save_final()
        result = GrpoResult(
            model_dir=str(final), global_step=self.step_done, resumed_from=self.resumed_from,
            switch_step=self.schedule.switch_step, history=self.history,
            runtime_s=round(time.perf_counter() - started, 2), n_prompts=len(self.dataset),
            fingerprint=self.fingerprint, parameters=self.parameters,
            deepspeed_stage=self._zero_stage() if self._deepspeed() else None,
        )  # fmt: skip
        if self.accelerator.is_main_process:
            self._log_end(result)
            _write_json(final / RESULT_FILE, result.to_dict())
            prune_checkpoints(self.output_dir, keep=1)  # the one a longer run continues from
        self.accelerator.wait_for_everyone()
        return result

    def _log_step(self, step: int, metrics: dict[str, float], rows: list[dict[str, Any]]) -> None:
        if not self.accelerator.is_main_process:
            return
        log.info("step %d/%d: reward %.3f acc %.3f format %.3f%s kl %.4f len %.1f  %.1f s", step, self.g.max_steps,
                 metrics["reward"], metrics["accuracy"], metrics["rewards/format/mean"],
                 f" R_t {metrics['rewards/reasoning/mean']:.3f} tau {metrics['tau/mean']:.3f}" if metrics["reasoning/on"] else "",
                 metrics["kl"], metrics["completions/mean_length"], metrics["time/step_s"])  # fmt: skip
        if self.run is None:
            return
        self.run.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)}, step=step)
        if "reasoning/switch_step" in metrics:
            self.run.set_tags({"reasoning_switch_step": str(step)})
        if rows and (step % self.g.log_completions_steps == 0 or step == self.g.max_steps or step == 1):
            self.run.log_table(rows, f"completions/step_{step:05d}.json")

    def _log_restored_history(self) -> None:
        """A resumed run logs into a new MLflow run: give it the steps before the checkpoint too (the crashed run
        keeps its own copy), so the run compared in the UI holds the whole curve, not the part after the crash."""
        if self.run is None:
            return
        self.run.log_missing_steps(((int(h["step"]), {k: v for k, v in h.items() if k != "step"}) for h in self.history), "reward")
        tags = {"resumed_at_step": str(self.step_done)}
        if self.schedule.switch_step is not None:
            tags["reasoning_switch_step"] = str(self.schedule.switch_step)
        self.run.set_tags(tags)

    def _log_end(self, result: GrpoResult) -> None:
        if self.run is None:
            return
        summary = {f"summary/{k}": v for k, v in result.summary().items() if isinstance(v, (int, float))}
        self.run.log_metrics(summary, step=result.global_step)
        if result.switch_step is None:
            self.run.set_tags({"reasoning_switch_step": "never"})
        if result.history:
            self.run.log_figure(reward_curve_figure(result.history, result.switch_step), CURVE_FILE)

    def save_checkpoint(self, step: int) -> Path:
        folder = self.output_dir / f"checkpoint-{step}"
        ensure_room_for_checkpoint(self.output_dir, self.accelerator.unwrap_model(self.module))
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            state = {"step": step, "schedule": self.schedule.state_dict(), "history": self.history,
                     "fingerprint": self.fingerprint, "resumed_from": self.resumed_from}  # fmt: skip
            _write_json(folder / STATE_FILE, state)  # last: marks the checkpoint complete
            done = sorted((int(p.name.split("-")[1]), p) for p in self.output_dir.glob("checkpoint-*")
                          if p.name.split("-")[1].isdigit() and (p / STATE_FILE).is_file())  # fmt: skip
            for _, old in done[: -self.g.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return folder

    def resume(self) -> int:
        """Restore the last complete checkpoint in output_dir; return the step it ended (0: none)."""
        folder = last_checkpoint(self.output_dir)
        if folder is None:
            return 0
        state = json.loads((folder / STATE_FILE).read_text())
        if self.fingerprint and state.get("fingerprint") not in ("", None, self.fingerprint):
            raise GrpoTrainingError(f"{folder} belongs to another run (fingerprint {state['fingerprint']} != {self.fingerprint})")
        self.accelerator.load_state(str(folder))
        self.schedule.load_state_dict(state["schedule"])
        self.history = list(state["history"])
        self.step_done = int(state["step"])
        self.resumed_from = str(folder)
        log.info("resumed from %s at step %d", folder, self.step_done)
        return self.step_done

    def save_final(self) -> Path:
        """The trained policy as an AudioLM folder (safetensors) with provenance in its manifest."""
        from models.assemble import write_manifest

        final = self.output_dir / "final"
        acc = self.accelerator
        acc.wait_for_everyone()
        if self._zero_stage() == 3:
            state = acc.get_state_dict(self.module)  # gathers the partitioned weights on rank 0
            if acc.is_main_process:
                state = {k.removeprefix("model."): v for k, v in state.items()}
                self.policy.model.save_pretrained(final, state_dict=state)
                lm = self.policy
                for part in (lm.processor,) if lm.processor is not None else (lm.tokenizer, lm.feature_extractor):
                    part.save_pretrained(final)
        elif acc.is_main_process:
            self.policy.save(final)
        if acc.is_main_process:
            write_manifest(final, self.policy.family, self.policy.window_s, source="grpo-ptr", base=self.policy.source,
                           steps=self.step_done, switch_step=self.schedule.switch_step, fingerprint=self.fingerprint,
                           schedule=self.g.reasoning_schedule)  # fmt: skip
        acc.wait_for_everyone()
        return final


def _group_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    from models.grpo_math import group_indices

    return torch.stack([rewards[idx].double().std() if len(idx) > 1 else torch.tensor(0.0, dtype=torch.float64)
                        for idx in group_indices(group_ids)])  # fmt: skip


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def reward_curve_figure(history: Sequence[dict[str, float]], switch_step: int | None):
    """Mean training reward and accuracy per step (dots) with a 5-step moving average; R_t switch marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [h["step"] for h in history]
    fig = Figure(figsize=(8, 4.5))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "reward", "mean training reward R"), (axes[1], "accuracy", "training accuracy (mean R_o)")):
        values = [h.get(key, float("nan")) for h in history]
        ax.plot(steps, values, "o", markersize=3, alpha=0.5, label="per step")
        ax.plot(steps, moving_average(values, 5), "-", label="5-step moving average")
        if switch_step is not None:
            ax.axvline(switch_step, color="tab:red", linestyle="--", label=f"R_t on (step {switch_step})")
        ax.set(xlabel="step", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("GRPO-PTR training curves")
    fig.tight_layout()
    return fig


# -- building the pieces ----------------------------------------------------------------------------
def on_cpu() -> bool:
    return not torch.cuda.is_available()


def deepspeed_plugin(cfg: Config, hidden_size: int):
    """accelerate's DeepSpeedPlugin from grpo.deepspeed (resolved as the SFT stage resolves it), or None."""
    if not cfg.grpo.deepspeed:
        return None
    from accelerate.utils import DeepSpeedPlugin

    from models.deepspeed_configs import resolve_deepspeed_config, skip_shm_comm_compile

    g = cfg.grpo
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = {"per_device_train_batch_size": g.per_device_train_batch_size, "gradient_accumulation_steps": 1,
            "learning_rate": g.learning_rate, "max_grad_norm": g.max_grad_norm, "weight_decay": g.weight_decay,
            "bf16": cfg.models.dtype == "bfloat16" and not on_cpu()}  # fmt: skip
    config = resolve_deepspeed_config(g.deepspeed, args, world_size=world, hidden_size=hidden_size, on_cpu=on_cpu())
    skip_shm_comm_compile(world)
    return DeepSpeedPlugin(hf_ds_config=config)


def make_accelerator(cfg: Config, policy: AudioLM | None = None):
    from accelerate import Accelerator

    hidden = int(policy.model.config.get_text_config().hidden_size) if policy is not None else 0
    plugin = deepspeed_plugin(cfg, hidden)
    mixed = "bf16" if cfg.models.dtype == "bfloat16" and not on_cpu() and plugin is None else "no"
    # accelerate turns DeepSpeed off when told cpu=True; without CUDA it still runs DeepSpeed on the CPU (gloo).
    return Accelerator(cpu=on_cpu() and plugin is None, deepspeed_plugin=plugin, mixed_precision=mixed)


def load_scorer(cfg: Config, reward_source: str | None) -> ReasoningScorer | None:
    """The reward model GRPO-PTR scores with: none for plain GRPO; `reward_source` when given, else
    RewardModel.for_grpo (rm.scorer_source, or the untrained base with grpo.untrained_rm)."""
    if cfg.grpo.plain_grpo or cfg.grpo.alpha_reasoning == 0:
        return None
    from models.reward_model import RewardModel

    rm = RewardModel.from_source(reward_source, cfg) if reward_source else RewardModel.for_grpo(cfg)
    rm.batch_size = max(rm.batch_size, cfg.grpo.per_device_train_batch_size)  # a step's completions in one call
    if cfg.grpo.shared_prefix:
        from models.grpo_scoring import SharedPrefixRewardScorer

        return SharedPrefixRewardScorer(rm, constrained=cfg.grpo.constrained_reward_answers,
                                        expected=cfg.grpo.reward_scores == "expected")
    return rm


def policy_source(cfg: Config, override: str | None = None) -> str:
    return override or cfg.grpo.policy_source or cfg.models.policy_source


def finished_result(output_dir: Path) -> GrpoResult | None:
    """The result of a finished run in output_dir (reused), or None. Prunes a run finished before pruning existed."""
    done = output_dir / "final" / RESULT_FILE
    if not done.is_file():
        return None
    if is_rank_zero():
        prune_checkpoints(output_dir, keep=1)
    return GrpoResult.from_dict({**json.loads(done.read_text()), "reused": True})


def train_grpo(
    cfg: Config,
    prompts: Sequence[GrpoPrompt],
    output_dir: str | Path,
    *,
    policy: str | None = None,
    reward_source: str | None = None,
    scorer: ReasoningScorer | None = None,
    run_id: str | None = None,
    fingerprint: str = "",
) -> GrpoResult:
    """Train in this process (every rank calls it under torchrun); a finished run in output_dir is reused."""
    output_dir = Path(output_dir)
    if (done := finished_result(output_dir)) is not None:
        return done
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.grpo.seed)
    lm = AudioLM.from_source(policy_source(cfg, policy), cfg)
    accelerator = make_accelerator(cfg, lm)
    if scorer is None:
        scorer = load_scorer(cfg, reward_source)
    run = None
    if run_id and accelerator.is_main_process:
        from emotionthinker.tracking import attach_run

        run = attach_run(cfg, run_id)
    trainer = GrpoPtrTrainer(cfg, lm, GrpoDataset(prompts, cfg), output_dir, scorer=scorer, run=run,
                             accelerator=accelerator, fingerprint=fingerprint)  # fmt: skip
    return trainer.train()


def needs_launcher(cfg: Config) -> bool:
    return bool(cfg.grpo.deepspeed) or cfg.grpo.num_processes > 1


def run_grpo(
    cfg: Config,
    prompts: Sequence[GrpoPrompt],
    output_dir: str | Path,
    *,
    policy: str | None = None,
    reward_source: str | None = None,
    scorer: ReasoningScorer | None = None,
    run_id: str | None = None,
    fingerprint: str = "",
    timeout_s: float | None = None,
) -> GrpoResult:
    """Train here, or under torchrun with grpo.num_processes processes when DeepSpeed or several
    processes are configured (DeepSpeed needs a distributed launcher and must not start in a flow's
    worker thread). A launched run loads the reward model in each rank from `reward_source`. One process at
    a time per output folder."""
    with stage_lock(Path(output_dir), GrpoTrainingError):
        return _run_grpo_locked(cfg, prompts, Path(output_dir), policy=policy, reward_source=reward_source,
                                scorer=scorer, run_id=run_id, fingerprint=fingerprint, timeout_s=timeout_s)  # fmt: skip


def _run_grpo_locked(cfg: Config, prompts: Sequence[GrpoPrompt], output_dir: Path, *, policy: str | None,
                     reward_source: str | None, scorer: ReasoningScorer | None, run_id: str | None,
                     fingerprint: str, timeout_s: float | None) -> GrpoResult:  # fmt: skip
    if not needs_launcher(cfg):
        return train_grpo(cfg, prompts, output_dir, policy=policy, reward_source=reward_source, scorer=scorer,
                          run_id=run_id, fingerprint=fingerprint)  # fmt: skip
    if scorer is not None:
        raise GrpoTrainingError("a launched (multi-process / DeepSpeed) run loads its reward model from reward_source")
    if (done := finished_result(output_dir)) is not None:
        return done
    output_dir.mkdir(parents=True, exist_ok=True)
    write_prompts(output_dir / PROMPTS_FILE, prompts)
    (output_dir / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.grpo.num_processes}",
           "-m", "models.grpo_trainer", "--output-dir", str(output_dir), "--policy", policy_source(cfg, policy),
           "--fingerprint", fingerprint]  # fmt: skip
    cmd += (["--reward", reward_source] if reward_source else []) + (["--run-id", run_id] if run_id else [])
    log_path = output_dir / LAUNCH_LOG
    log.info("launching %s (log: %s)", " ".join(cmd), log_path)
    with open(log_path, "a", encoding="utf-8") as out:
        rc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=timeout_s, stdout=out,
                            stderr=subprocess.STDOUT).returncode  # fmt: skip
    result_file = output_dir / "final" / RESULT_FILE
    if rc != 0 or not result_file.is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise GrpoTrainingError(f"GRPO-PTR under torchrun exited with {rc} (log {log_path}):\n{tail}")
    return GrpoResult.from_dict(json.loads(result_file.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry point: one rank of `train_grpo`, inputs written by `run_grpo` into the output folder."""
    parser = argparse.ArgumentParser(prog="python -m models.grpo_trainer", description=main.__doc__)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reward", default=None)
    parser.add_argument("--fingerprint", default="")
    parser.add_argument("--run-id", default=None)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = Config.model_validate_json((a.output_dir / CONFIG_FILE).read_text())
    result = train_grpo(cfg, read_prompts(a.output_dir / PROMPTS_FILE), a.output_dir, policy=a.policy,
                        reward_source=a.reward, run_id=a.run_id, fingerprint=a.fingerprint)  # fmt: skip
    if is_rank_zero():
        print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through run_grpo
    raise SystemExit(main())
