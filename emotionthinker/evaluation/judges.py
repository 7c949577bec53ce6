"""Reasoning judges: each scores a model's reasoning on the paper's four criteria (1-5), named in the results.

    llm      an OpenAI-compatible chat model given the rubric below (the paper's Appendix E, in our
             words), the clip's reference facts and the reasoning; answers JSON. Replies are parsed
             with models.rewards.parse_reward_scores (fences, prose, key spellings tolerated); a reply
             without four valid scores is retried with a note, transport errors are retried with
             backoff (emotionthinker.cot.client), and a clip that still fails is counted by reason.
    rm       the trained reward model (models/reward_model.py): the same JSON from the audio itself.
    factual  a deterministic check of the claims the reasoning makes (emotionthinker.cot.checks)
             against the clip's measured annotations; scores factual_alignment and
             caption_completeness only (the other two criteria are not its to judge).

Factual judge mapping. Claims about pitch, energy and speed level, intonation, stressed words,
gender, age and the quoted transcript are parsed and compared with the annotation. Per attribute: any
contradicted claim -> contradicted; else any supported claim -> supported; else (the annotation cannot
check it: age without an age model, a contour marked uncertain/too_short, no stressed words measured)
unverifiable, which neither credits nor costs.
    factual_alignment    = 1 + 4 * supported / (supported + contradicted) attributes;
                           1 when the reasoning makes no verifiable claim (nothing in it matches the audio)
    caption_completeness = 1 + 4 * (attributes mentioned among those the annotation determines)
                           / (attributes the annotation determines); 1 when nothing is mentioned
An empty or missing reasoning scores 1 on both.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from emotionthinker.config import Config, CotConfig
from emotionthinker.cot.checks import clean_response, compare_claims, parse_claims
from emotionthinker.cot.lexicon import LEVEL_ATTRIBUTES, UNDETERMINED_INTONATION
from models.rewards import CRITERIA, SCORE_MAX, SCORE_MIN, Scores, parse_reward_scores

log = logging.getLogger(__name__)

JUDGES: tuple[str, ...] = ("llm", "rm", "factual")
SHORT = {"factual_alignment": "FA", "interpretative_quality": "IQ", "caption_completeness": "CC",
         "fluency_and_structural_clarity": "FS"}  # fmt: skip
JUDGE_PROMPT_VERSION = "judge-v1"
FACTUAL_ATTRIBUTES: tuple[str, ...] = LEVEL_ATTRIBUTES + ("intonation", "stressed_words", "gender", "age_level", "transcript")


class JudgeError(RuntimeError):
    """A judge cannot run at all (no endpoint configured, no reward model available)."""


@dataclass
class JudgeResult:
    name: str
    scores: list[dict[str, float] | None]  # per row: criterion -> 1..5 (only the criteria this judge scores)
    failures: Counter = field(default_factory=Counter)  # reason -> clips that got no score
    details: list[dict[str, Any]] = field(default_factory=list)  # per row, judge-specific evidence
    info: dict[str, Any] = field(default_factory=dict)  # e.g. retries, endpoint model

    @property
    def n_scored(self) -> int:
        return sum(s is not None for s in self.scores)

    def means(self) -> dict[str, float]:
        """Mean per criterion over scored rows, and their mean ('mean') over the criteria scored."""
        out: dict[str, float] = {}
        for c in CRITERIA:
            values = [s[c] for s in self.scores if s is not None and s.get(c) is not None]
            if values:
                out[c] = sum(values) / len(values)
        if out:
            out["mean"] = sum(out.values()) / len(out)
        return out

    def metrics(self) -> dict[str, float]:
        prefix = f"judge/{self.name}"
        out = {f"{prefix}/{k}": v for k, v in self.means().items()}
        out[f"{prefix}/n_scored"] = float(self.n_scored)
        out[f"{prefix}/failures"] = float(sum(self.failures.values()))
        return out


def reasoning_of(output: str | None) -> str:
    """What a judge reads: the think block, else the output without its answer (tags removed)."""
    return clean_response(output or "")


def _annotations(record: dict[str, Any]) -> dict[str, Any] | None:
    ann = record.get("annotations")
    return ann if isinstance(ann, dict) and ann else None


# -- factual -------------------------------------------------------------------------------------------
def determinable_attributes(annotations: dict[str, Any], transcription: str | None) -> set[str]:
    """Attributes the annotation gives a checkable value for."""
    out = {a for a in LEVEL_ATTRIBUTES if annotations.get(a) not in (None, "", "unknown")}
    if annotations.get("intonation") not in (None, "") and annotations.get("intonation") not in UNDETERMINED_INTONATION:
        out.add("intonation")
    if annotations.get("stressed_words"):
        out.add("stressed_words")
    if annotations.get("gender") in ("Male", "Female"):
        out.add("gender")
    if annotations.get("age_level") not in (None, "", "unknown"):
        out.add("age_level")
    if (transcription or "").strip():
        out.add("transcript")
    return out


def factual_scores(reasoning: str, annotations: dict[str, Any], transcription: str | None) -> tuple[dict[str, float], dict[str, Any]]:
    """(scores, evidence) of one reasoning; see the module docstring for the mapping."""
    claims = parse_claims(reasoning, transcription) if reasoning.strip() else []
    check = compare_claims(claims, annotations, transcription)
    status: dict[str, str] = {}
    for v in check.verdicts:
        a = v.claim.attribute
        if v.status == "contradicted" or status.get(a) == "contradicted":
            status[a] = "contradicted"
        elif v.status == "supported" or status.get(a) == "supported":
            status[a] = "supported"
        else:
            status[a] = "unverifiable"
    supported = sorted(a for a, s in status.items() if s == "supported")
    contradicted = sorted(a for a, s in status.items() if s == "contradicted")
    verifiable = len(supported) + len(contradicted)
    fa = SCORE_MIN + (SCORE_MAX - SCORE_MIN) * len(supported) / verifiable if verifiable else SCORE_MIN
    available = determinable_attributes(annotations, transcription)
    covered = available & set(status)
    cc = SCORE_MIN + (SCORE_MAX - SCORE_MIN) * len(covered) / len(available) if available else SCORE_MIN
    evidence = {
        "supported": supported, "contradicted": contradicted,
        "unverifiable": sorted(a for a, s in status.items() if s == "unverifiable"),
        "determinable": sorted(available), "n_claims": len(claims),
    }  # fmt: skip
    return {"factual_alignment": fa, "caption_completeness": cc}, evidence


def factual_judge(rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> JudgeResult:
    result = JudgeResult("factual", [])
    for row, rec in zip(rows, records, strict=True):
        ann = _annotations(rec)
        if ann is None:
            result.scores.append(None)
            result.details.append({})
            result.failures["no_annotations"] += 1
            continue
        scores, evidence = factual_scores(reasoning_of(row.get("output")), ann, rec.get("transcription"))
        result.scores.append(scores)
        result.details.append(evidence)
    return result


# -- LLM -----------------------------------------------------------------------------------------------
JUDGE_SYSTEM = (
    "You grade written explanations of the emotion heard in a short speech recording. You cannot hear "
    "the recording; you are given what was measured on it and must grade strictly against that."
)
RUBRIC = """Grade the explanation on four criteria, each an integer from 1 (very poor) to 5 (excellent):

