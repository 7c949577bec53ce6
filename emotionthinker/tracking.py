"""MLflow tracking shared by every stage: one run per stage, tagged with what produced it.

Each run carries the profile, the code version (git sha), the stage name and
the data version (DVC md5s of the datasets it read or wrote), so any number in
the UI can be traced back to code and data. Logging goes through an explicit
`MlflowClient` and run id rather than MLflow's thread-local "active run",
because Prefect runs tasks in worker threads. Secrets never reach MLflow:
keys that look like credentials are dropped from params, tags and dicts.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from emotionthinker.config import PROJECT_ROOT, Config
from emotionthinker.services import local_path
from emotionthinker.stored_paths import stored_path

if TYPE_CHECKING:  # heavy imports stay lazy: mlflow ~1.5 s, matplotlib, pandas
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

# Secret names are matched by whole words of the key (snake, kebab or camel case): a substring match
# also dropped max_new_tokens, n_tokens and cache keys, hiding how long generations were allowed to run.
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "pwd", "credential", "credentials", "authorization", "apikey"})
KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret", "auth", "ssh", "signing", "encryption"})
# Values that look like bearer tokens / API keys are redacted even under an innocent key.
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,})")
REDACTED = "<redacted>"
MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
MAX_TAG_LEN = 8000


# -- secrets ---------------------------------------------------------------
def is_secret_key(key: str) -> bool:
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())
    if any(w in SECRET_WORDS for w in words):
        return True
    return any(w == "key" and (i == 0 or words[i - 1] in KEY_QUALIFIERS) for i, w in enumerate(words))


def redact(value: Any) -> Any:
    """Drop secret-looking keys (recursively) and mask secret-looking string values."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; secrets dropped; values cut to MLflow's length limit; a file path
    in its stored form, as the data files name it (runs of two checkouts on one server compare equal)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if is_secret_key(str(key)):
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
            continue
        if isinstance(value, (str, Path)) and Path(value).is_absolute():
            value = stored_path(value)
        text = value if isinstance(value, str) else json.dumps(redact(value), default=str)
        out[name] = SECRET_VALUE.sub(REDACTED, text)[:MAX_PARAM_LEN]
    return out


# -- code version ------------------------------------------------------------
@lru_cache(maxsize=1)
def git_sha(root: Path = PROJECT_ROOT) -> str:
    """HEAD commit of the project, '+dirty.<hash of the diff>' when tracked files changed or untracked Python
    files exist outside data/; 'unknown' outside git.

    The diff's hash keeps cache keys honest between commits: two different uncommitted edits are two code versions.
    """
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        # diff-index (unlike `git status`) never rewrites the index: read-only. data/ is left out: `dvc add`
        # edits its tracked .gitignore, which made every run after the first look like changed code (and
        # miss the retrain cache); datasets enter cache keys by their content instead. The patch, not the
        # raw listing, decides: a file rewritten with the same content is listed (stale stat) but has no patch.
        patch = subprocess.run(
            ["git", "-C", str(root), "diff-index", "-p", "--binary", "HEAD", "--", ".", ":(exclude)data"],
            capture_output=True, timeout=30, check=True,
        ).stdout
        # A new module not yet added to git is code too (a tracked edit may import it): its content counts.
        untracked = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--others", "--exclude-standard", "--", "*.py", ":(exclude)data"],
            capture_output=True, timeout=30, check=True,
        ).stdout.split(b"\0")
        for name in sorted(n for n in untracked if n):
            patch += b"\0untracked " + name + b"\0" + (root / name.decode()).read_bytes()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + (f"+dirty.{hashlib.sha1(patch).hexdigest()[:12]}" if patch else "")


# -- experiment ----------------------------------------------------------------
def _experiment_artifact_location(cfg: Config) -> str | None:
    if cfg.tracking_uri.startswith(("http://", "https://")) and not cfg.services.mlflow_artifact_root:
        return None  # a tracking server decides (typically its proxied mlflow-artifacts:/ store)
    root = cfg.artifact_root
    path = local_path(root)
    if path is not None:
        location = Path(path).resolve() / cfg.services.mlflow_experiment
        location.mkdir(parents=True, exist_ok=True)
        return str(location)
    return root.rstrip("/") + "/" + cfg.services.mlflow_experiment


