"""The `retrain` flow: what the nightly schedule and `make demo` run (DESIGN.md, "Flows").

demo corpus (for the demo corpus) -> ingest -> annotate (GX-validated) -> CoT + RM tuples -> SFT data ->
SFT -> reward model -> GRPO-PTR -> evaluate -> promote. Each stage is its own flow, run as a subflow
inside a cached Prefect task: the cache key (emotionthinker/retrain.py) covers the stage's config,
the code version, its input files and everything upstream, so a rerun with nothing changed skips
every finished stage; a cached stage whose outputs or MLflow run have gone is run again. One MLflow
parent run holds a child run per stage; the closing summary lands on it as text and metrics.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from emotionthinker import retrain as R
from emotionthinker.config import Config, load_config
from emotionthinker.services import ui_url
from emotionthinker.tracking import children_of, git_sha, start_stage_run
from flows.annotate import annotate_flow
from flows.cot import cot_flow
from flows.evaluate import evaluate_flow
from flows.grpo_ptr import grpo_ptr_flow
from flows.ingest import ingest_flow
from flows.promote import promote_flow
from flows.reward_model import reward_model_flow
from flows.sft import sft_flow
from flows.sft_data import sft_data_flow


def _demo_corpus_flow(profile: str, config_file: str | None) -> dict[str, Any]:
    from emotionthinker.democorpus import synthesize_demo_corpus

    cfg = load_config(profile, config_file)
    return {"root": str(synthesize_demo_corpus(cfg.data_dir / "demo", cfg).parent)}


STAGE_FLOWS = {
    "demo_corpus": _demo_corpus_flow, "ingest": ingest_flow, "annotate": annotate_flow, "cot": cot_flow,
    "sft_data": sft_data_flow, "sft": sft_flow, "reward_model": reward_model_flow, "grpo_ptr": grpo_ptr_flow,
    "evaluate": evaluate_flow,
}  # fmt: skip


def _retry_transient(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    return R.is_transient(exc)


@task(name="retrain-stage", task_run_name="{stage}", persist_result=True, retries=1, retry_delay_seconds=15,
      retry_condition_fn=_retry_transient, cache_key_fn=lambda ctx, p: f"retrain-{p['stage']}-{p['key']}" if p["key"] else None)  # fmt: skip
def run_stage(stage: str, key: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One stage as a subflow; its result is persisted under the key (key "" -> never cached)."""
    return STAGE_FLOWS[stage](**kwargs)


@task(name="check-cached-stage", cache_policy=NO_CACHE)
def missing_outputs(cfg: Config, stage: str, result: dict[str, Any]) -> list[str]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)

    def run_exists(run_id: str) -> bool:
        try:
            return client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    return R.missing_outputs(stage, result, run_exists)


