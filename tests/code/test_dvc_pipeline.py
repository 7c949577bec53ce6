"""dvc.yaml is a working pipeline of the platform's own commands: every stage calls an existing CLI command
with options it has, reads params that are config fields, depends on code that exists and on data an earlier
stage writes. (`dvc repro` itself runs the tiny models for an hour on 2 cores: the README shows a run.)"""

from __future__ import annotations

import shlex

import pytest
import typer
import yaml

from emotionthinker.cli import app
from emotionthinker.config import PROJECT_ROOT, Config, load_config

PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def produced_by(stage_names: list[str]) -> list[str]:
    out = []
    for name in stage_names:
        for entry in STAGES[name].get("outs", []) + STAGES[name].get("metrics", []):
            out.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def cli_call(cmd: str):
    words = shlex.split(cmd.replace("${et}", "emotionthinker"))
    words = words[words.index("emotionthinker") + 1 :]
    command = typer.main.get_command(app)  # typer's own (vendored) click: duck-typed
    while hasattr(command, "commands"):
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_params_file_is_a_valid_platform_config():
    cfg = load_config("tiny", PROJECT_ROOT / "params.yaml", environ={})
    assert cfg.paths.data.as_posix() == "data/pipeline"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_is_a_real_command_on_real_inputs(name):
    stage = STAGES[name]
    command, words = cli_call(stage["cmd"])
    known = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    assert {w for w in words if w.startswith("-")} <= known, f"{name}: unknown options for `{command.name}`"
    ctx = command.make_context(command.name, list(words), resilient_parsing=False)  # parses and type-checks
    assert ctx.params
    for section in stage.get("params", []):
        assert section.split(".")[0] in Config.model_fields, f"{name}: params {section!r} is no config section"
    earlier = produced_by(list(STAGES)[: list(STAGES).index(name)])
    for dep in stage.get("deps", []):
        if dep.startswith("data/pipeline/"):
            assert any(dep == o or dep.startswith(o.rstrip("/") + "/") for o in earlier), f"{name}: nothing writes {dep}"
        else:
            assert (PROJECT_ROOT / dep).exists(), f"{name}: code dependency {dep} does not exist"


CODE_FOLDERS = ("emotionthinker", "models", "flows", "tasks")


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_depends_on_all_project_code(name):
    """A hand-kept list of a stage's files went stale (the GRPO loss was not a dependency of grpo_ptr):
    every stage depends on every code folder, and pyc caches are ignored so importing changes nothing."""
    assert set(CODE_FOLDERS) <= set(STAGES[name]["deps"]), name
    ignored = (PROJECT_ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_training_stages_read_the_settings_they_are_trained_with():
    params = {name: set(stage.get("params", [])) for name, stage in STAGES.items()}
    assert {"grpo", "models", "rm"} <= params["grpo_ptr"] and {"rm", "models"} <= params["reward_model"]
    assert {"sft", "models"} <= params["sft"] and {"eval", "models"} <= params["evaluate"]