- factual_alignment: do the speaker traits (gender, age), the spoken words and the prosodic cues
  (pitch, loudness/energy, speaking rate, intonation contour, emphasised words) it describes agree
  with the measurements below? Contradictions and invented cues lower this score.
- interpretative_quality: does it connect the cues to an emotion clearly and convincingly, with
  reasoning a listener could follow, rather than just listing cues or asserting a label?
- caption_completeness: how much of the relevant acoustic and semantic information (the
  measurements and the content of the words) does it take into account?
- fluency_and_structural_clarity: is it grammatical, readable and logically ordered?

Grade the explanation itself; a wrong final answer matters only as far as the explanation misreads
the evidence. Reply with one JSON object and nothing else, for example:
{"factual_alignment": 3, "interpretative_quality": 4, "caption_completeness": 2, "fluency_and_structural_clarity": 5}"""
UNPARSEABLE = "its reply was not one JSON object scoring the four criteria from 1 to 5"


def reference_facts(record: dict[str, Any]) -> str:
    """What the judge may check the explanation against: label, words and the measured annotation."""
    lines = [f"- reference emotion label: {record.get('emotion', 'unknown')}"]
    if (record.get("transcription") or "").strip():
        lines.append(f'- transcription: "{record["transcription"].strip()}"')
    ann = _annotations(record) or {}
    names = {"gender": "speaker gender", "age_level": "speaker age group", "pitch_level": "pitch level",
             "energy_level": "energy level", "speed_level": "speaking rate", "intonation": "intonation contour"}  # fmt: skip
    for key, name in names.items():
        value = ann.get(key)
        if value in (None, "", "unknown") or (key == "intonation" and value in UNDETERMINED_INTONATION):
            value = "not determined"
        lines.append(f"- {name}: {value}")
    stressed = ann.get("stressed_words") or []
    lines.append(f"- emphasised words: {', '.join(stressed) if stressed else 'not determined'}")
    return "\n".join(lines)


def judge_messages(record: dict[str, Any], output: str) -> list[dict[str, str]]:
    from emotionthinker.labels import USER_PROMPT
    from models.rewards import extract_answer

    question = USER_PROMPT.replace("<audio>", "").strip()
    answer = extract_answer(output or "") or "(none)"
    user = (f"Question the model answered about the recording:\n{question}\n\nMeasured on the recording:\n"
            f"{reference_facts(record)}\n\nThe model's explanation:\n\"\"\"\n{reasoning_of(output) or '(empty)'}\n\"\"\"\n"
            f"The model's final answer: {answer}\n\n{RUBRIC}")  # fmt: skip
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def judge_endpoint(cfg: Config) -> CotConfig:
    """The judge's endpoint: eval.judge_* fields, falling back to the cot endpoint."""
    e = cfg.eval
    return cfg.cot.model_copy(update={
        "base_url": e.judge_base_url or cfg.cot.base_url, "model": e.judge_model or cfg.cot.model,
        "api_key_env": e.judge_api_key_env or cfg.cot.api_key_env, "temperature": e.judge_temperature,
        "max_tokens": e.judge_max_tokens, "max_retries": e.judge_max_retries, "timeout_s": e.judge_timeout_s,
    })  # fmt: skip


