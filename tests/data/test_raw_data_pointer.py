"""data.dvc pins the raw corpora the platform starts from (../shared/data) by DVC content hash."""

from __future__ import annotations

import yaml

from emotionthinker.config import PROJECT_ROOT
from emotionthinker.versioning import content_md5
from tests.conftest import requires_shared_data


def pointer() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "data.dvc").read_text())


def test_pointer_imports_the_shared_data_into_the_git_ignored_raw_folder():
    p = pointer()
    assert p["frozen"] is True  # a pinned import: `dvc update` moves it, nothing else
    assert [d["path"] for d in p["deps"]] == ["../shared/data"] and [o["path"] for o in p["outs"]] == ["data/raw"]
    assert "/raw" in (PROJECT_ROOT / "data" / ".gitignore").read_text().split()


@requires_shared_data
def test_pointer_hash_is_the_shared_data_as_it_is():
    dep = pointer()["deps"][0]
    assert content_md5(PROJECT_ROOT / dep["path"]) == dep["md5"], "../shared/data changed: run `dvc update data.dvc`"
