"""DVC versioning of datasets: `dvc add` + `dvc push` to the configured remote, md5 back for MLflow.

Where the DVC repository lives, and why:

* Default profile: data lives in ``data/`` at the project root, a folder git
  does not ignore, and DVC is the project's own repository (``.dvc/`` next to
  ``.git``). ``dvc add data/manifests/demo`` then writes the pointer
  ``data/manifests/demo.dvc`` (committed to git) and a ``.gitignore`` for the
  data itself, and ``dvc.yaml`` stages can run with ``dvc repro`` from the
  project root. DVC refuses to write a ``.dvc`` pointer inside a git-ignored
  folder ("bad DVC file name ... is git-ignored"), which is why the data does
  not live under the git-ignored ``var/``.
* Any data folder outside the project's git tree, or inside an ignored part of
  it (the `test` profile's ``var/test/data``, a test's tmp workspace), gets a
  standalone ``dvc init --no-scm`` repository at its workspace: same commands,
  same md5s, and the project's own DVC state is never touched.

The default remote is named ``local``. In the project repository its URL is
written relative to ``.dvc/`` (``../var/dvc-remote``) in the committed
``.dvc/config``; a user-specific remote (``services.dvc_remote_url``) goes to
the uncommitted ``.dvc/config.local``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from emotionthinker.config import PROJECT_ROOT, Config
from emotionthinker.services import local_path

REMOTE_NAME = "local"
log = logging.getLogger(__name__)


class VersioningError(RuntimeError):
    """A dataset cannot be versioned (outside the DVC repository, remote unreachable, ...)."""


@dataclass(frozen=True)
class DvcLocation:
    root: Path
    scm: bool  # True: the project's git repo; False: a standalone --no-scm repo


def git_ignored(repo: Path, path: Path) -> bool:
    """`git check-ignore` (read-only). When git cannot answer, say 'ignored': the safe choice is a standalone repo."""
    try:
        rc = subprocess.run(
            ["git", "-C", str(repo), "check-ignore", "-q", "--no-index", str(path)], capture_output=True, timeout=10
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return True
    return rc != 1  # 0 ignored, 1 not ignored, 128 git error


def git_changed(repo: Path, paths: list[Path]) -> list[str]:
    """Those of `paths` that git sees as new or modified, relative to the repository root."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-z", "--untracked-files=all", "--", *map(str, paths)],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(entry[3:] for entry in out.split("\0") if len(entry) > 3)


def dvc_location(cfg: Config, project_root: Path = PROJECT_ROOT) -> DvcLocation:
    """Which DVC repository versions cfg.data_dir (see the module docstring for the rule)."""
    data = cfg.data_dir.resolve()
    project_root = project_root.resolve()
    if data.is_relative_to(project_root) and (project_root / ".git").exists() and not git_ignored(project_root, data):
        return DvcLocation(project_root, scm=True)
    workspace = cfg.workspace.resolve()
    return DvcLocation(workspace if data.is_relative_to(workspace) else data, scm=False)


def _remote_url(cfg: Config) -> str:
    path = local_path(cfg.dvc_remote)
    return str(Path(path).resolve()) if path is not None else cfg.dvc_remote


def ensure_dvc_repo(cfg: Config, project_root: Path = PROJECT_ROOT) -> Path:
    """Initialise the DVC repository if missing and make `local` (cfg.dvc_remote) its default remote."""
    from dvc.config_schema import RelPath
    from dvc.repo import Repo

    loc = dvc_location(cfg, project_root)
    loc.root.mkdir(parents=True, exist_ok=True)
    if not (loc.root / ".dvc").is_dir():
        # In the git repo, `dvc init` stages .dvc/config and .dvcignore for the next commit (DVC's behaviour).
        Repo.init(str(loc.root), no_scm=not loc.scm).close()
    url = _remote_url(cfg)
    local_dir = local_path(url)
    if local_dir is not None:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
    with Repo(str(loc.root)) as repo:
        core = repo.config.get("core", {})
        current = repo.config.get("remote", {}).get(REMOTE_NAME, {}).get("url")  # loaded as an absolute path
        same = current is not None and os.path.normpath(str(current)) == os.path.normpath(url)
        if not same or core.get("remote") != REMOTE_NAME:
            if loc.scm and current is None and local_dir is not None and Path(url).is_relative_to(loc.root):
                # First set-up of the project repo: DVC saves a RelPath relative to .dvc/, fit to commit.
                level, value = "repo", RelPath(url)
            else:
                # A user-specific remote stays out of git in the project repo (config.local).
                level, value = ("local" if loc.scm else "repo"), url
            with repo.config.edit(level) as conf:
                conf["remote"][REMOTE_NAME] = {"url": value}
                conf["core"]["remote"] = REMOTE_NAME
        if not core.get("site_cache_dir"):
            with repo.config.edit("local") as conf:
                # DVC's state/index databases default to /var/tmp/dvc; keep them with the repository.
                conf["core"]["site_cache_dir"] = str(loc.root / ".dvc" / "tmp" / "site-cache")
    return loc.root