def _check_scores(text: str) -> list[str]:
    return [] if parse_reward_scores(text) is not None else [UNPARSEABLE]


def llm_judge(
    rows: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    cfg: Config,
    cache_path=None,
    environ: dict[str, str] | None = None,
    sleep=None,
) -> JudgeResult:
    """Score each row with the configured OpenAI-compatible endpoint; failures are counted, never raised."""
    import time

    from emotionthinker.cot.cache import ResponseCache
    from emotionthinker.cot.client import CallFailed, ChatClient, CotEndpointError, retry_counts
    from emotionthinker.cot.prompt import prompt_hash

    endpoint = judge_endpoint(cfg)
    if not endpoint.base_url:
        raise JudgeError("the llm judge needs an endpoint: set eval.judge_base_url (or cot.base_url)")
    cache = ResponseCache(cache_path) if cache_path else None
    client = ChatClient(endpoint, cache=cache, environ=environ, sleep=sleep or time.sleep)
    result = JudgeResult("llm", [None] * len(rows), details=[{} for _ in rows],
                         info={"model": endpoint.model, "prompt_version": JUDGE_PROMPT_VERSION})  # fmt: skip
    retries: Counter = Counter()
    refused: list[str] = []
    lock = threading.Lock()  # counters are shared by the worker threads

    def fail(i: int, reason: str, detail: dict[str, Any] | None = None) -> None:
        with lock:
            result.failures[reason] += 1
        result.details[i] = {"error": reason, **(detail or {})}

    def one(i: int) -> None:
        if refused:
            fail(i, "endpoint_refused")
            return
        messages = judge_messages(records[i], rows[i].get("output") or "")
        key = prompt_hash(messages, endpoint.model, endpoint.temperature, JUDGE_PROMPT_VERSION)
        try:
            call = client.complete(messages, check=_check_scores, cache_key=key)
        except CallFailed as exc:
            with lock:
                retries.update(retry_counts(exc.history))
            fail(i, "unparseable" if exc.reason.startswith("rejected") else exc.reason, {"attempts": exc.attempts})
            return
        except CotEndpointError as exc:  # bad key or model: every further call would fail the same way
            refused.append(str(exc))
            fail(i, "endpoint_refused")
            return
        with lock:
            retries.update(retry_counts(call.history))
        scores = parse_reward_scores(call.text)
        result.scores[i] = dict(zip(CRITERIA, scores.as_tuple())) if scores else None
        result.details[i] = {"attempts": call.attempts, "cached": call.cached}

    try:
        with ThreadPoolExecutor(max_workers=cfg.eval.judge_concurrency) as pool:
            list(pool.map(one, range(len(rows))))
    finally:
        client.close()
        if cache is not None:
            cache.close()
    result.info["retries"] = dict(retries)
    if refused:
        result.info["endpoint_error"] = refused[0]
        log.error("llm judge: %s", refused[0])
    return result


