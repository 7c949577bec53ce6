"""Reasoning reward model (DESIGN.md stage 6): an audio LLM that reads the question, the clip and a
reasoning, and answers the four criterion scores as JSON.

    {"factual_alignment": 4, "interpretative_quality": 3, "caption_completeness": 5, "fluency_and_structural_clarity": 2}

Training data are the (q, r, g) tuples of emotionthinker/cot/degrade.py (gold reasoning scored 5,5,5,5
and degraded variants). Training reuses the SFT trainer (models/sft.py: transformers Trainer, LoRA
merged before saving, checkpoints/resume, DeepSpeed under torchrun): a tuple becomes an SFT sample
whose target is the JSON above.

`RewardModel` scores with greedy generation + `models.rewards.parse_reward_scores`, which never
raises; an answer that holds no valid JSON counts as unparseable and gets the configured fallback
reward (grpo.unparseable_reasoning_score). `RewardModel.from_source` on the untrained base is the
paper's "without trained RM" ablation.

Held-out evaluation: Spearman correlation per criterion (and of R_t) between predicted and target
scores over the parsed answers, the parse rate, and the mean absolute error per criterion; the same
for probability-weighted scores (`RewardModel.expected_scores`, metrics `expected/...`), which stay
informative while a briefly trained model's greedy answer is still the most frequent score vector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotionthinker.config import Config, SftConfig
from emotionthinker.errors import InputError
from emotionthinker.stored_paths import absolute_path, stored_path_from_file
from models.rewards import CRITERIA, Scores, parse_reward_scores, reasoning_reward, validate_reasoning_weights

log = logging.getLogger(__name__)

RM_PROMPT_VERSION = "rm-v1"  # stored with a trained model: scorer and training must render the same prompt
RM_SYSTEM = "You judge explanations of the emotion in a speech clip."
RM_PROMPT = (
    "<audio>Question: {question}\n"
    "Reasoning:\n{reasoning}\n\n"
    "Score this reasoning from 1 (poor) to 5 (excellent) as JSON with the keys factual_alignment (true to the "
    "audio), interpretative_quality (cues tied to the emotion), caption_completeness (cues covered) and "
    "fluency_and_structural_clarity."
)
# Policy output is unbounded; a 200-word reasoning is ~1,300 characters.
MAX_REASONING_CHARS = 4000
SAMPLE_TASK = "reward"
STAGE_OF_METHOD = {"lora": "stage2", "full": "stage1"}  # the SFT trainer's LoRA / full-parameter paths

_SPECIAL_TOKEN_RE = re.compile(r"<\|[^<>|]{0,40}\|>")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_BLOCK_RE = re.compile(r"<answer>.*?</answer>", re.DOTALL)


class RmDataError(InputError):
    """A reward-model tuple file is unreadable or holds no usable tuple."""


# -- prompt and target ------------------------------------------------------------------------------
def _plain(text: str) -> str:
    """Text that cannot break the chat: no audio marker, no special-token spellings (e.g. <|im_end|>)."""
    return _SPECIAL_TOKEN_RE.sub("", str(text)).replace("<audio>", "audio")


def rm_prompt(question: str, reasoning: str) -> str:
    """The user turn the reward model answers: question, clip and reasoning, then the rubric."""
    question = _plain(str(question).replace("<audio>", "")).strip()  # the policy's clip marker: the clip is ours
    reasoning = _plain(reasoning).strip()[:MAX_REASONING_CHARS]
    return RM_PROMPT.format(question=question, reasoning=reasoning)


def target_json(g: dict[str, Any]) -> str:
    """The answer a reward model is trained to give: the four integer scores, criteria in fixed order."""
    return json.dumps({c: int(g[c]) for c in CRITERIA})


def extract_reasoning(completion: str) -> str:
    """What the reward model judges in a policy completion: the think block, else the text without its answer."""
    if not isinstance(completion, str):
        return ""
    m = _THINK_RE.search(completion)
    if m:
        return m.group(1).strip()
    return _ANSWER_BLOCK_RE.sub("", completion).replace("<think>", "").replace("</think>", "").strip()


# -- tuples -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RmTuple:
    id: str
    record_id: str
    split: str
    kind: str  # gold | degraded
    audio: Path
    question: str
    reasoning: str
    scores: dict[str, int]

    def to_sample(self):
        """The SFT sample the trainer sees: RM prompt -> target JSON."""
        from models.sft import SftSample

        meta = {"record_id": self.record_id, "split": self.split, "kind": self.kind, "scores": self.scores}
        return SftSample(self.id, SAMPLE_TASK, self.audio, rm_prompt(self.question, self.reasoning),
                         target_json(self.scores), RM_SYSTEM, meta)  # fmt: skip


def parse_tuple(rec: Any, base_dir: Path) -> RmTuple:
    """One tuple line -> RmTuple; a malformed tuple raises ValueError whose text starts with a reason code."""
    if not isinstance(rec, dict):
        raise ValueError("not_an_object: tuple is not a JSON object")
    missing = [k for k in ("id", "record_id", "q", "r", "g") if k not in rec]
    if missing:
        raise ValueError(f"missing_field: {missing}")
    q, g = rec["q"], rec["g"]
    if not isinstance(q, dict) or not isinstance(q.get("audio_path"), str) or not q["audio_path"].strip():
        raise ValueError("missing_audio_path: q.audio_path must be a non-empty string")
    if not isinstance(rec["r"], str) or not rec["r"].strip():
        raise ValueError("empty_reasoning: r must be a non-empty string")
    if not isinstance(g, dict) or set(g) != set(CRITERIA):
        raise ValueError(f"bad_scores: g must name exactly {list(CRITERIA)}")
    scores = {}
    for c in CRITERIA:
        v = g[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= 5:
            raise ValueError(f"bad_scores: {c}={v!r} is not an integer in 1..5")
        scores[c] = int(v)
    return RmTuple(
        id=str(rec["id"]), record_id=str(rec["record_id"]), split=str(rec.get("split") or "train"),
        kind=str(rec.get("kind") or "degraded"), audio=Path(stored_path_from_file(q["audio_path"], base_dir)),
        question=str(q.get("prompt") or ""), reasoning=rec["r"], scores=scores,
    )  # fmt: skip


def read_rm_tuples(path: str | Path) -> tuple[list[RmTuple], list[dict[str, Any]]]:
    """(tuples, quarantined [{id, reason, detail}]). Failed LLM rewrites (kind 'failed') are skipped.

    A line that is not JSON means a corrupt file and raises RmDataError (file and line named); a tuple
    with a bad field is quarantined with its reason.
    """
    path = Path(path)
    if not path.is_file():
        raise RmDataError(f"reward-model tuple file not found: {path}")
    tuples: list[RmTuple] = []
    quarantined: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RmDataError(f"{path}:{n}: not JSON ({exc})") from None
            if isinstance(rec, dict) and rec.get("kind") == "failed":
                continue
            rid = rec.get("id") if isinstance(rec, dict) else None
            try:
                t = parse_tuple(rec, path.parent)
            except ValueError as exc:
                reason, _, detail = str(exc).partition(": ")
                quarantined.append({"id": rid, "line": n, "reason": reason, "detail": detail})
                continue
            if t.id in seen:
                quarantined.append({"id": t.id, "line": n, "reason": "duplicate_id", "detail": "id seen before"})
                continue
            seen.add(t.id)
            tuples.append(t)
    return tuples, quarantined


def check_tuple_audio(tuples: Sequence[RmTuple], cfg: Config) -> tuple[list[RmTuple], list[dict[str, Any]]]:
    """(usable, quarantined): one header probe per distinct clip (models.sft.check_audio)."""
    from models.sft import check_audio

    by_id = {t.id: t for t in tuples}
    ok, bad = check_audio([t.to_sample() for t in tuples], cfg)
    return [by_id[s.id] for s in ok], bad


def _held_out_record(record_id: str, seed: int, fraction: float) -> bool:
    h = int(hashlib.sha1(f"rm-split:{seed}:{record_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def split_held_out(tuples: Sequence[RmTuple], cfg: Config) -> tuple[list[RmTuple], list[RmTuple], str]:
    """(train, held_out, how). All tuples of one record fall on one side.

    Held out: the records of the rm.eval_splits splits (speaker-disjoint wherever the corpus splits are,
    as the demo corpus and the corpus adapters make them); training: the `train` split. Records of other
    splits (test) are in neither: the policy is evaluated on them later. Without records on both sides
    the records are split by a seeded hash, `eval_fraction` held out ("by_record").
    """
    rm = cfg.rm
    held = [t for t in tuples if t.split in rm.eval_splits]
    train = [t for t in tuples if t.split == "train" and t.split not in rm.eval_splits]
    if held and train:
        return train, held, "by_split"
    usable = [t for t in tuples if t.split == "train" or t.split in rm.eval_splits]  # test records stay out here too
    records = sorted({t.record_id for t in usable})
    if len(records) < 2:
        raise RmDataError(f"{len(records)} train/eval record(s) ({len(tuples)} tuples in all): need at least two to hold one out")
    chosen = {r for r in records if _held_out_record(r, rm.seed, rm.eval_fraction)}
    if not chosen or len(chosen) == len(records):  # tiny sets: still one record on each side
        chosen = {records[0]} if not chosen else chosen - {records[-1]}
    return ([t for t in usable if t.record_id not in chosen], [t for t in usable if t.record_id in chosen], "by_record")


def score_histogram(tuples: Sequence[RmTuple]) -> dict[str, dict[int, int]]:
    return {c: {lv: sum(t.scores[c] == lv for t in tuples) for lv in range(1, 6)} for c in CRITERIA}


def tuples_sha1(tuples: Sequence[RmTuple]) -> str:
    """Content hash of what training sees (ids, prompts, targets, audio paths), in order."""
    h = hashlib.sha1()
    for t in tuples:
        h.update(json.dumps([t.id, str(t.audio), t.question, t.reasoning, t.scores], sort_keys=True).encode() + b"\n")
    return h.hexdigest()


# -- scoring ----------------------------------------------------------------------------------------
@dataclass
class ScoreStats:
    """Running counts of a scorer: a rising unparseable share means the reward model stopped answering JSON."""

    n_scored: int = 0
    n_unparseable: int = 0

    @property
    def parse_rate(self) -> float:
        return 1.0 - self.n_unparseable / self.n_scored if self.n_scored else float("nan")


class RewardModel:
    """Scores reasoning with a (trained or untrained) audio LLM; see the module docstring."""

    def __init__(self, lm, weights: dict[str, float] | None = None, fallback: float = 0.0, max_new_tokens: int = 64,
                 batch_size: int = 8):  # fmt: skip
        self.lm = lm
        self.weights = validate_reasoning_weights(weights or {c: 1 / len(CRITERIA) for c in CRITERIA})
        self.fallback = float(fallback)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        self.stats = ScoreStats()

    @classmethod
    def from_source(cls, source: str, cfg: Config) -> "RewardModel":
        """Any model source (trained RM from the registry or a folder, or an untrained base: the ablation)."""
        from models.backbone import AudioLM

        lm = AudioLM.from_source(source, cfg)
        lm.model.eval()
        return cls(lm, dict(cfg.grpo.reasoning_weights), cfg.grpo.unparseable_reasoning_score, cfg.rm.max_new_tokens,
                   cfg.rm.eval_batch_size)  # fmt: skip

    @classmethod
    def for_grpo(cls, cfg: Config) -> "RewardModel":
        """The scorer GRPO-PTR uses: rm.scorer_source, or the untrained base when grpo.untrained_rm is set."""
        return cls.from_source(base_source(cfg) if cfg.grpo.untrained_rm else cfg.rm.scorer_source, cfg)

    def generate(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[str]:
        """Greedy raw answers, in input order; one question string applies to every clip."""
        if isinstance(questions, str):
            questions = [questions] * len(audios)
        if not (len(audios) == len(questions) == len(reasonings)):
            raise ValueError(f"{len(audios)} audios, {len(questions)} questions, {len(reasonings)} reasonings")
        prompts = [rm_prompt(q, r) for q, r in zip(questions, reasonings)]
        texts: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            gen = self.lm.generate(list(audios[i : i + self.batch_size]), prompts[i : i + self.batch_size],
                                   max_new_tokens=self.max_new_tokens, do_sample=False, system=RM_SYSTEM)  # fmt: skip
            texts += gen.texts
        return texts

    def score_texts(self, texts: Sequence[str]) -> list[Scores | None]:
        """Parse raw answers (never raises) and count the unparseable ones."""
        scores = [parse_reward_scores(t) for t in texts]
        self.stats.n_scored += len(scores)
        self.stats.n_unparseable += sum(s is None for s in scores)
        return scores

    def score(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[Scores | None]:
        """The four scores per reasoning; None where the answer held no valid JSON (counted in `stats`)."""
        return self.score_texts(self.generate(audios, questions, reasonings))

    def expected_scores(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str],
                        greedy: Sequence[Scores | None]) -> list[Scores | None]:  # fmt: skip
        """Probability-weighted scores sum_d d * p(d), d = 1..5, read at each score slot of the model's own
        greedy answer (teacher-forced in canonical form: exactly the distributions greedy decoding chose
        from). Continuous where greedy scores are integers: it shows what a briefly trained model leans
        towards even while its argmax is still the most frequent score. One forward pass per row; None
        where the greedy answer was unparseable (or the tokenizer does not give digits their own token).
        """
        import torch

        slots = score_slots(self.lm.tokenizer)
        out: list[Scores | None] = [None] * len(greedy)
        rows = [i for i, g in enumerate(greedy) if g is not None]
        if slots is None or not rows:
            return out
        if isinstance(questions, str):
            questions = [questions] * len(audios)
        core = self.lm._core()
        for start in range(0, len(rows), self.batch_size):
            part = rows[start : start + self.batch_size]
            completions = [target_json({c: min(5, max(1, round(getattr(greedy[i], c)))) for c in CRITERIA}) for i in part]
            inputs = self.lm.build_chat_inputs([audios[i] for i in part], [rm_prompt(questions[i], reasonings[i]) for i in part],
                                               completions, system=RM_SYSTEM)  # fmt: skip
            width = inputs["completion_mask"].shape[1]
            with torch.no_grad():
                hidden = core.model(**self.lm._forward_inputs(inputs), use_cache=False).last_hidden_state
                values = []
                for position, candidates in slots:  # the token at completion index j is predicted at column -width + j - 1
                    logits = core.lm_head(hidden[:, hidden.shape[1] - width + position - 1]).float()
                    values.append(expected_digit(logits[:, candidates]).cpu())
            for k, i in enumerate(part):
                out[i] = Scores(*(float(v[k]) for v in values))
        return out

    def rewards_from_scores(self, scores: Sequence[Scores | None]) -> list[float]:
        """R_t = sum_j w_j g_j / 5; the fallback where scores are None."""
        return [reasoning_reward(s, self.weights, self.fallback) for s in scores]

    def reasoning_rewards(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[float]:
        """R_t per reasoning (pass `extract_reasoning(completion)` for policy completions)."""
        return self.rewards_from_scores(self.score(audios, questions, reasonings))


def expected_digit(logits):
    """sum_d d * p(d), d = 1..5, per row of logits over the tokens of the digits 1..5."""
    import torch

    return torch.softmax(logits, dim=-1) @ torch.arange(1, 6, dtype=logits.dtype, device=logits.device)


def score_slots(tokenizer) -> list[tuple[int, list[int]]] | None:
    """Per criterion: (index of its digit token in target_json's tokens, token ids of the digits 1..5).

    None when a digit does not get a token of its own (then the slots depend on the other scores).
    """
    skeleton = answer_skeleton(tokenizer)
    return None if skeleton is None else skeleton[1]


def answer_skeleton(tokenizer) -> tuple[list[int], list[tuple[int, list[int]]]] | None:
    """The tokens of target_json with every score 3 and its score slots (see score_slots); None as there."""
    base = {c: 3 for c in CRITERIA}
    encode = lambda g: tokenizer(target_json(g), add_special_tokens=False)["input_ids"]  # noqa: E731
    reference = encode(base)
    slots = []
    for c in CRITERIA:
        variants = [encode({**base, c: d}) for d in range(1, 6)]
        if any(len(v) != len(reference) for v in variants):
            return None
        diff = {j for v in variants for j, (a, b) in enumerate(zip(v, reference)) if a != b}
        if len(diff) != 1:
            return None
        j = diff.pop()
        slots.append((j, [v[j] for v in variants]))
    return reference, slots


# -- evaluation -------------------------------------------------------------------------------------
@dataclass
class RmEvaluation:
    metrics: dict[str, float]  # finite values only (a Spearman over constant predictions is undefined)
    rows: list[dict[str, Any]]  # one per scored tuple
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)  # criterion -> 5x5 [target][predicted]


def spearman(pred: Sequence[float], target: Sequence[float]) -> float:
    """scipy's Spearman rho; NaN when undefined (fewer than 2 pairs, or a constant side)."""
    from scipy.stats import spearmanr

    if len(pred) < 2 or len(set(pred)) < 2 or len(set(target)) < 2:
        return float("nan")
    return float(spearmanr(pred, target).statistic)


def seeded_subset(items: Sequence[Any], n: int, seed: int) -> list[Any]:
    """All items, or a seeded sample of `n` of them kept in their order (0 -> all)."""
    if not n or len(items) <= n:
        return list(items)
    keep = set(random.Random(f"rm-subset:{seed}").sample(range(len(items)), n))
    return [x for i, x in enumerate(items) if i in keep]


def evaluation_metrics(targets: Sequence[dict[str, int]], predicted: Sequence[Scores | None],
                       weights: dict[str, float]) -> tuple[dict[str, float], dict[str, list[list[int]]]]:  # fmt: skip
    """Parse rate; per criterion Spearman, MAE and exact-match rate over parsed answers; Spearman of R_t."""
    pairs = [(t, p) for t, p in zip(targets, predicted) if p is not None]
    n = len(targets)
    metrics: dict[str, float] = {"n": float(n), "n_parsed": float(len(pairs)),
                                 "parse_rate": len(pairs) / n if n else float("nan")}  # fmt: skip
    confusion = {c: [[0] * 5 for _ in range(5)] for c in CRITERIA}
    for c in CRITERIA:
        tv = [float(t[c]) for t, _ in pairs]
        pv = [float(getattr(p, c)) for _, p in pairs]
        metrics[f"spearman/{c}"] = spearman(pv, tv)
        if pairs:
            metrics[f"mae/{c}"] = sum(abs(a - b) for a, b in zip(pv, tv)) / len(pairs)
            metrics[f"exact/{c}"] = sum(round(a) == b for a, b in zip(pv, tv)) / len(pairs)
        for a, b in zip(pv, tv):
            confusion[c][int(b) - 1][int(round(a)) - 1] += 1
    w = validate_reasoning_weights(weights)
    rt_target = [sum(w[c] * t[c] for c in CRITERIA) / 5 for t, _ in pairs]
    rt_pred = [reasoning_reward(p, w) for _, p in pairs]
    metrics["spearman/reasoning_reward"] = spearman(rt_pred, rt_target)
    per_criterion = [metrics[f"spearman/{c}"] for c in CRITERIA if math.isfinite(metrics[f"spearman/{c}"])]
    metrics["spearman/mean"] = sum(per_criterion) / len(per_criterion) if per_criterion else float("nan")
    return {k: v for k, v in metrics.items() if math.isfinite(v)}, confusion


def evaluate_reward_model(rm: RewardModel, tuples: Sequence[RmTuple], cfg: Config) -> RmEvaluation:
    """Score held-out tuples (greedy) and compare with their target scores; see `evaluation_metrics`."""
    from emotionthinker.audio import load_audio

    audio_cache: dict[Path, Any] = {}
    for t in tuples:  # five tuples share a clip: decode it once
        if t.audio not in audio_cache:
            audio_cache[t.audio] = load_audio(t.audio, cfg.audio)
    started = time.perf_counter()
    audios = [audio_cache[t.audio] for t in tuples]
    questions, reasonings = [t.question for t in tuples], [t.reasoning for t in tuples]
    texts = rm.generate(audios, questions, reasonings)
    predicted = rm.score_texts(texts)
    targets = [t.scores for t in tuples]
    metrics, confusion = evaluation_metrics(targets, predicted, rm.weights)
    metrics["seconds_per_tuple"] = (time.perf_counter() - started) / max(1, len(tuples))
    expected: list[Scores | None] = [None] * len(tuples)
    if cfg.rm.eval_expected:
        expected = rm.expected_scores(audios, questions, reasonings, predicted)
        em, _ = evaluation_metrics(targets, expected, rm.weights)
        metrics |= {f"expected/{k}": v for k, v in em.items() if k.startswith(("spearman/", "mae/"))}
    rows = [
        {"id": t.id, "record_id": t.record_id, "kind": t.kind, "target": t.scores,
         "predicted": asdict(p) if p is not None else None, "raw_output": text,
         "target_reward": reasoning_reward(Scores(*(float(t.scores[c]) for c in CRITERIA)), rm.weights),
         "predicted_reward": reasoning_reward(p, rm.weights, rm.fallback),
         "expected": [round(v, 3) for v in e.as_tuple()] if e is not None else None, "reasoning": t.reasoning}
        for t, p, e, text in zip(tuples, predicted, expected, texts)
    ]  # fmt: skip
    return RmEvaluation(metrics, rows, confusion)


# -- training ---------------------------------------------------------------------------------------
def base_source(cfg: Config) -> str:
    return cfg.rm.base_source or cfg.models.reward_source


def output_root(cfg: Config) -> Path:
    return cfg.stage_dir(cfg.rm.output_dir, "reward_model")


def trainer_config(cfg: Config) -> Config:
    """`cfg` with its `sft` section set from `rm`, so the SFT trainer trains the reward model as configured."""
    rm = cfg.rm
    stage = STAGE_OF_METHOD[rm.method]
    same = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "per_device_batch_size",
            "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "max_grad_norm",
            "gradient_checkpointing", "logging_steps", "save_steps", "save_total_limit", "deepspeed", "num_processes",
            "seed")  # fmt: skip
    values = {k: getattr(rm, k) for k in same}
    values |= {f"{stage}_learning_rate": rm.learning_rate, f"{stage}_epochs": rm.epochs, f"{stage}_max_steps": rm.max_steps,
               "stage1_encoder_layers": rm.encoder_layers, "stages": [stage]}  # fmt: skip
    sft = SftConfig.model_validate({**cfg.sft.model_dump(), **values})
    return cfg.model_copy(update={"sft": sft})


