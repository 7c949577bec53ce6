"""Champion/challenger promotion in the MLflow Model Registry (DESIGN.md stage 9).

A new model version gets the `challenger` alias when it is registered; `promote` moves `champion` to
it only when it beats the current champion on the gate metric, measured on the SAME evaluation data.
The metrics come from evaluation runs in MLflow, found by the tags of `evaluation_tags` (stage
"evaluate", model name and version, evaluation data version); the evaluate flow sets them. A version
without an evaluation on that data is evaluated through `evaluate_fn` when one is given, else the
decision says which evaluation is missing and nothing moves.

Every decision, including "kept" and "missing evaluation", is recorded as an MLflow run (stage
"promote") with both metrics, the data version and the evaluation run ids, and as tags on the model
versions involved. Promotion is a read-decide-write sequence on shared state, so it runs under a lock:
here a file lock next to the MLflow store (processes and threads on one machine, no server needed);
flows/promote.py adds a Prefect global concurrency limit (machines sharing a Prefect server). The alias
is moved only if the champion is still the version the decision compared against.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotionthinker.config import Config
from emotionthinker.locks import file_lock
from emotionthinker.services import local_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

EVAL_STAGE = "evaluate"
PROMOTE_STAGE = "promote"
TAG_MODEL_NAME = "model_name"
TAG_MODEL_VERSION = "model_version"
TAG_EVAL_DATA = "eval_data_version"
TAG_DATA_VERSION = "data_version"  # tracking.data_version_tags: JSON of {dataset: md5}; the fallback
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")  # also keeps MLflow filter strings free of quotes

# (model name, version, evaluation data version or None for "the current evaluation data") -> anything.
# It must leave a FINISHED evaluation run tagged with `evaluation_tags(...)` and the gate metric.
EvaluateFn = Callable[[str, str, "str | None"], Any]


class PromotionError(RuntimeError):
    """Promotion could not run (bad model name, registry unreachable, lock not acquired in time)."""


class Decision(str, Enum):
    PROMOTED = "promoted"  # challenger won: champion moved to it
    FIRST_CHAMPION = "first_champion"  # no champion yet: the challenger became champion
    KEPT = "kept"  # challenger did not win: champion unchanged
    ALREADY_CHAMPION = "already_champion"  # challenger and champion are the same version
    NO_CHALLENGER = "no_challenger"
    MISSING_EVALUATION = "missing_evaluation"  # no comparable evaluation: nothing moved
    CHAMPION_CHANGED = "champion_changed"  # champion moved by someone outside the lock meanwhile: nothing moved

    @property
    def moves_champion(self) -> bool:
        return self in (Decision.PROMOTED, Decision.FIRST_CHAMPION)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation run of one model version."""

    run_id: str
    version: str
    eval_data_version: str
    metrics: dict[str, float]
    start_time: int


@dataclass
class Evidence:
    version: str
    metric: float | None = None
    eval_run_id: str | None = None


@dataclass
class PromotionDecision:
    model_name: str
    decision: Decision
    gate_metric: str
    min_delta: float
    greater_is_better: bool
    eval_data_version: str | None
    challenger: Evidence | None
    champion: Evidence | None  # the champion before this decision
    champion_after: str | None
    reason: str
    run_id: str | None = None  # the MLflow run recording this decision
    lock_wait_s: float = 0.0
    decided_at: float = field(default_factory=time.time)

    @property
    def moved(self) -> bool:
        return self.decision.moves_champion

    @property
    def delta(self) -> float | None:
        """Improvement of the challenger over the champion (positive = better), on the gate metric."""
        if self.challenger is None or self.champion is None:
            return None
        if self.challenger.metric is None or self.champion.metric is None:
            return None
        diff = self.challenger.metric - self.champion.metric
        return diff if self.greater_is_better else -diff

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = self.decision.value
        out["moved"] = self.moved
        out["delta"] = self.delta
        out["summary"] = self.summary()
        return out

    def summary(self) -> str:
        def show(e: Evidence | None) -> str:
            if e is None:
                return "-"
            metric = "no evaluation" if e.metric is None else f"{self.gate_metric}={e.metric:.4f}"
            return f"v{e.version} ({metric})"

        return (f"{self.model_name}: {self.decision.value} - challenger {show(self.challenger)}, champion "
                f"{show(self.champion)}, data {self.eval_data_version or '-'}; champion now "
                f"{'v' + self.champion_after if self.champion_after else '-'}. {self.reason}")  # fmt: skip


