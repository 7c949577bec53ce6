"""Promotion: the gate on the same evaluation data, the recorded evidence, and concurrent promotions.

Model versions are registered for real (a tiny safetensors folder per version) in a throw-away
SQLite MLflow store; their "evaluations" are MLflow runs tagged the way the evaluate flow tags them.
The race tests widen the read-decide-write window (a pause after every alias read) so that two
unguarded promotions would both move the alias, and show that the guards leave exactly one move.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emotionthinker.config import PROJECT_ROOT
from emotionthinker.promotion import Decision, PromotionDecision, evaluation_tags, promote
from tests.registered_models import register_tiny_model

MODEL = "emotionthinker-policy"
RACE_PAUSE_S = 0.4


@pytest.fixture
def store(cfg, config_file):
    """cfg's MLflow store (config_file made it a copy of the migrated template); a client on it."""
    from mlflow import MlflowClient

    from emotionthinker.tracking import configure_mlflow

    configure_mlflow(cfg)
    return MlflowClient(cfg.tracking_uri, cfg.tracking_uri)


def register_version(cfg, tmp_path: Path, seed: int, alias: str | None = "challenger") -> str:
    return register_tiny_model(cfg, tmp_path, MODEL, seed, stage="grpo", alias=alias, run_name=f"train-{seed}")


def log_evaluation(cfg, version: str, data: str, uar: float, **extra_metrics: float) -> str:
    from emotionthinker.tracking import start_stage_run

    with start_stage_run(cfg, "evaluate", tags=evaluation_tags(MODEL, version, data)) as run:
        run.log_metrics({"uar": uar, **extra_metrics})
        return run.run_id


def aliases(client) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}


def promote_runs(client) -> list:
    exp = client.get_experiment_by_name("emotionthinker")
    return client.search_runs([exp.experiment_id], "tags.stage = 'promote'", order_by=["attributes.start_time ASC"])


# -- the gate ---------------------------------------------------------------------------------------
def test_first_challenger_becomes_champion(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.42)
    d = promote(cfg, MODEL)
    assert d.decision is Decision.FIRST_CHAMPION and d.moved
    assert aliases(store) == {"challenger": v1, "champion": v1}
    assert d.challenger.metric == pytest.approx(0.42) and d.eval_data_version == "eval-A"
    # Running it again decides nothing new and moves nothing.
    again = promote(cfg, MODEL)
    assert again.decision is Decision.ALREADY_CHAMPION and not again.moved


def test_an_unevaluated_first_challenger_does_not_become_champion(cfg, store, tmp_path):
    """Its evaluation crashed (or was never run): nothing to serve yet, so the champion alias is not created."""
    v1 = register_version(cfg, tmp_path, 1)

    def evaluate(name: str, version: str, data: str | None) -> None:
        raise RuntimeError("evaluation crashed")

    d = promote(cfg, MODEL, evaluate_fn=evaluate)
    assert d.decision is Decision.MISSING_EVALUATION and not d.moved
    assert f"challenger v{v1}" in d.reason and "evaluation crashed" in d.reason
    assert aliases(store) == {"challenger": v1}
    log_evaluation(cfg, v1, "eval-A", 0.42)  # once evaluated, it becomes the first champion
    assert promote(cfg, MODEL).decision is Decision.FIRST_CHAMPION and aliases(store)["champion"] == v1