def read_dvc_md5(dvc_file: Path) -> str:
    """The md5 DVC recorded for the single output of a .dvc pointer ('….dir' for folders)."""
    meta = yaml.safe_load(Path(dvc_file).read_text())
    outs = meta.get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise VersioningError(f"{dvc_file} does not hold exactly one output with an md5")
    return str(outs[0]["md5"])


def dvc_add_and_push(path: Path, cfg: Config, project_root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Track `path` (file or folder) with DVC and push it to the default remote.

    Idempotent: adding unchanged data gives the same md5 and pushes nothing new.
    Returns {"path", "md5", "dvc_file", "remote"}; paths relative to the DVC root.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    path = Path(path).resolve()
    if not path.exists():
        raise VersioningError(f"cannot version {path}: it does not exist")
    if not cfg.services.dvc_track:
        # dvc.yaml owns this output; record the same content hash DVC will put in dvc.lock.
        return {"path": str(path), "md5": content_md5(path), "dvc_file": "dvc.lock", "remote": ""}
    root = ensure_dvc_repo(cfg, project_root)
    if not path.is_relative_to(root) or path == root:
        raise VersioningError(f"cannot version {path}: it is outside the DVC repository at {root}")
    dvc_file = path.with_name(path.name + ".dvc")
    try:
        with Repo(str(root)) as repo:
            # DVC's own "To track the changes with git" hint names paths relative to the current folder
            # and reached the log twice (its handler and Prefect's); ours below names them from the root.
            repo.scm_context.quiet = True
            repo.add([str(path)])
            repo.push(targets=[str(dvc_file)], remote=REMOTE_NAME)
    except DvcException as exc:
        raise VersioningError(f"DVC could not add/push {path}: {exc}") from exc
    if (root / ".git").exists():
        pending = git_changed(root, [dvc_file, path.parent / ".gitignore"])
        if pending:
            log.info("to pin this data version in git, in %s: git add %s && git commit", root, " ".join(pending))
    return {
        "path": str(path.relative_to(root)),
        "md5": read_dvc_md5(dvc_file),
        "dvc_file": str(dvc_file.relative_to(root)),
        "remote": _remote_url(cfg),
    }


def remote_has(md5: str, cfg: Config) -> bool:
    """Whether the local-directory remote holds the object (for a folder: its .dir listing and every file)."""
    import json

    remote = local_path(_remote_url(cfg))
    if remote is None:
        raise VersioningError("remote_has only inspects local-directory remotes")

    def obj(h: str) -> Path:
        return Path(remote) / "files" / "md5" / h[:2] / h[2:]

    if not obj(md5).is_file():
        return False
    if md5.endswith(".dir"):
        return all(obj(entry["md5"]).is_file() for entry in json.loads(obj(md5).read_text()))
    return True


def content_md5(path: Path) -> str:
    """DVC's md5 of a file, or of a folder ('<md5 of its listing>.dir'), computed the way DVC does."""
    from dvc_data.hashfile.hash import file_md5

    path = Path(path)
    if path.is_file():
        return file_md5(str(path))
    import hashlib
    import json

    entries = [
        {"md5": file_md5(str(f)), "relpath": f.relative_to(path).as_posix()}
        for f in sorted(path.rglob("*"), key=lambda f: f.relative_to(path).as_posix())
        if f.is_file()
    ]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"