def evaluation_tags(model_name: str, version: str | int, eval_data_version: str) -> dict[str, str]:
    """Tags an evaluation run must carry for promotion to find it (set by the evaluate flow)."""
    return {"stage": EVAL_STAGE, TAG_MODEL_NAME: model_name, TAG_MODEL_VERSION: str(version),
            TAG_EVAL_DATA: eval_data_version}  # fmt: skip


def _check_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise PromotionError(f"invalid registered model name {name!r}")
    return name


# -- reading the registry and the evaluation runs --------------------------------------------------
def alias_version(client: "MlflowClient", model_name: str, alias: str) -> str | None:
    """Version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def find_evaluations(client: "MlflowClient", model_name: str, version: str) -> list[Evaluation]:
    """Finished evaluation runs of one model version, newest first, in any active experiment."""
    from mlflow.entities import ViewType

    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiment_ids:
        return []
    query = (f"tags.stage = '{EVAL_STAGE}' and tags.{TAG_MODEL_NAME} = '{_check_name(model_name)}' "
             f"and tags.{TAG_MODEL_VERSION} = '{int(version)}' and attributes.status = 'FINISHED'")  # fmt: skip
    runs = client.search_runs(experiment_ids, query, order_by=["attributes.start_time DESC"], max_results=1000)
    out = []
    for run in runs:
        tags = run.data.tags
        data = tags.get(TAG_EVAL_DATA) or tags.get(TAG_DATA_VERSION)
        if data:  # an evaluation that cannot say what it was measured on cannot be compared
            out.append(Evaluation(run.info.run_id, version, data, dict(run.data.metrics), run.info.start_time))
    return out


def evidence_on(evals: list[Evaluation], data: str | None, metric: str, version: str) -> Evidence:
    """The newest finite `metric` of `version` on evaluation data `data`; metric None when there is none."""
    for ev in evals:
        value = ev.metrics.get(metric)
        if ev.eval_data_version == data and value is not None and math.isfinite(value):
            return Evidence(version, float(value), ev.run_id)
    return Evidence(version)


def choose_eval_data(challenger: list[Evaluation], champion: list[Evaluation], metric: str) -> str | None:
    """Latest evaluation data both versions have the metric on; else the challenger's (else champion's) latest."""
    def usable(evals: list[Evaluation]) -> list[str]:
        return [e.eval_data_version for e in evals if math.isfinite(e.metrics.get(metric, math.nan))]

    ch, cp = usable(challenger), set(usable(champion))
    common = [d for d in ch if d in cp]  # `ch` is newest first
    if common:
        return common[0]
    if ch:
        return ch[0]
    return usable(champion)[0] if cp else None


# -- the guard -----------------------------------------------------------------------------------------
def lock_path(cfg: Config, model_name: str) -> Path:
    """One lock file per (store, model): beside a SQLite store, else in the workspace keyed by the store URI."""
    store = local_path(cfg.tracking_uri) if cfg.tracking_uri.startswith("sqlite:///") else None
    if store is not None:
        return store.parent / "locks" / f"promote-{_check_name(model_name)}.lock"
    key = hashlib.sha1(cfg.tracking_uri.encode()).hexdigest()[:10]
    return cfg.workspace / "locks" / f"promote-{_check_name(model_name)}-{key}.lock"


# -- the decision ---------------------------------------------------------------------------------------
def decide(
    challenger: Evidence | None,
    champion: Evidence | None,
    min_delta: float,
    greater_is_better: bool,
) -> tuple[Decision, str]:
    """The gate, on evidence already gathered on the same evaluation data."""
    if challenger is None:
        return Decision.NO_CHALLENGER, "no version has the challenger alias"
    if champion is not None and challenger.version == champion.version:
        return Decision.ALREADY_CHAMPION, f"v{challenger.version} is already champion"
    # A first champion needs an evaluation too: a version whose evaluation is missing or crashed is not served.
    missing = [f"{role} v{e.version}" for role, e in (("challenger", challenger), ("champion", champion))
               if e is not None and e.metric is None]  # fmt: skip
    if missing:
        return Decision.MISSING_EVALUATION, f"no evaluation on this data for {' and '.join(missing)}"
    if champion is None:
        return Decision.FIRST_CHAMPION, "no champion yet: the evaluated challenger becomes champion"
    diff = challenger.metric - champion.metric
    gain = diff if greater_is_better else -diff
    if gain > min_delta:
        return Decision.PROMOTED, f"challenger better by {gain:+.4f} (> min_delta {min_delta})"
    return Decision.KEPT, f"challenger not better by more than min_delta {min_delta} ({gain:+.4f})"


def promote(
    cfg: Config,
    model_name: str | None = None,
    gate_metric: str | None = None,
    eval_data_version: str | None = None,
    evaluate_fn: EvaluateFn | None = None,
    min_delta: float | None = None,
    use_file_lock: bool = True,
    version: str | int | None = None,
) -> PromotionDecision:
    """Compare challenger with champion on the same evaluation data; move `champion` only if it wins.

    Arguments left None come from `cfg.promotion`. `version` gates that registered version instead of
    the one the `challenger` alias names (a run picked in the MLflow UI); the alias is not moved.
    `use_file_lock=False` is for callers that hold an equivalent guard themselves (and for tests
    showing what the guard prevents).
    """
    pc = cfg.promotion
    name = _check_name(model_name or pc.model_name)
    metric = gate_metric or pc.gate_metric
    delta = pc.min_delta if min_delta is None else min_delta
    data = eval_data_version or pc.eval_data_version or None
    if use_file_lock:
        def busy(exc: Exception) -> PromotionError:
            return PromotionError(f"another promotion of {name} is running: {exc}")

        with file_lock(lock_path(cfg, name), pc.lock_timeout_s, refuse=busy) as waited:
            decision = _promote_locked(cfg, name, metric, delta, data, evaluate_fn, version)
        decision.lock_wait_s = waited
        return decision
    return _promote_locked(cfg, name, metric, delta, data, evaluate_fn, version)


def existing_version(client: "MlflowClient", model_name: str, version: str | int) -> str:
    """`version` as the registry spells it, or PromotionError when the model has no such version."""
    from mlflow.exceptions import MlflowException

    text = str(version).strip().lstrip("vV")
    if not text.isdigit():
        raise PromotionError(f"version must be a number such as 3 or v3, not {version!r}")
    try:
        return str(client.get_model_version(model_name, text).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromotionError(f"{model_name} has no version {text} in the registry") from None
        raise


def resolve_version(cfg: Config, model_name: str, version: str | int) -> str:
    """existing_version in cfg's registry: lets a caller refuse a bad version before any flow starts."""
    from mlflow import MlflowClient

    from emotionthinker.tracking import configure_mlflow

    configure_mlflow(cfg)
    return existing_version(MlflowClient(cfg.tracking_uri, cfg.tracking_uri), _check_name(model_name), version)


