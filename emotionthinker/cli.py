"""`emotionthinker` command line. Commands are thin: they load the config and call plain functions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from emotionthinker.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ProfileOpt = typer.Option(None, "--profile", "-p", help="test | tiny (default) | paper")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file overriding the profile")


def _cfg(profile: Optional[str], config: Optional[Path]):
    try:
        cfg = load_config(profile, config)
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    from emotionthinker.services import configure_environment

    configure_environment(cfg)  # before Prefect/MLflow/DVC are imported anywhere
    return cfg


if __name__ == "__main__":  # pragma: no cover
    app()