_NOT_TRAINING = {"scorer_source", "output_dir", "eval_splits", "eval_fraction", "eval_max_tuples", "eval_batch_size",
                 "eval_base", "eval_expected", "max_new_tokens", "sample_predictions", "register_model", "registered_model_name",
                 "registered_alias", "num_processes", "save_steps", "save_total_limit", "logging_steps"}  # fmt: skip


def training_fingerprint(train: Sequence[RmTuple], cfg: Config) -> str:
    from models.checkpoints import fingerprint

    rm = {k: v for k, v in cfg.rm.model_dump(mode="json").items() if k not in _NOT_TRAINING}
    return fingerprint({"base": base_source(cfg), "train": tuples_sha1(train), "rm": rm, "prompt": RM_PROMPT_VERSION,
                        "models": cfg.models.model_dump(mode="json"), "profile": cfg.profile})  # fmt: skip


def train_reward_model(train: Sequence[RmTuple], cfg: Config, run=None):
    """Train on `train` into <output_root>/rm-<method>-<fingerprint>/final (an AudioLM save, safetensors).

    Returns models.sft.StageResult. A finished folder with the same fingerprint is reused; an
    interrupted one resumes from its last checkpoint. `run` (a StageRun) gets train/* metrics per step
    when training runs in this process; under torchrun they are logged from the result afterwards.
    """
    from models.assemble import write_manifest
    from models.checkpoints import stage_dir, stage_lock
    from models.sft import SftTrainingError, mlflow_step_logger, needs_launcher, run_stage, train_stage

    if not train:
        raise RmDataError("no training tuples")
    tcfg = trainer_config(cfg)
    stage = STAGE_OF_METHOD[cfg.rm.method]
    samples = [t.to_sample() for t in train]
    if cfg.rm.max_train_tuples:
        samples = samples[: cfg.rm.max_train_tuples]
    fp = training_fingerprint(train[: len(samples)], cfg)
    folder = stage_dir(output_root(cfg), f"rm-{cfg.rm.method}", fp)
    base = base_source(cfg)
    if needs_launcher(tcfg):
        result = run_stage(stage, base, samples, tcfg, folder, run_id=None, fingerprint=fp)
        if run is not None and not result.reused:
            for step, loss in result.losses:
                run.log_metrics({"train/loss": loss}, step=step)
    else:
        callbacks = [mlflow_step_logger(run, "train")] if run is not None else []
        with stage_lock(folder, SftTrainingError):  # run_stage locks the launched path itself
            result = train_stage(stage, base, samples, tcfg, folder, run_id=None, fingerprint=fp, callbacks=callbacks)
    final = Path(result.model_dir)
    manifest = json.loads((final / "audiolm.json").read_text())
    if manifest.get("source") != "reward_model":  # say what this model is and which prompt it answers
        write_manifest(final, manifest["family"], manifest["window_s"], source="reward_model", base=base,
                       method=cfg.rm.method, prompt_version=RM_PROMPT_VERSION, fingerprint=fp)  # fmt: skip
    return result