def _promote_locked(
    cfg: Config, name: str, metric: str, min_delta: float, data: str | None, evaluate_fn: EvaluateFn | None,
    version: str | int | None = None,
) -> PromotionDecision:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from emotionthinker.tracking import configure_mlflow, start_stage_run

    pc = cfg.promotion
    configure_mlflow(cfg)
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    try:
        challenger_v = (existing_version(client, name, version) if version is not None
                        else alias_version(client, name, pc.challenger_alias))  # fmt: skip
        champion_v = alias_version(client, name, pc.champion_alias)
    except MlflowException as exc:
        raise PromotionError(f"reading the aliases of {name} failed: {exc.message}") from None

    evals: dict[str, list[Evaluation]] = {v: find_evaluations(client, name, v) for v in {challenger_v, champion_v} if v}
    if data is None and challenger_v:
        data = choose_eval_data(evals[challenger_v], evals.get(champion_v, []) if champion_v else [], metric)
    eval_errors: dict[str, str] = {}
    if evaluate_fn is not None and challenger_v and challenger_v != champion_v:
        for v in (challenger_v, champion_v):
            if v and evidence_on(evals[v], data, metric, v).metric is None:
                log.info("evaluating %s v%s on %s (no %s there yet)", name, v, data or "the current data", metric)
                try:
                    evaluate_fn(name, v, data)
                except Exception as exc:  # the decision (missing evaluation) is still recorded, with the cause
                    eval_errors[v] = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("evaluating %s v%s failed: %s", name, v, eval_errors[v])
                    continue
                evals[v] = find_evaluations(client, name, v)
                if data is None:
                    data = choose_eval_data(evals[challenger_v], evals.get(champion_v, []) if champion_v else [], metric)

    challenger = evidence_on(evals[challenger_v], data, metric, challenger_v) if challenger_v else None
    champion = evidence_on(evals[champion_v], data, metric, champion_v) if champion_v else None
    verdict, reason = decide(challenger, champion, min_delta, pc.greater_is_better)
    if verdict is Decision.MISSING_EVALUATION and eval_errors:
        reason += "; evaluation failed: " + "; ".join(f"v{v}: {err}" for v, err in eval_errors.items())

    result = PromotionDecision(
        model_name=name, decision=verdict, gate_metric=metric, min_delta=min_delta,
        greater_is_better=pc.greater_is_better, eval_data_version=data, challenger=challenger,
        champion=champion, champion_after=champion_v, reason=reason,
    )  # fmt: skip
    params = {"model_name": name, "gate_metric": metric, "min_delta": min_delta,
              "greater_is_better": pc.greater_is_better, "requested_eval_data_version": data or "",
              "requested_version": "" if version is None else str(version)}  # fmt: skip
    with start_stage_run(cfg, PROMOTE_STAGE, params=params, run_name=f"promote-{name}") as run:
        result.run_id = run.run_id
        if verdict.moves_champion:
            # Compare-and-set: the lock makes this hold for promotions; a hand-moved alias is not overwritten.
            now = alias_version(client, name, pc.champion_alias)
            if now != champion_v:
                result.decision, result.champion_after = Decision.CHAMPION_CHANGED, now
                result.reason = f"champion moved from v{champion_v} to v{now} during the decision; run promote again"
            else:
                client.set_registered_model_alias(name, pc.champion_alias, challenger_v)
                result.champion_after = challenger_v
        _record(run, client, result)
    log.info("%s", result.summary())
    return result


