"""prefect.yaml checked with Prefect's own models: the file schema `prefect deploy` reads, the schedule
conversion it applies, the flow loader and parameter schema it uses, and the job-variable schemas of
the process and Docker workers. Nothing here needs a server; a flow file not written yet is skipped.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import yaml

from emotionthinker.config import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
GPU_JOB_VARIABLES = PROJECT_ROOT / "docker" / "gpu-job-variables.yaml"
POOL_TYPES = {"cpu-pool": "process", "gpu-pool": "docker"}
TRAINING_FLOWS = {"flows/sft.py:sft_flow", "flows/reward_model.py:reward_model_flow", "flows/grpo_ptr.py:grpo_ptr_flow"}
RETRAIN = "flows/retrain.py:retrain_flow"


def raw() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


def model():
    from prefect.cli.deploy._models import PrefectYamlModel

    return PrefectYamlModel.model_validate(raw())


def deployments() -> list[dict[str, Any]]:
    return raw()["deployments"]


def by_entrypoint() -> dict[str, dict[str, Any]]:
    return {d["entrypoint"]: d for d in deployments()}


def test_file_matches_prefects_schema():
    m = model()
    names = [d.name for d in m.deployments]
    assert len(names) == len(set(names)) and all(names), names
    assert m.prefect_version and m.prefect_version == __import__("prefect").__version__
    for d in m.deployments:
        assert d.entrypoint and ":" in d.entrypoint and d.work_pool and d.work_pool.name in POOL_TYPES, d.name


def test_retrain_is_scheduled_on_the_cpu_pool_and_never_overlaps():
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.client.schemas.schedules import CronSchedule

    d = by_entrypoint()[RETRAIN]
    assert d["work_pool"]["name"] == "cpu-pool"
    assert d["schedules"], "the retrain deployment has no schedule"
    for item in d["schedules"]:
        RawScheduleConfig.model_validate(item)  # exactly one of cron/interval/rrule, no unknown keys
        converted = _schedule_config_to_deployment_schedule(item)  # what `prefect deploy` sends
        assert isinstance(converted["schedule"], CronSchedule), converted
        assert converted["active"] is not False
    limit = ConcurrencyLimitConfig.model_validate(d["concurrency_limit"])
    assert limit.limit == 1


def test_schedules_fire_when_expected():
    """The cron really is nightly: the next runs are a day apart, at 03:00 in its timezone (the server's
    own schedule model computes the dates, as its scheduler does)."""
    from prefect.server.schemas.schedules import CronSchedule

    for d in deployments():
        for item in d.get("schedules") or []:
            runs = CronSchedule(cron=item["cron"], timezone=item.get("timezone")).get_dates(3)
            if inspect.isawaitable(runs):  # sync_compatible: a coroutine when it believes a loop is running
                runs = asyncio.run(runs)
            assert len(runs) == 3
            gaps = {(b - a).total_seconds() for a, b in zip(runs, runs[1:])}
            assert gaps == {86400.0} and {r.hour for r in runs} == {3}, (d["name"], runs)


def test_training_stages_run_on_the_gpu_pool_with_the_docker_job_variables():
    from prefect_docker.worker import DockerWorker

    from prefect.utilities.schema_tools.validation import validate

    expected = yaml.safe_load(GPU_JOB_VARIABLES.read_text())
    schema = DockerWorker.get_default_base_job_template()["variables"]
    gpu = [d for d in deployments() if d["work_pool"]["name"] == "gpu-pool"]
    assert {d["entrypoint"] for d in gpu} == TRAINING_FLOWS
    for d in gpu:
        jv = d["work_pool"]["job_variables"]
        assert jv == expected, f"{d['name']}: job variables differ from {GPU_JOB_VARIABLES.name}"
        validate(jv, schema, raise_on_error=True, ignore_required=True)
        # The flow code is baked into the image; the working directory is where the image put it.
        (step,) = d["pull"]
        assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/emotionthinker"
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile.worker-gpu").read_text()
    assert "WORKDIR /opt/emotionthinker" in dockerfile and "COPY flows ./flows" in dockerfile


def test_cpu_stages_job_variables_fit_the_process_worker():
    from prefect.utilities.schema_tools.validation import validate
    from prefect.workers.process import ProcessWorker

    schema = ProcessWorker.get_default_base_job_template()["variables"]
    cpu = [d for d in deployments() if d["work_pool"]["name"] == "cpu-pool"]
    assert RETRAIN in {d["entrypoint"] for d in cpu} and not TRAINING_FLOWS & {d["entrypoint"] for d in cpu}
    for d in cpu:
        validate(d["work_pool"]["job_variables"], schema, raise_on_error=True, ignore_required=True)
        assert "pull" not in d, f"{d['name']}: process-pool runs use the checkout `prefect deploy` ran in"


def test_a_wrong_job_variable_is_caught():
    """The schema check above can fail: a misspelt or mistyped Docker variable is rejected."""
    from prefect_docker.worker import DockerWorker

    from prefect.utilities.schema_tools.validation import ValidationError, validate

    schema = DockerWorker.get_default_base_job_template()["variables"]
    with pytest.raises(ValidationError):
        validate({"auto_remove": "yes please"}, schema, raise_on_error=True, ignore_required=True)


@pytest.mark.parametrize("deployment", [d["name"] for d in deployments()])
def test_entrypoint_loads_and_parameters_fit_the_flow(deployment):
    """Like `prefect deploy`: load the flow from the entrypoint, build its parameter schema, check the
    deployment's parameters against it (all required ones present for a scheduled deployment)."""
    from prefect.flows import safe_load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    d = next(x for x in deployments() if x["name"] == deployment)
    path, _, func = d["entrypoint"].partition(":")
    if not (PROJECT_ROOT / path).is_file():
        pytest.skip(f"{path} is not written yet (entrypoint of deployment {deployment!r})")
    flow = safe_load_flow_from_entrypoint(str(PROJECT_ROOT / path) + ":" + func)
    assert flow is not None and hasattr(flow, "fn"), f"{d['entrypoint']} is not a Prefect flow"
    schema = parameter_schema(flow).model_dump_for_openapi()
    params = d.get("parameters") or {}
    assert set(params) <= set(schema["properties"]), f"unknown parameters {set(params) - set(schema['properties'])}"
    validate(params, schema, raise_on_error=True, ignore_required=not d.get("schedules"))
    assert params.get("profile") in ("test", "tiny", "paper")