# -- reward model --------------------------------------------------------------------------------------
def rm_judge(rows: Sequence[dict[str, Any]], cfg: Config, source: str | None = None, lm=None) -> JudgeResult:
    """Score with the reward model of `source` (default eval.rm_source, else rm.scorer_source)."""
    try:
        from models.reward_model import RewardModel
    except ImportError as exc:  # pragma: no cover - the module ships with the reward-model issue
        raise JudgeError(f"the rm judge needs models/reward_model.py ({exc})") from None
    from emotionthinker.audio import AudioError, load_audio
    from emotionthinker.labels import USER_PROMPT

    source = source or cfg.eval.rm_source or cfg.rm.scorer_source
    rm = RewardModel.from_source(source, cfg) if lm is None else RewardModel(lm, dict(cfg.grpo.reasoning_weights))
    result = JudgeResult("rm", [None] * len(rows), details=[{} for _ in rows], info={"source": source})
    batch = max(1, cfg.eval.batch_size)
    for start in range(0, len(rows), batch):
        idx, audios = [], []
        for i in range(start, min(start + batch, len(rows))):
            try:
                audios.append(load_audio(rows[i]["audio_path"], cfg.audio))
                idx.append(i)
            except AudioError as exc:
                result.failures[exc.reason] += 1
        if not idx:
            continue
        texts = rm.generate(audios, [USER_PROMPT] * len(idx), [reasoning_of(rows[i].get("output")) for i in idx])
        for i, text in zip(idx, texts):
            scores: Scores | None = parse_reward_scores(text)
            result.details[i] = {"raw": text[:300]}
            if scores is None:
                result.failures["unparseable"] += 1
            else:
                result.scores[i] = dict(zip(CRITERIA, scores.as_tuple()))
    return result


def check_judges(names: Sequence[str], cfg: Config) -> None:
    """Fail before hours of generation, not after: unknown judge names, an LLM judge without an endpoint,
    a reward-model judge whose source does not parse."""
    from models.sources import parse_source

    unknown = [n for n in names if n not in JUDGES]
    if unknown:
        raise JudgeError(f"unknown judge(s) {unknown}; known: {', '.join(JUDGES)}")
    if "llm" in names and not judge_endpoint(cfg).base_url:
        raise JudgeError("the llm judge needs an endpoint: set eval.judge_base_url (or cot.base_url)")
    if "rm" in names:
        parse_source(cfg.eval.rm_source or cfg.rm.scorer_source)


def run_judges(
    names: Sequence[str],
    rows: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    cfg: Config,
    cache_path=None,
) -> dict[str, JudgeResult]:
    """Run each named judge over the first eval.judge_max_clips rows (all when 0)."""
    check_judges(names, cfg)
    n = cfg.eval.judge_max_clips or len(rows)
    rows, records = list(rows)[:n], list(records)[:n]
    out: dict[str, JudgeResult] = {}
    for name in dict.fromkeys(names):
        if name == "factual":
            out[name] = factual_judge(rows, records)
        elif name == "llm":
            out[name] = llm_judge(rows, records, cfg, cache_path=cache_path)
        else:
            out[name] = rm_judge(rows, cfg)
        log.info("judge %s: %d scored, failures %s, means %s", name, out[name].n_scored, dict(out[name].failures),
                 {k: round(v, 3) for k, v in out[name].means().items()})  # fmt: skip
    return out
