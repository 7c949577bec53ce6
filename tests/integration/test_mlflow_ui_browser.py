"""The MLflow UI as a person sees it: `emotionthinker ui` on a free port, Debian's chromium (headless)
driven by Playwright, over a store holding what a retrain leaves behind: the experiment, a parent run
with a child run per stage, and a registered model whose first version was promoted to `champion`.

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
STAGES = ("ingest", "annotate", "sft", "evaluate")
UI_START_S = 120  # `mlflow server` on 2 busy cores
WAIT_MS = 45_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian chromium not found at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright not installed (pip install playwright==1.65.2)"),
]


def populate_store(cfg, tmp_path: Path) -> dict[str, str]:
    """A retrain's footprint, made with the platform's own tracking, registry and promotion code."""
    from emotionthinker.promotion import evaluation_tags, promote
    from emotionthinker.registry import register_model
    from emotionthinker.tracking import configure_mlflow, start_stage_run

    experiment_id = configure_mlflow(cfg)
    children = {}
    with start_stage_run(cfg, "retrain", run_name="retrain") as parent:
        for stage in STAGES[:-1]:
            with start_stage_run(cfg, stage, parent_run_id=parent.run_id, run_name=stage) as child:
                child.log_metrics({"seconds": 1.0})
                children[stage] = child.run_id
        folder = tmp_path / "model"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        version = register_model(cfg, children["sft"], folder, MODEL)
        tags = evaluation_tags(MODEL, version, "eval-demo")
        with start_stage_run(cfg, "evaluate", parent_run_id=parent.run_id, run_name="evaluate", tags=tags) as ev:
            ev.log_metrics({"uar": 0.5})
            children["evaluate"] = ev.run_id
    assert promote(cfg, MODEL).champion_after == version
    return {"experiment_id": experiment_id, "parent": parent.run_id, "version": version, **children}


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


def test_ui_shows_experiment_parent_with_children_and_champion(cfg, tmp_path, ui_server):
    from playwright.sync_api import expect, sync_playwright

    url, proc, log = ui_server
    ids = populate_store(cfg, tmp_path)  # while the server boots (SQLite serialises the writes)
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
            parent_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="retrain", exact=True))
            expect(parent_row).to_have_count(1)
            for stage in STAGES:
                expect(page.get_by_role("link", name=stage, exact=True)).to_have_count(0)
            parent_row.get_by_role("button").first.click()  # the nesting toggle in the run-name cell
            for stage in STAGES:
                link = page.get_by_role("link", name=stage, exact=True)
                expect(link).to_be_visible()
                assert link.get_attribute("href").endswith(f"/runs/{ids[stage]}")

            # The parent run's page lists its child runs.
            page.goto(f"{url}/#/experiments/{ids['experiment_id']}/runs/{ids['parent']}")
            expect(page.get_by_text("Child runs", exact=True)).to_be_visible()
            for stage in STAGES:
                expect(page.locator(f"a[href*='{ids[stage]}']").first).to_be_visible()

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