def test_winning_challenger_takes_champion_with_evidence_recorded(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    champ_eval = log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    chal_eval = log_evaluation(cfg, v2, "eval-A", 0.61)

    d = promote(cfg, MODEL)
    assert d.decision is Decision.PROMOTED and d.champion_after == v2
    assert aliases(store) == {"challenger": v2, "champion": v2}
    assert d.delta == pytest.approx(0.11)

    run = store.get_run(d.run_id)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["stage"] == "promote" and tags["decision"] == "promoted" and tags["moved"] == "true"
    assert (tags["challenger_version"], tags["champion_version_before"], tags["champion_version_after"]) == (v2, v1, v2)
    assert (tags["challenger_eval_run_id"], tags["champion_eval_run_id"]) == (chal_eval, champ_eval)
    assert tags["eval_data_version"] == "eval-A"
    assert metrics["challenger_uar"] == pytest.approx(0.61) and metrics["champion_uar"] == pytest.approx(0.50)
    assert metrics["delta"] == pytest.approx(0.11)
    # The same evidence on the model versions themselves.
    v2_tags = store.get_model_version(MODEL, v2).tags
    assert v2_tags["promotion.decision"] == "promoted" and v2_tags["promotion.run_id"] == d.run_id
    assert v2_tags["promotion.compared_with"] == v1 and float(v2_tags["promotion.champion_metric"]) == pytest.approx(0.5)
    assert store.get_model_version(MODEL, v1).tags["promotion.replaced_by"] == v2
    recorded = json.loads(Path(store.download_artifacts(d.run_id, "promotion.json", str(tmp_path))).read_text())
    assert recorded["decision"] == "promoted" and recorded["challenger"]["eval_run_id"] == chal_eval


@pytest.mark.parametrize(
    ("champion_uar", "challenger_uar", "min_delta", "expected"),
    [
        (0.50, 0.50, 0.0, Decision.KEPT),  # a tie is not a win
        (0.50, 0.45, 0.0, Decision.KEPT),
        (0.50, 0.54, 0.05, Decision.KEPT),  # better, but not by more than min_delta
        (0.50, 0.56, 0.05, Decision.PROMOTED),
    ],
)
def test_gate_is_strict_and_honours_min_delta(cfg, store, tmp_path, champion_uar, challenger_uar, min_delta, expected):
    cfg.promotion.min_delta = min_delta
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", champion_uar)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    log_evaluation(cfg, v2, "eval-A", challenger_uar)
    d = promote(cfg, MODEL)
    assert d.decision is expected
    assert aliases(store)["champion"] == (v2 if expected is Decision.PROMOTED else v1)
    if expected is Decision.KEPT:
        assert store.get_model_version(MODEL, v2).tags["promotion.decision"] == "kept"


def test_lower_is_better_metric(cfg, store, tmp_path):
    cfg.promotion.greater_is_better = False
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.5, wer=0.30)
    promote(cfg, MODEL, gate_metric="wer")
    v2 = register_version(cfg, tmp_path, 2)
    log_evaluation(cfg, v2, "eval-A", 0.9, wer=0.35)  # much better uar, worse gate metric
    assert promote(cfg, MODEL, gate_metric="wer").decision is Decision.KEPT
    v3 = register_version(cfg, tmp_path, 3)
    log_evaluation(cfg, v3, "eval-A", 0.1, wer=0.20)
    d = promote(cfg, MODEL, gate_metric="wer")
    assert d.decision is Decision.PROMOTED and d.delta == pytest.approx(0.10) and aliases(store)["champion"] == v3


def test_compares_only_on_the_same_evaluation_data(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.90)  # an easy set
    log_evaluation(cfg, v1, "eval-B", 0.40)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    log_evaluation(cfg, v2, "eval-B", 0.60)
    log_evaluation(cfg, v2, "eval-C", 0.99)  # newest, but the champion was never measured there
    d = promote(cfg, MODEL)
    assert d.decision is Decision.PROMOTED and d.eval_data_version == "eval-B"
    assert (d.challenger.metric, d.champion.metric) == (pytest.approx(0.60), pytest.approx(0.40))