def _record(run, client: "MlflowClient", d: PromotionDecision) -> None:
    """Evidence on the promote run and on the model versions, so either view tells the story."""
    run.set_tags({
        "model_name": d.model_name, "decision": d.decision.value, "moved": str(d.moved).lower(),
        "gate_metric": d.gate_metric, TAG_EVAL_DATA: d.eval_data_version or "",
        "challenger_version": d.challenger.version if d.challenger else "",
        "champion_version_before": d.champion.version if d.champion else "",
        "champion_version_after": d.champion_after or "",
        "challenger_eval_run_id": (d.challenger.eval_run_id or "") if d.challenger else "",
        "champion_eval_run_id": (d.champion.eval_run_id or "") if d.champion else "",
        "reason": d.reason,
    })  # fmt: skip
    metrics = {}
    if d.challenger and d.challenger.metric is not None:
        metrics[f"challenger_{d.gate_metric}"] = d.challenger.metric
    if d.champion and d.champion.metric is not None:
        metrics[f"champion_{d.gate_metric}"] = d.champion.metric
    if d.delta is not None:
        metrics["delta"] = d.delta
    if metrics:
        run.log_metrics(metrics)
    run.log_dict(d.as_dict(), "promotion.json")
    if d.challenger is None or d.decision is Decision.ALREADY_CHAMPION:
        return  # nothing was compared: the version keeps the tags of the decision that made it champion
    version_tags = {
        "promotion.decision": d.decision.value, "promotion.run_id": d.run_id or "",
        "promotion.gate_metric": d.gate_metric, "promotion.eval_data_version": d.eval_data_version or "",
        "promotion.compared_with": d.champion.version if d.champion else "",
        "promotion.metric": "" if d.challenger.metric is None else f"{d.challenger.metric:.6g}",
        "promotion.champion_metric": "" if not d.champion or d.champion.metric is None else f"{d.champion.metric:.6g}",
    }  # fmt: skip
    for key, value in version_tags.items():
        client.set_model_version_tag(d.model_name, d.challenger.version, key, value)
    if d.moved and d.champion is not None:
        client.set_model_version_tag(d.model_name, d.champion.version, "promotion.replaced_by", d.challenger.version)