# -- figures ----------------------------------------------------------------------------------------
def loss_figure(losses: Sequence[tuple[int, float]]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, marker="o", markersize=3)
    ax.set(xlabel="step", ylabel="training loss", title="reward model")
    ax.grid(alpha=0.3)
    return fig


def confusion_figure(confusion: dict[str, list[list[int]]], metrics: dict[str, float]):
    """Target (rows) vs predicted (columns) score counts per criterion, Spearman in the title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(CRITERIA), 3.4))
    for i, c in enumerate(CRITERIA):
        ax = fig.add_subplot(1, len(CRITERIA), i + 1)
        m = confusion.get(c, [[0] * 5 for _ in range(5)])
        ax.imshow(m, cmap="Blues", origin="lower", extent=(0.5, 5.5, 0.5, 5.5))
        for t in range(5):
            for p in range(5):
                if m[t][p]:
                    ax.text(p + 1, t + 1, str(m[t][p]), ha="center", va="center", fontsize=7)
        rho = metrics.get(f"spearman/{c}")
        ax.set_title(f"{c.replace('_', ' ')}\nrho={rho:.2f}" if rho is not None else c.replace("_", " "), fontsize=8)
        ax.set(xlabel="predicted", ylabel="target" if i == 0 else None, xticks=range(1, 6), yticks=range(1, 6))
    fig.tight_layout()
    return fig


def kind_counts(tuples: Sequence[RmTuple]) -> dict[str, int]:
    return dict(Counter(t.kind for t in tuples))


# -- the flow's steps -------------------------------------------------------------------------------
@dataclass
class RmData:
    path: Path
    train: list[RmTuple]
    held_out: list[RmTuple]
    split_by: str  # by_split | by_record
    quarantined: list[dict[str, Any]]
    data_version: dict[str, str]
    n_read: int

    def counts(self) -> dict[str, Any]:
        return {"read": self.n_read, "train": len(self.train), "held_out": len(self.held_out),
                "quarantined": len(self.quarantined), "train_kinds": kind_counts(self.train),
                "train_records": len({t.record_id for t in self.train}),
                "held_out_records": len({t.record_id for t in self.held_out})}  # fmt: skip


def data_version(path: Path) -> dict[str, str]:
    """sha1 of the tuple file always; the DVC md5 of its folder too when a `<folder>.dvc` pointer sits beside it."""
    from models.checkpoints import files_sha1

    version = {"rm_tuples_sha1": files_sha1([path])}
    pointer = path.parent.with_name(path.parent.name + ".dvc")
    if pointer.is_file():
        from emotionthinker.versioning import read_dvc_md5

        try:
            version["rm_tuples_dvc_md5"] = read_dvc_md5(pointer)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("unreadable DVC pointer %s: %s", pointer, exc)
    return version


def load_rm_data(path: str | Path, cfg: Config) -> RmData:
    """Read, quarantine (bad fields, unusable audio), gate on validation.max_failure_rate, split held-out."""
    from emotionthinker.validation import ValidationFailed

    path = absolute_path(path)
    tuples, bad_rows = read_rm_tuples(path)
    usable, bad_audio = check_tuple_audio(tuples, cfg)
    quarantined = bad_rows + bad_audio
    n_read = len(tuples) + len(bad_rows)
    if n_read and len(quarantined) / n_read > cfg.validation.max_failure_rate:
        raise ValidationFailed("reward_model tuples", len(quarantined) / n_read, cfg.validation.max_failure_rate,
                               Counter(q["reason"] for q in quarantined))  # fmt: skip
    if not usable:
        raise RmDataError(f"{path} holds no usable tuple")
    train, held_out, split_by = split_held_out(usable, cfg)
    return RmData(path, train, held_out, split_by, quarantined, data_version(path), n_read)


def log_training(run, result, data: RmData) -> None:
    summary = {"runtime_s": result.runtime_s, "global_step": result.global_step}
    summary |= {k: v for k, v in (("train_loss", result.train_loss), ("first_loss", result.first_loss),
                                  ("last_loss", result.last_loss)) if v is not None}  # fmt: skip
    run.log_metrics({f"train/{k}": v for k, v in summary.items()}, step=result.global_step)
    run.log_params({f"parameters.{k}": v for k, v in result.parameters.items()}
                   | {"resumed_from": result.resumed_from or "", "reused": result.reused, "model_dir": result.model_dir})
    run.log_figure(loss_figure(result.losses), "train_loss.png")


def evaluate_logged(model_source: str, data: RmData, cfg: Config, run, prefix: str) -> dict[str, float]:
    """Held-out evaluation of a model: metrics as <prefix>/..., sample predictions table, confusion image."""
    held = seeded_subset(data.held_out, cfg.rm.eval_max_tuples, cfg.rm.seed)
    result = evaluate_reward_model(RewardModel.from_source(model_source, cfg), held, cfg)
    if run is not None:
        run.log_metrics({f"{prefix}/{k}": v for k, v in result.metrics.items()})
        if cfg.rm.sample_predictions:
            rows = seeded_subset(result.rows, cfg.rm.sample_predictions, cfg.rm.seed)
            run.log_table(rows, f"{prefix}_predictions.json")
        run.log_figure(confusion_figure(result.confusion, result.metrics), f"{prefix}_confusion.png")
    return result.metrics


def register_logged(model_dir: str, cfg: Config, run, metrics: dict[str, float], data: RmData) -> dict[str, str]:
    from emotionthinker.registry import register_model
    from emotionthinker.tracking import git_sha

    name, alias = cfg.rm.registered_model_name, cfg.rm.registered_alias
    tags = {"profile": cfg.profile, "git_sha": git_sha(), "prompt_version": RM_PROMPT_VERSION, **data.data_version,
            **{f"eval.{k}": f"{v:.4f}" for k, v in metrics.items()}}  # fmt: skip
    version = register_model(cfg, run.run_id, model_dir, name, alias, tags=tags,
                             description="Reasoning reward model: four 1-5 criterion scores as JSON (DESIGN.md stage 6).")
    run.set_tags({"registered_model": f"{name}/{version}", "registered_alias": alias})
    return {"name": name, "version": version, "alias": alias, "source": f"registry:{name}@{alias}"}