def test_missing_evaluation_is_reported_and_nothing_moves(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    log_evaluation(cfg, v2, "eval-B", 0.95)  # better number, different data: not comparable
    d = promote(cfg, MODEL, eval_data_version="eval-A")
    assert d.decision is Decision.MISSING_EVALUATION and not d.moved
    assert f"challenger v{v2}" in d.reason
    assert aliases(store)["champion"] == v1
    assert store.get_run(d.run_id).data.tags["decision"] == "missing_evaluation"


def test_missing_evaluation_is_run_through_evaluate_fn(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    calls = []

    def evaluate(name: str, version: str, data: str | None) -> None:
        calls.append((name, version, data))
        log_evaluation(cfg, version, data, 0.70)

    d = promote(cfg, MODEL, eval_data_version="eval-A", evaluate_fn=evaluate)
    assert calls == [(MODEL, v2, "eval-A")]  # only the version that lacked it
    assert d.decision is Decision.PROMOTED and d.challenger.metric == pytest.approx(0.70)


def test_failing_evaluation_is_recorded_as_missing(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    register_version(cfg, tmp_path, 2)

    def evaluate(name: str, version: str, data: str | None) -> None:
        raise RuntimeError("benchmark manifest moved")

    d = promote(cfg, MODEL, evaluate_fn=evaluate)
    assert d.decision is Decision.MISSING_EVALUATION and "benchmark manifest moved" in d.reason
    assert aliases(store)["champion"] == v1 and store.get_run(d.run_id).info.status == "FINISHED"


def test_no_challenger(cfg, store, tmp_path):
    register_version(cfg, tmp_path, 1, alias=None)
    d = promote(cfg, MODEL)
    assert d.decision is Decision.NO_CHALLENGER and not d.moved and d.run_id


def test_a_version_picked_by_hand_is_gated_and_the_challenger_alias_stays(cfg, store, tmp_path):
    """`promote --version N`: the version someone picked in the MLflow UI, not the alias's, faces the gate."""
    from emotionthinker.promotion import PromotionError

    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)  # the nightly's challenger: worse
    log_evaluation(cfg, v2, "eval-A", 0.45)
    v3 = register_version(cfg, tmp_path, 3, alias=None)
    log_evaluation(cfg, v3, "eval-A", 0.58)
    assert promote(cfg, MODEL).decision is Decision.KEPT

    d = promote(cfg, MODEL, version=f"v{v3}")
    assert d.decision is Decision.PROMOTED and d.challenger.version == v3 and d.champion.version == v1
    assert aliases(store) == {"challenger": v2, "champion": v3}
    assert store.get_run(d.run_id).data.params["requested_version"] == f"v{v3}"
    for bad, message in (("99", "has no version 99"), ("best", "must be a number")):
        with pytest.raises(PromotionError, match=message):
            promote(cfg, MODEL, version=bad)
    assert aliases(store) == {"challenger": v2, "champion": v3}


def test_the_same_weights_are_one_version(cfg, store, tmp_path):
    """A retrain after a code change resumes its finished checkpoints: same bytes, so no second version (and
    no second copy in the artifact store); the challenger alias moves to the version that holds them."""
    import shutil

    from emotionthinker.registry import TAG_WEIGHTS_DIGEST, register_model
    from emotionthinker.tracking import start_stage_run

    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    copy = shutil.copytree(tmp_path / f"{MODEL}-1", tmp_path / "retrained")
    with start_stage_run(cfg, "grpo") as run:
        again = register_model(cfg, run.run_id, copy, MODEL, alias="challenger")
    assert again == v1 and aliases(store) == {"challenger": v1, "champion": v1}
    assert sorted(str(mv.version) for mv in store.search_model_versions(f"name = '{MODEL}'")) == sorted([v1, v2])
    assert store.get_run(run.run_id).data.tags["registered_as_existing_version"] == v1
    assert not store.list_artifacts(run.run_id)  # nothing copied
    assert promote(cfg, MODEL).decision is Decision.ALREADY_CHAMPION
    (copy / "config.json").write_text('{"seed": 1, "changed": true}')  # one byte differs: a new version
    with start_stage_run(cfg, "grpo") as run:
        v3 = register_model(cfg, run.run_id, copy, MODEL, alias="challenger")
    assert v3 not in (v1, v2) and store.get_model_version(MODEL, v3).tags[TAG_WEIGHTS_DIGEST]


# -- concurrent promotions ---------------------------------------------------------------------------
@pytest.fixture
def champion_and_better_challenger(cfg, store, tmp_path):
    v1 = register_version(cfg, tmp_path, 1)
    log_evaluation(cfg, v1, "eval-A", 0.50)
    promote(cfg, MODEL)
    v2 = register_version(cfg, tmp_path, 2)
    log_evaluation(cfg, v2, "eval-A", 0.60)
    return v1, v2


@pytest.fixture
def widened_race(monkeypatch):
    """Pause after every alias read and count champion moves (thread-safe)."""
    import mlflow

    import emotionthinker.promotion as promotion

    moves: list[str] = []
    real_read, real_set = promotion.alias_version, mlflow.MlflowClient.set_registered_model_alias

    def slow_read(*args, **kwargs):
        version = real_read(*args, **kwargs)
        time.sleep(RACE_PAUSE_S)
        return version

    def counting_set(self, name, alias, version):
        if alias == "champion":
            moves.append(str(version))
        return real_set(self, name, alias, version)

    monkeypatch.setattr(promotion, "alias_version", slow_read)
    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", counting_set)
    return moves


def run_at_once(n: int, fn, errors: list | None = None) -> list:
    """Run fn in n threads released together; raise their errors unless the caller collects them."""
    collect = errors is not None
    barrier, results, errors = threading.Barrier(n), [None] * n, errors if collect else []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert collect or not errors, errors
    return results


def assert_one_move(decisions: list[PromotionDecision], moves: list[str], client, v1: str, v2: str) -> None:
    assert moves == [v2], f"champion moved {len(moves)} times: {moves}"
    assert sorted(d.decision.value for d in decisions) == ["already_champion", "promoted"]
    assert aliases(client) == {"challenger": v2, "champion": v2}
    recorded = [r for r in promote_runs(client) if r.data.tags.get("challenger_version") == v2]
    assert sorted(r.data.tags["decision"] for r in recorded) == ["already_champion", "promoted"]
    assert all(r.info.status == "FINISHED" for r in recorded)
    assert store_tags(client, v2)["promotion.decision"] == "promoted"


def store_tags(client, version: str) -> dict[str, str]:
    return client.get_model_version(MODEL, version).tags


def test_without_a_guard_both_promotions_move_the_alias(cfg, store, champion_and_better_challenger, widened_race):
    """The control: the race the guards exist for is real in this setup."""
    v1, v2 = champion_and_better_challenger
    errors: list[BaseException] = []
    decisions = run_at_once(2, lambda: promote(cfg, MODEL, use_file_lock=False), errors)
    assert widened_race == [v2, v2]
    # The unguarded pair may also collide on writing the same version tag (sqlite UNIQUE):
    # more damage from the same race, never a different failure.
    assert all("UNIQUE constraint" in str(e) for e in errors), errors
    assert [d.decision for d in decisions if d is not None] == [Decision.PROMOTED] * (2 - len(errors))


def test_two_promotions_at_once_file_lock_threads(cfg, store, champion_and_better_challenger, widened_race):
    v1, v2 = champion_and_better_challenger
    decisions = run_at_once(2, lambda: promote(cfg, MODEL))
    assert_one_move(decisions, widened_race, store, v1, v2)
    assert max(d.lock_wait_s for d in decisions) >= RACE_PAUSE_S  # the second one really waited


RACE_SCRIPT = """
import json, os, sys, time
from pathlib import Path
import emotionthinker.promotion as promotion
from emotionthinker.config import load_config
import mlflow

real_read, real_set = promotion.alias_version, mlflow.MlflowClient.set_registered_model_alias
def slow_read(*a, **k):
    v = real_read(*a, **k); time.sleep({pause}); return v
def counting_set(self, name, alias, version):
    if alias == "champion":
        with open(os.environ["MOVES"], "a") as f: f.write(str(version) + "\\n")
    return real_set(self, name, alias, version)
promotion.alias_version = slow_read
mlflow.MlflowClient.set_registered_model_alias = counting_set
cfg = load_config("test", sys.argv[1])
Path(sys.argv[2]).touch()                      # ready
while not Path(sys.argv[3]).exists():          # go: both start together
    time.sleep(0.01)
print(json.dumps(promotion.promote(cfg, "{model}").as_dict()))
"""


def test_two_promotions_at_once_in_separate_processes(cfg, config_file, tmp_path, champion_and_better_challenger):
    v1, v2 = champion_and_better_challenger
    from mlflow import MlflowClient

    cfg_path = config_file()
    moves, go = tmp_path / "moves.txt", tmp_path / "go"
    env = {**os.environ, "MOVES": str(moves), "PYTHONPATH": str(PROJECT_ROOT)}
    script = RACE_SCRIPT.replace("{pause}", str(RACE_PAUSE_S)).replace("{model}", MODEL)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, cfg_path, str(tmp_path / f"ready{i}"), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for i in range(2)
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    decisions = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(d["decision"] for d in decisions) == ["already_champion", "promoted"]
    assert moves.read_text().split() == [v2]
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    assert aliases(client) == {"challenger": v2, "champion": v2}
    assert sorted(r.data.tags["decision"] for r in promote_runs(client) if r.data.tags["challenger_version"] == v2) == [
        "already_champion", "promoted"]  # fmt: skip


# -- the Prefect guard ---------------------------------------------------------------------------------
@pytest.mark.usefixtures("prefect_harness")
def test_prefect_concurrency_limit_alone_serialises_promotions(cfg, store, champion_and_better_challenger, widened_race):
    """Machines sharing a Prefect server share no file system: the global limit must suffice on its own."""
    from prefect import get_client
    from prefect.concurrency.sync import concurrency

    from flows.promote import concurrency_limit_name, ensure_concurrency_limit

    v1, v2 = champion_and_better_challenger
    name = concurrency_limit_name(MODEL)
    run_at_once(2, lambda: ensure_concurrency_limit(name))  # creating it twice at once is fine
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.active) == (1, True)

    def guarded() -> PromotionDecision:
        with concurrency(name, occupy=1, timeout_seconds=60, strict=True):
            return promote(cfg, MODEL, use_file_lock=False)

    decisions = run_at_once(2, guarded)
    assert_one_move(decisions, widened_race, store, v1, v2)


@pytest.mark.usefixtures("prefect_harness")
def test_two_promote_flows_at_once(cfg, config_file, champion_and_better_challenger, widened_race):
    from mlflow import MlflowClient

    from flows.promote import promote_flow

    v1, v2 = champion_and_better_challenger
    path = config_file()
    results = run_at_once(2, lambda: promote_flow(model=MODEL, profile="test", config_file=path))
    assert sorted(r["decision"] for r in results) == ["already_champion", "promoted"]
    assert widened_race == [v2]
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    assert aliases(client) == {"challenger": v2, "champion": v2}


def test_promote_command(cfg, config_file, tmp_path, champion_and_better_challenger):
    """`emotionthinker promote --no-flow`: exit 0 with the decision printed; 1 when nothing can be decided."""
    v1, v2 = champion_and_better_challenger
    cmd = [str(Path(sys.executable).parent / "emotionthinker"), "promote", "--no-flow", "--profile", "test",
           "--config", config_file()]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{MODEL}: promoted" in out.stdout and f"champion now v{v2}" in out.stdout
    v3 = register_version(cfg, tmp_path, 3)  # never evaluated
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "missing_evaluation" in out.stdout and f"challenger v{v3}" in out.stdout
    out = subprocess.run(cmd + ["--model", "no-such-model"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "unknown model" in out.stderr
    out = subprocess.run(cmd + ["--version", v2], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and "already_champion" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(cmd + ["--version", "99"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "has no version 99" in out.stderr


def test_version_1_of_two_mlflow_stores_are_two_models_to_the_evaluation_cache(cfg, tmp_path):
    """Evaluation answers are saved per model identity; version numbers restart in every store."""
    from emotionthinker.config import load_config
    from emotionthinker.evaluation.identity import describe_model

    other = load_config("test", environ={}, overrides={"paths": {"workspace": str(tmp_path / "other"),
                                                                 "data": str(tmp_path / "other" / "data")}})  # fmt: skip
    assert other.tracking_uri != cfg.tracking_uri
    ids = []
    for c, seed in ((cfg, 1), (other, 2)):
        assert register_version(c, tmp_path, seed) == "1"
        ids.append(describe_model(f"registry:{MODEL}@challenger", c).identity)
    assert ids[0] != ids[1] and all(i.startswith(f"registry:{MODEL}/1#") for i in ids)
    assert describe_model(f"registry:{MODEL}@1", cfg).identity == ids[0]  # by number or by alias: one model