def configure_mlflow(cfg: Config) -> str:
    """Point MLflow (tracking and registry) at the configured store; create the experiment; return its id.

    The experiment gets an explicit artifact location: MLflow's default is
    ./mlruns relative to whatever directory the process started in.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    name = cfg.services.mlflow_experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=_experiment_artifact_location(cfg))
        except MlflowException:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# -- runs ------------------------------------------------------------------------
@dataclass
class StageRun:
    """Handle on one MLflow run; every method is safe to call from any thread."""

    run_id: str
    experiment_id: str
    client: "MlflowClient"

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [
            RunTag(k, SECRET_VALUE.sub(REDACTED, str(v))[:MAX_TAG_LEN]) for k, v in tags.items() if not is_secret_key(k)
        ]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_missing_steps(self, steps: Iterable[tuple[int, Mapping[str, float]]], probe: str) -> None:
        """Log each (step, metrics) the run lacks, judged by whether `probe` has a value at that step: how a
        resumed training stage gives its new run the steps before its checkpoint, once even if asked twice."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, metric_key(probe))}
        for step, metrics in steps:
            if step not in logged and metrics:
                self.log_metrics(metrics, step=step)

    def log_dict(self, data: Mapping[str, Any] | Sequence[Any], artifact_file: str) -> None:
        """A JSON (or YAML, by extension) artifact; secret-looking keys are dropped first."""
        self.client.log_dict(self.run_id, redact(data), artifact_file)

    def log_table(self, data: "pd.DataFrame | Sequence[Mapping[str, Any] | BaseModel]", artifact_file: str) -> None:
        """A table the MLflow UI renders (JSON); records or a DataFrame. A CSV copy sits beside it."""
        import pandas as pd

        if not isinstance(data, pd.DataFrame):
            data = pd.DataFrame([redact(r) for r in data])
        else:
            data = data[[c for c in data.columns if not is_secret_key(str(c))]]
        if not artifact_file.endswith(".json"):
            raise ValueError(f"table artifacts are JSON files; got {artifact_file!r}")
        # log_table serialises cell values with json; make them plain strings when they are containers.
        data = data.map(lambda v: json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v)
        self.client.log_table(self.run_id, data=data, artifact_file=artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / (Path(artifact_file).stem + ".csv")
            data.to_csv(csv, index=False)
            folder = str(Path(artifact_file).parent) if "/" in artifact_file else None
            self.client.log_artifact(self.run_id, str(csv), folder)

    def log_figure(self, fig: "Figure", artifact_file: str) -> None:
        """A matplotlib figure as PNG; the figure is closed afterwards to free memory."""
        if not artifact_file.endswith(".png"):
            artifact_file += ".png"
        try:
            self.client.log_figure(self.run_id, fig, artifact_file, save_kwargs={"dpi": 120, "bbox_inches": "tight"})
        finally:
            if "matplotlib.pyplot" in sys.modules:  # figures made without pyplot need no closing
                sys.modules["matplotlib.pyplot"].close(fig)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Make this the fluent API's active run in the current thread (for libraries that log via `mlflow.*`)."""
        import mlflow

        nested = mlflow.active_run() is not None
        with mlflow.start_run(run_id=self.run_id, experiment_id=self.experiment_id, nested=nested):
            yield


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces; map anything else to '_'."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name).replace(" ", "_")


def data_version_tags(data_version: Mapping[str, str] | None) -> dict[str, str]:
    """{"data/manifests/demo": "ab12.dir"} -> one tag per dataset plus the whole mapping as JSON."""
    if not data_version:
        return {}
    # Tag keys allow letters, digits, _ - . : / and spaces; a folder such as "ravdess+demo" would be refused,
    # so other characters become '_' here (the exact names stay in the JSON tag).
    tags = {re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", f"data_version.{name}"): md5 for name, md5 in data_version.items()}
    tags["data_version"] = json.dumps(dict(data_version), sort_keys=True)
    return tags


# The retrain flow's MLflow run: stage runs opened while it is set become its children. A context
# variable, not a global: it follows Prefect's subflows and tasks (they copy the context) and never
# leaks into another flow running in the same process.
_parent_run: ContextVar[str | None] = ContextVar("emotionthinker_parent_run", default=None)


@contextmanager
def children_of(run_id: str) -> Iterator[None]:
    """Stage runs started inside this block are nested under `run_id` in the MLflow UI."""
    token = _parent_run.set(run_id)
    try:
        yield
    finally:
        _parent_run.reset(token)


def attach_run(cfg: Config, run_id: str) -> StageRun:
    """A handle on an existing run (e.g. passed between tasks by id)."""
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    return StageRun(run_id, client.get_run(run_id).info.experiment_id, client)


@contextmanager
def start_stage_run(
    cfg: Config,
    stage: str,
    params: Mapping[str, Any] | None = None,
    data_version: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """Open a run for one stage; FINISHED on normal exit, FAILED (with the error type) on an exception."""
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(cfg)
    client = MlflowClient(cfg.tracking_uri, cfg.tracking_uri)
    sha = git_sha()
    all_tags = {
        "stage": stage,
        "profile": cfg.profile,
        "git_sha": sha,
        "mlflow.source.git.commit": sha.split("+", 1)[0],
        **data_version_tags(data_version),
        **(tags or {}),
    }
    parent_run_id = parent_run_id or _parent_run.get()
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name or stage)
    handle = StageRun(run.info.run_id, experiment_id, client)
    handle.set_tags(all_tags)
    handle.log_params({**(params or {}), "profile": cfg.profile})
    try:
        yield handle
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            handle.set_tags({"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            client.set_terminated(handle.run_id, status)
        raise
    client.set_terminated(handle.run_id, "FINISHED")
