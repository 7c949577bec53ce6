"""Real registered model versions for tests that need something in the MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path


def register_tiny_model(cfg, tmp_path: Path, name: str, seed: int, *, stage: str, alias: str | None = "challenger",
                        marker: str = "config.json", run_name: str | None = None) -> str:  # fmt: skip
    """Register a folder holding a small safetensors file and a JSON `marker` file, both unique to `seed`, as a
    new version of `name`, logged by a tracked run of `stage`; return the version."""
    import torch
    from safetensors.torch import save_file

    from emotionthinker.registry import register_model
    from emotionthinker.tracking import start_stage_run

    folder = tmp_path / f"{name}-{seed}"
    folder.mkdir()
    save_file({"w": torch.full((2, 2), float(seed))}, str(folder / "model.safetensors"))
    (folder / marker).write_text(json.dumps({"seed": seed}))
    with start_stage_run(cfg, stage, run_name=run_name) as run:
        return register_model(cfg, run.run_id, folder, name, alias=alias)
