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


@app.command()
def manifest(
    corpus: str = typer.Option(..., "--corpus", help="ravdess | emodb | iemocap | meld | savee | cremad | tess | jsonl | folder | demo"),
    root: Path = typer.Option(..., "--root", help="the corpus release folder (for jsonl: a .jsonl file or folder)"),
    out: Path = typer.Option(..., "--out", help="manifest .jsonl; the quarantine goes to <out>.quarantine.jsonl"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Build a corpus manifest: records, exclusions by source label, quarantined files with reasons."""
    from emotionthinker.corpora import CorpusLayoutError, UnknownCorpusError, build_manifest, format_summary, write_manifest

    cfg = _cfg(profile, config)
    try:
        result = build_manifest(corpus, root, cfg)
    except (UnknownCorpusError, CorpusLayoutError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(format_summary(write_manifest(result, out)))


@app.command()
def ingest(
    corpus: str = typer.Option(..., "--corpus", help="an adapter name, as for `manifest`"),
    root: Path = typer.Option(..., "--root", help="the corpus release folder"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Ingest a corpus (Prefect flow): manifest -> validation with quarantine -> DVC add + push -> MLflow run."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.corpora import CorpusLayoutError, UnknownCorpusError
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.ingest import ingest_flow

    try:
        out = ingest_flow(corpus=corpus, root=str(root.resolve()), profile=cfg.profile, config_file=str(config) if config else None)
    except (UnknownCorpusError, CorpusLayoutError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except ValidationFailed as exc:
        typer.secho(f"ingest stopped: {exc}", fg=typer.colors.RED, err=True)
        typer.echo(f"quarantine: {cfg.workspace / 'reports' / 'ingest' / corpus}; MLflow: `emotionthinker ui` -> {ui_url(cfg)}", err=True)
        raise typer.Exit(1) from None
    c = out["counts"]
    typer.echo(
        f"{corpus}: {c['files_found']} files -> {c['records']} records, {c['quarantined']} quarantined "
        f"{json.dumps(c['quarantine_by_reason'])}, {c['excluded']} excluded {json.dumps(c['excluded_by_label'])}, "
        f"{c['skipped']} skipped"
    )
    typer.echo(f"  manifest:   {out['manifest']}\n  quarantine: {out['quarantine']}")
    typer.echo(f"  data version (DVC md5): {json.dumps(out['data_version'])}")
    typer.echo(f"  MLflow run {out['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


@app.command()
def ui(
    port: Optional[int] = typer.Option(None, "--port", help="default: services.ui_port"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve the MLflow UI (tracking and registry) on 127.0.0.1 and print its URL; Ctrl-C stops it."""
    cfg = _cfg(profile, config)
    if port is not None:
        cfg.services.ui_port = port
    from emotionthinker.services import run_mlflow_ui, ui_url
    from emotionthinker.tracking import configure_mlflow

    configure_mlflow(cfg)  # the experiment and its artifact location exist before the server looks
    typer.echo(f"MLflow UI: {ui_url(cfg)}  (store {cfg.tracking_uri}, artifacts {cfg.artifact_root}; Ctrl-C to stop)")
    raise typer.Exit(run_mlflow_ui(cfg))


@app.command("demo-corpus")
def demo_corpus(
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: <paths.data>/demo)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Synthesise the nine-class espeak-ng demo corpus (metadata.jsonl) and its known-F0 glides (glides.jsonl)."""
    import time
    from collections import Counter

    from emotionthinker.democorpus import GLIDES_FILE, EspeakError, synthesize_demo_corpus
    from emotionthinker.records import read_jsonl

    cfg = _cfg(profile, config)
    root = out if out is not None else cfg.data_dir / "demo"
    start = time.perf_counter()
    try:
        metadata = synthesize_demo_corpus(root, cfg)
    except EspeakError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    records = read_jsonl(metadata)
    splits = Counter(r["split"] for r in records)
    typer.echo(f"{len(records)} clips, {len(set(r['speaker'] for r in records))} voices, "
               f"splits {dict(sorted(splits.items()))}, in {time.perf_counter() - start:.1f} s")
    typer.echo(f"  metadata: {metadata}\n  glides:   {metadata.parent / GLIDES_FILE}")
    typer.echo(f"  manifest: emotionthinker manifest --corpus demo --root {metadata.parent} --out <file.jsonl>")


if __name__ == "__main__":  # pragma: no cover
    app()
