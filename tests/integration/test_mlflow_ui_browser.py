"""The MLflow UI as a person sees it: `emotionthinker ui` on a free port, Debian's chromium (headless)
driven by Playwright, after a real `test`-profile retrain: the experiment, the retrain parent run with a
child run per stage, and the registered policy whose first version was promoted to `champion`.

Needs `apt-get install -y chromium` and `pip install playwright==1.65.2` (no `playwright install`:
the system chromium is used); skipped with that hint otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
MODEL = "emotionthinker-policy"
STAGES = ("ingest", "annotate", "cot", "sft_data", "sft", "reward_model", "grpo_ptr", "evaluate")
UI_START_S = 120  # `mlflow server` on 2 busy cores
WAIT_MS = 45_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian chromium not found at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed (pip install playwright==1.65.2)"),
]


def populate_store(cfg, config_file) -> dict:
    """A real test-profile retrain: every stage, its MLflow runs, the registered policy promoted to champion."""
    from mlflow import MlflowClient

    from flows.retrain import retrain_flow

    out = retrain_flow(profile="test", config_file=config_file())
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    parent = client.get_run(out["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert len(children) >= len(STAGES)
    return {"experiment_id": parent.info.experiment_id, "parent": out["run_id"], "parent_name": parent.info.run_name,
            "version": out["stages"]["grpo_ptr"]["registered"]["version"],
            "children": {r.info.run_name: r.info.run_id for r in children}}  # fmt: skip


@pytest.fixture
def ui_server(cfg, config_file, tmp_path):
    """`emotionthinker ui` on a free port; yields its base URL; stopped (process group) afterwards."""
    from emotionthinker.schedule import free_port

    port = free_port()
    path = config_file()
    log = open(tmp_path / "ui.log", "w+")
    cmd = [str(Path(sys.executable).parent / "emotionthinker"), "ui", "--port", str(port), "--profile", "test", "--config", path]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the command stops `mlflow server` and its workers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def wait_until_up(url: str, proc: subprocess.Popen, log) -> float:
    start = time.monotonic()
    while time.monotonic() - start < UI_START_S:
        assert proc.poll() is None, f"`emotionthinker ui` exited ({proc.returncode}):\n{Path(log.name).read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"MLflow UI not up {UI_START_S} s after the store was filled:\n{Path(log.name).read_text()[-3000:]}")


@pytest.mark.usefixtures("prefect_harness")
def test_ui_shows_experiment_parent_with_children_and_champion(cfg, config_file, tmp_path, ui_server):
    from playwright.sync_api import expect, sync_playwright

    url, proc, log = ui_server
    ids = populate_store(cfg, config_file)  # while the server boots (SQLite serialises the writes)
    children = ids["children"]
    started = wait_until_up(url, proc, log)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)  # the UI's first load (JS bundle, queries) is slow on busy cores

            # The experiment, in the experiments list.
            page.goto(f"{url}/#/experiments")
            exp_link = page.get_by_role("link", name=cfg.services.mlflow_experiment, exact=True)
            expect(exp_link).to_be_visible()
            assert exp_link.get_attribute("href").rstrip("/").endswith(f"/experiments/{ids['experiment_id']}")

            # Its runs table: the parent at top level, the stages only once the parent is expanded.
            page.goto(f"{url}/#/experiments/{ids['experiment_id']}/runs")
            parent_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=ids["parent_name"], exact=True))
            expect(parent_row).to_have_count(1)
            for name in children:
                expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
            parent_row.get_by_role("button").first.click()  # the nesting toggle in the run-name cell
            for name, run_id in children.items():
                link = page.get_by_role("link", name=name, exact=True)
                expect(link).to_be_visible()
                assert link.get_attribute("href").endswith(f"/runs/{run_id}")

            # The parent run's page lists its child runs.
            page.goto(f"{url}/#/experiments/{ids['experiment_id']}/runs/{ids['parent']}")
            expect(page.get_by_text("Child runs", exact=True)).to_be_visible()
            for run_id in children.values():
                expect(page.locator(f"a[href*='{run_id}']").first).to_be_visible()

            # The registered model: version 1 carries the champion alias.
            page.goto(f"{url}/#/models/{MODEL}")
            version_row = page.get_by_role("row").filter(has_text=f"Version {ids['version']}")
            expect(version_row).to_have_count(1)
            expect(version_row.get_by_text("@ champion", exact=True)).to_be_visible()
            expect(version_row.get_by_text("promotion.decision", exact=True)).to_be_visible()  # the evidence tags
            page.screenshot(path=str(tmp_path / "model.png"))
        finally:
            browser.close()
    print(f"MLflow UI up {started:.1f} s after the store was filled")