class _Chain:
    """Runs stages in order, keeping their keys, results and timings."""

    def __init__(self, cfg: Config, profile: str, config_file: str | None, parent_run) -> None:
        self.cfg, self.common, self.parent = cfg, {"profile": profile, "config_file": config_file}, parent_run
        self.code = git_sha()
        self.keys: dict[str, str] = {}
        self.outcomes: list[R.StageOutcome] = []
        self.logger = get_run_logger()

    def __call__(self, stage: str, inputs: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        key = R.stage_key(stage, self.cfg, self.code, self.keys, inputs) if self.cfg.retrain.cache else ""
        kwargs = {**kwargs, **self.common}
        started = time.perf_counter()
        state = run_stage(stage, key, kwargs, return_state=True)
        cached = state.is_completed() and state.name == "Cached"
        result = state.result()
        if cached and (gone := missing_outputs(self.cfg, stage, result)):
            self.logger.warning("%s: cached result is stale (%s gone): running it again", stage, ", ".join(gone))
            result, cached = run_stage.with_options(refresh_cache=True)(stage, key, kwargs), False
        seconds = time.perf_counter() - started
        self.keys[stage] = key or stage
        self.outcomes.append(R.StageOutcome(stage, seconds, cached, result, key))
        self.parent.log_metrics({f"stage_seconds.{stage}": seconds})
        self.parent.set_tags({f"stage.{stage}.run_id": result.get("run_id", ""), f"stage.{stage}.cached": cached})
        self.logger.info("stage %s: %.1f s%s", stage, seconds, " (cached)" if cached else "")
        return result


@flow(name="retrain")
def retrain_flow(profile: str = "tiny", config_file: str | None = None, corpus: str | None = None,
                 root: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Every stage from corpus to champion; `corpus`/`root` default to the retrain config (the demo corpus)."""
    logger = get_run_logger()
    started = time.perf_counter()
    cfg = load_config(profile, config_file)
    corpus = corpus or cfg.retrain.corpus
    root = R.corpus_root(cfg, corpus, root)
    params = {"corpus": corpus, "root": root or "", "retrain": cfg.retrain, "config_file": config_file or ""}
    with (R.workspace_lock(cfg) as waited,
          start_stage_run(cfg, "retrain", params=params, run_name=f"retrain-{corpus}") as parent,
          children_of(parent.run_id)):  # fmt: skip
        if waited >= 1:
            logger.info("waited %.0f s for the retrain that held this workspace", waited)
        run = _Chain(cfg, profile, config_file, parent)
        if root is None:
            root = run("demo_corpus")["root"]
        ingested = run("ingest", R.ingest_inputs(corpus, root), corpus=corpus, root=root)
        R.check_eval_split(ingested["manifest"], cfg.retrain.eval_split)
        annotated = run("annotate", R.annotate_inputs(cfg, ingested["manifest"]), manifest=ingested["manifest"])
        cot = run("cot", annotated=annotated["annotated"])
        sft_data = run("sft_data", annotated=annotated["annotated"], cot=cot["cot"])
        sft = run("sft", data_dir=sft_data["data_dir"])
        rm = run("reward_model", rm_tuples=cot["rm_tuples"])
        grpo = run("grpo_ptr", train_manifest_or_cot=cot["cot"], policy_source=sft["model_dir"],
                   reward_source=rm["model_dir"])  # fmt: skip
        reg = grpo.get("registered")
        policy = f"registry:{reg['name']}@{reg['version']}" if reg else grpo["model_dir"]
        evaluated = run("evaluate", {"policy": policy}, model_source=policy, manifest=ingested["manifest"],
                        split=cfg.retrain.eval_split)  # fmt: skip
        promotion = None
        if cfg.retrain.promote and reg:
            promotion = promote_flow(model=reg["name"], eval_data_version=evaluated.get("eval_data_version"),
                                     profile=profile, config_file=config_file)  # fmt: skip
        summary = R.RetrainSummary(
            profile=cfg.profile, stages=run.outcomes, promotion=promotion, wall_s=time.perf_counter() - started,
            run_id=parent.run_id, ui_url=ui_url(cfg), data_versions=R.collect_data_versions([o.result for o in run.outcomes]),
        )  # fmt: skip
        parent.log_metrics({**summary.metrics(), "wall_s": summary.wall_s,
                            "stages_cached": sum(o.cached for o in run.outcomes)})  # fmt: skip
        parent.log_table([o.row() for o in run.outcomes], "stages.json")
        parent.client.log_text(parent.run_id, summary.as_text(), "summary.txt")
        if promotion:
            parent.set_tags({"promotion.decision": promotion.get("decision"),
                             "promotion.champion": promotion.get("champion_after") or ""})  # fmt: skip
    logger.info("\n%s", summary.as_text())
    return {"summary": summary.as_text(), "run_id": parent.run_id, "wall_s": summary.wall_s,
            "stages": {o.stage: o.result for o in run.outcomes}, "seconds": {o.stage: o.seconds for o in run.outcomes},
            "cached": {o.stage: o.cached for o in run.outcomes}, "promotion": promotion}  # fmt: skip
