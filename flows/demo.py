"""The `demo` flow: what `make demo` runs on embedded defaults.

Synthesise the demo corpus -> ingest (manifest, GX, DVC, MLflow) -> annotate
(prosody, ASR, stress, traits) -> CoT reasoning and reward-model tuples. Later stages join here as they land; the
retrain flow of DESIGN.md grows out of this one.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from emotionthinker.config import load_config
from flows.annotate import annotate_flow
from flows.cot import cot_flow
from flows.ingest import ingest_flow


@task(name="synthesize-demo-corpus", cache_policy=NO_CACHE)
def synthesize(profile: str, config_file: str | None) -> str:
    from emotionthinker.democorpus import synthesize_demo_corpus

    cfg = load_config(profile, config_file)
    return str(synthesize_demo_corpus(cfg.data_dir / "demo", cfg).parent)


@flow(name="demo")
def demo_flow(profile: str = "tiny", config_file: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    stages: dict[str, float] = {}
    t = time.perf_counter()
    root = synthesize(profile, config_file)
    stages["demo-corpus"] = time.perf_counter() - t

    t = time.perf_counter()
    ingested = ingest_flow(corpus="demo", root=root, profile=profile, config_file=config_file)
    stages["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    annotated = annotate_flow(manifest=ingested["manifest"], profile=profile, config_file=config_file)
    stages["annotate"] = time.perf_counter() - t

    t = time.perf_counter()
    cot = cot_flow(annotated=annotated["annotated"], profile=profile, config_file=config_file)
    stages["cot"] = time.perf_counter() - t
    logger.info("demo finished: %s", {k: round(v, 1) for k, v in stages.items()})
    return {"ingest": ingested, "annotate": annotated, "cot": cot, "seconds": stages}
