"""`emotionthinker` command line. Commands are thin: they load the config and call plain functions."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import NoReturn, Optional

import typer

from emotionthinker.config import ConfigError, load_config
from emotionthinker.stored_paths import absolute_path

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ProfileOpt = typer.Option(None, "--profile", "-p", help="test | tiny (default) | paper")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file overriding the profile")
ResultOpt = typer.Option(None, "--result-out", help="also write the stage's result (metrics, MLflow run, registered version) as JSON (dvc.yaml metrics)")


def _fail(message: str, code: int = 1) -> NoReturn:
    """Say what stopped the command, in red on stderr, and exit: 2 for bad arguments, 1 for a stopped stage."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _require(ok: bool, message: str) -> None:
    if not ok:
        _fail(message, 2)


def _write_result(path: Optional[Path], res: dict) -> None:
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")


def _cfg(profile: Optional[str], config: Optional[Path]):
    try:
        cfg = load_config(profile, config)
    except ConfigError as exc:
        _fail(str(exc), 2)
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
    from emotionthinker.corpora import (
        CorpusLayoutError, UnknownCorpusError, build_manifest, format_summary, get_adapter, write_manifest,
    )  # fmt: skip

    cfg = _cfg(profile, config)
    try:
        result = build_manifest(corpus, root, cfg)
    except (UnknownCorpusError, CorpusLayoutError) as exc:
        _fail(str(exc), 2)
    typer.echo(format_summary(write_manifest(result, out)))
    if not result.records:  # e.g. the wrong adapter for the folder: every file quarantined as bad_name
        _fail(f"{corpus}: no usable record under {absolute_path(root)}; is it a {corpus} release? expected "
              f"{get_adapter(corpus).layout}")  # fmt: skip


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
        out = ingest_flow(corpus=corpus, root=str(absolute_path(root)), profile=cfg.profile, config_file=str(config) if config else None)
    except (UnknownCorpusError, CorpusLayoutError) as exc:
        _fail(str(exc), 2)
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
        _fail(str(exc))
    records = read_jsonl(metadata)
    splits = Counter(r["split"] for r in records)
    typer.echo(f"{len(records)} clips, {len(set(r['speaker'] for r in records))} voices, "
               f"splits {dict(sorted(splits.items()))}, in {time.perf_counter() - start:.1f} s")
    typer.echo(f"  metadata: {metadata}\n  glides:   {metadata.parent / GLIDES_FILE}")
    typer.echo(f"  manifest: emotionthinker manifest --corpus demo --root {metadata.parent} --out <file.jsonl>")


models_app = typer.Typer(no_args_is_help=True, help="Backbone checkpoints (sources: hub:, packaged:, registry:, random:, path).")
app.add_typer(models_app, name="models")


@models_app.command("build-base")
def models_build_base(profile: Optional[str] = ProfileOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Assemble the tiny base audio LLM from the packaged weights (once, then cached); print its folder."""
    import time

    from models.assemble import ensure_tiny_base

    cfg = _cfg(profile, config)
    start = time.perf_counter()
    folder = ensure_tiny_base(cfg.cache_dir, cfg.models.audio_window_s, cfg.models.seed)
    typer.echo(f"ready in {time.perf_counter() - start:.1f} s", err=True)
    typer.echo(str(folder))


@app.command("train-gender")
def train_gender(
    manifest: list[Path] = typer.Option(..., "--manifest", "-m", help="manifest .jsonl with speaker genders (repeatable)"),
    no_register: bool = typer.Option(False, "--no-register", help="evaluate and save the JSON weights only"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Train the speaker-gender classifier, report leave-one-speaker-out accuracy, register it in MLflow."""
    from emotionthinker.traits.gender import GenderTrainingError, train_gender_classifier

    cfg = _cfg(profile, config)
    try:
        report = train_gender_classifier(manifest, cfg, register=not no_register, progress=True)
    except GenderTrainingError as exc:
        _fail(str(exc), 2)
    typer.echo(report.summary())
    typer.echo(f"  weights: {report.model_path}" + (f"; MLflow run {report.run_id}" if report.run_id else ""))


@app.command()
def transcribe(
    audio: Path = typer.Argument(..., help="an audio file"),
    text: Optional[str] = typer.Option(None, "--text", help="known transcription: only align it"),
    language: Optional[str] = typer.Option(None, "--language", help="language of --text (espeak-ng voice), e.g. de"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Transcribe (or align a known text), print word timings, prominence and the stressed words."""
    from emotionthinker.audio import AudioError, load_audio
    from emotionthinker.prosody.asr import AsrError, get_transcriber
    from emotionthinker.prosody.stress import build_stress_detector, stressed_words

    cfg = _cfg(profile, config)
    try:
        y = load_audio(absolute_path(audio), cfg.audio)  # relative to the cwd, not the project root
        asr = get_transcriber(cfg.asr)
        tr = asr.align_known_text(y, text, language) if text else asr.transcribe(y)
    except (AudioError, AsrError) as exc:
        _fail(str(exc))
    prominences = build_stress_detector(cfg.asr, cfg.prosody).detect(y, cfg.audio.sample_rate, tr.words)
    typer.echo(f"{tr.source}: {tr.text}")
    for w, p in zip(tr.words, prominences):
        typer.echo(f"  {w.start:6.2f}-{w.end:6.2f}  {w.word:<16} prominence {p.prominence:+.2f}{'  *' if p.stressed else ''}")
    typer.echo(f"stressed words: {', '.join(stressed_words(prominences)) or '-'}")


@app.command()
def cot(
    inp: Path = typer.Option(..., "--in", help="annotated records .jsonl"),
    out: Path = typer.Option(..., "--out", help="EmotionCoT .jsonl (appended, resumable); failures go to <out stem>.errors.jsonl"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Write reasoning for annotated records: cot.base_url endpoint (OpenAI-compatible) or the offline composer."""
    import json

    from emotionthinker.cot import write_cot
    from emotionthinker.cot.client import CotEndpointError
    from emotionthinker.records import read_input_jsonl

    cfg = _cfg(profile, config)
    _require(inp.is_file(), f"input not found: {inp}")
    try:
        report = write_cot(read_input_jsonl(inp), out, cfg, progress=True)
    except CotEndpointError as exc:
        _fail(str(exc), 2)
    typer.echo(
        f"{report.writer} ({report.model}, prompt {report.prompt_version}): {report.n_written} written, "
        f"{report.n_resumed} already there, {report.n_errors} errors {json.dumps(dict(report.error_reasons))}, "
        f"{report.n_cached} cached, {report.n_retries} retries {json.dumps(dict(report.retries))}, "
        f"tokens {json.dumps(report.usage)}"
    )
    typer.echo(f"  out:    {report.out_path}\n  errors: {report.errors_path}")


@app.command("rm-data")
def rm_data(
    inp: Path = typer.Option(..., "--in", help="EmotionCoT .jsonl (gold reasoning)"),
    out: Path = typer.Option(..., "--out", help="reward-model (q, r, g) tuples .jsonl"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Build reward-model tuples: gold reasoning (5,5,5,5) plus degraded variants; print the score histogram."""
    from emotionthinker.cot import write_rm_tuples
    from emotionthinker.cot.client import CotEndpointError

    cfg = _cfg(profile, config)
    _require(inp.is_file(), f"input not found: {inp}")
    try:
        summary = write_rm_tuples(inp, out, cfg)
    except CotEndpointError as exc:
        _fail(str(exc), 2)
    typer.echo(f"{summary['n_tuples']} tuples ({summary['n_gold']} gold, {summary['n_degraded']} degraded, "
               f"{summary['n_failed']} failed, {summary['n_off_target']} off target) -> {summary['out']}")
    typer.echo("score histogram (levels 1..5):")
    for criterion, hist in summary["histogram"].items():
        typer.echo(f"  {criterion:<32} " + " ".join(f"{hist[lv]:>5}" for lv in range(1, 6)))


@app.command("sft-data")
def sft_data(
    annotated: Path = typer.Option(..., "--annotated", help="annotated records (.jsonl) from the annotate stage"),
    cot_file: Optional[Path] = typer.Option(None, "--cot", help="EmotionCoT records (.jsonl) for cold-start CoT samples"),
    out: Path = typer.Option(..., "--out", help="output folder: stage1/stage2 .{train,validation}.jsonl, audio/, report.json"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Build the prosody-centric SFT corpus: stress, attribute, comparative, ASR and CoT samples, GX-validated."""
    from emotionthinker.locks import OutputBusy
    from emotionthinker.records import read_input_jsonl, read_jsonl
    from emotionthinker.sft_data import build_sft_corpus, output_lock
    from emotionthinker.validation import ValidationFailed

    cfg = _cfg(profile, config)
    if cot_file is not None and not cot_file.is_file():
        _fail(f"no such file: {cot_file}", 2)
    try:
        with output_lock(absolute_path(out), cfg):
            report = build_sft_corpus(read_input_jsonl(annotated), read_jsonl(cot_file) if cot_file else None, out, cfg)
    except ValidationFailed as exc:
        _fail(f"sft-data stopped: {exc}; quarantine files in {out}")
    except OutputBusy as exc:
        _fail(f"sft-data cannot start: {exc}", 2)
    typer.echo(report.summary())
    typer.echo(f"  files: {absolute_path(out)}  (report.json, augmentations.jsonl) in {report.wall_seconds:.1f} s")




@app.command()
def annotate(
    manifest: Path = typer.Option(..., "--manifest", help="manifest .jsonl (from `manifest` or `ingest`)"),
    out: Optional[Path] = typer.Option(None, "--out", help="annotated .jsonl; default <data>/annotated/<corpus>/annotated.jsonl"),
    asr: bool = typer.Option(True, "--asr/--no-asr", help="word timings/transcripts by ASR (stressed words need them)"),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="reuse level thresholds of an earlier batch"),
    workers: Optional[int] = typer.Option(None, "--workers", help="processes (default: prosody.workers, 0 = all cores)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Annotate prosody (Prefect flow): levels, intonation, stress, traits -> GX -> DVC -> MLflow. Resumable."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.locks import OutputBusy
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.annotate import annotate_flow

    _require(manifest.is_file(), f"manifest not found: {manifest}")
    try:
        res = annotate_flow(
            manifest=str(manifest), out=str(out) if out else None, profile=cfg.profile,
            config_file=str(config) if config else None, use_asr=asr,
            calibration=str(calibration) if calibration else None, workers=workers,
        )  # fmt: skip
    except ValidationFailed as exc:
        _fail(f"annotate stopped: {exc}")
    except OutputBusy as exc:
        _fail(f"annotate cannot start: {exc}", 2)
    typer.echo(f"annotated: {res['annotated']}\n  counts: {json.dumps(res['counts'])}  ({res['speed']})")
    typer.echo(f"  quarantine: {res['quarantine']}\n  calibration: {res['calibration']}")
    version = json.dumps(res["data_version"]) if res["data_version"] else f"none: DVC versions folders inside {cfg.data_dir} only"
    typer.echo(f"  data version (DVC md5): {version}\n  MLflow run {res['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


def _run_retrain(cfg, config: Optional[Path], corpus: Optional[str], root: Optional[Path]) -> None:
    from emotionthinker.retrain import RetrainError, corpus_root, workspace_lock
    from emotionthinker.validation import ValidationFailed
    from flows.retrain import retrain_flow
    from models.sft import SftDataError

    folder = str(absolute_path(root)) if root else None
    try:  # before Prefect starts; the flow checks both again
        corpus_root(cfg, corpus or cfg.retrain.corpus, folder)
        if cfg.retrain.lock_timeout_s == 0:
            with workspace_lock(cfg):
                pass
    except RetrainError as exc:
        _fail(f"retrain cannot start: {exc}", 2)
    try:
        res = retrain_flow(profile=cfg.profile, config_file=str(config) if config else None, corpus=corpus,
                           root=folder)  # fmt: skip
    except (ValidationFailed, RetrainError, SftDataError) as exc:
        _fail(f"retrain stopped: {exc}")
    typer.echo("\n" + res["summary"])


@app.command()
def demo(profile: Optional[str] = ProfileOpt, config: Optional[Path] = ConfigOpt) -> None:
    """The main job on embedded defaults: the retrain flow on the synthesised demo corpus, every stage to champion."""
    _run_retrain(_cfg(profile, config), config, "demo", None)


@app.command()
def retrain(
    corpus: Optional[str] = typer.Option(None, "--corpus", help="corpus adapter (default retrain.corpus: demo)"),
    root: Optional[Path] = typer.Option(None, "--root", help="corpus folder (default retrain.root)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Retrain (Prefect flow): ingest -> annotate -> CoT -> SFT data -> SFT -> RM -> GRPO-PTR -> evaluate -> promote.

    Stages whose inputs, settings and code are unchanged since they finished are skipped (cached)."""
    _run_retrain(_cfg(profile, config), config, corpus, root)


train_app = typer.Typer(no_args_is_help=True, help="Training stages: sft (EmotionThinker-Base), rm (reasoning reward model), grpo (GRPO-PTR policy).")
app.add_typer(train_app, name="train")


@train_app.command("sft")
def train_sft(
    data: Optional[Path] = typer.Option(None, "--data", help="folder with stage{1,2}.{train,validation}.jsonl (default: sft.data_dir or <paths.data>/sft)"),
    result_out: Optional[Path] = ResultOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Prosody-centric SFT (Prefect flow): stage I -> stage II (LoRA, merged) -> evaluation -> registry @challenger."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.sft import sft_flow
    from models.sft import SftDataError, SftTrainingError

    try:
        res = sft_flow(profile=cfg.profile, config_file=str(config) if config else None,
                       data_dir=str(absolute_path(data)) if data else None)  # fmt: skip
    except (SftDataError, ValidationFailed, SftTrainingError) as exc:
        _fail(f"sft stopped: {exc}")
    _write_result(result_out, res)
    for stage, r in res["stages"].items():
        typer.echo(f"{stage}: {r['global_step']} steps, loss {r['first_loss']} -> {r['last_loss']}, {r['runtime_s']:.0f} s"
                   + (" (reused)" if r["reused"] else "") + f"\n  model: {r['model_dir']}")  # fmt: skip
    typer.echo(f"held-out (trained): {json.dumps({k: round(v, 3) for k, v in res['eval'].items()})}")
    if res["base_eval"]:
        typer.echo(f"held-out (base):    {json.dumps({k: round(v, 3) for k, v in res['base_eval'].items()})}")
    if res["registered"]:
        reg = res["registered"]
        typer.echo(f"registered {reg['name']} v{reg['version']} @{reg['alias']} (load with {reg['source']})")
    typer.echo(f"data version: {json.dumps(res['data_version'])}; {res['wall_s']:.0f} s")
    typer.echo(f"MLflow run {res['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


@app.command("cot-data")
def cot_data(
    annotated: Path = typer.Option(..., "--annotated", help="annotated records .jsonl (from `annotate`)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="default <data>/cot/<corpus>/"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """The CoT stage as a Prefect flow: reasoning + reward-model tuples -> GX -> DVC -> MLflow."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.locks import OutputBusy
    from emotionthinker.validation import ValidationFailed
    from flows.cot import cot_flow

    _require(annotated.is_file(), f"annotated records not found: {annotated}")
    try:
        res = cot_flow(annotated=str(annotated), out_dir=str(out_dir) if out_dir else None,
                       profile=cfg.profile, config_file=str(config) if config else None)  # fmt: skip
    except ValidationFailed as exc:
        _fail(f"cot stopped: {exc}")
    except OutputBusy as exc:
        _fail(f"cot cannot start: {exc}", 2)
    typer.echo(f"{res['writer']}: {json.dumps(res['counts'])}\n  cot: {res['cot']}\n  rm tuples: {res['rm_tuples']}")
    typer.echo(f"  data version: {json.dumps(res['data_version'])}\n  MLflow run {res['run_id']}")


@app.command()
def promote(
    model: Optional[str] = typer.Option(None, "--model", help="registered model (default: promotion.model_name, emotionthinker-policy)"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="compare on this evaluation data version (default: latest both have)"),
    gate_metric: Optional[str] = typer.Option(None, "--metric", help="gate metric (default: promotion.gate_metric, uar)"),
    version: Optional[str] = typer.Option(None, "--version", help="gate this registered version (e.g. 3, one picked in the MLflow UI) instead of the `challenger` alias's"),
    use_flow: bool = typer.Option(True, "--flow/--no-flow", help="as a Prefect flow (concurrency limit) or the plain function (file lock only)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Move `champion` to the `challenger` version (or --version) only if it wins on the gate metric on the same evaluation data."""
    cfg = _cfg(profile, config)
    from emotionthinker.promotion import Decision, PromotionError, resolve_version
    from emotionthinker.services import ui_url

    name = model or cfg.promotion.model_name
    if name not in cfg.promotion.model_names:
        _fail(f"unknown model {name!r}; promotion.model_names: {', '.join(cfg.promotion.model_names)}", 2)
    try:
        if version is not None:
            version = resolve_version(cfg, name, version)  # a typo stops here, not in a retried task
        if use_flow:
            from flows.promote import promote_flow

            res = promote_flow(model=name, profile=cfg.profile, config_file=str(config) if config else None,
                               gate_metric=gate_metric, eval_data_version=eval_data, version=version)  # fmt: skip
            summary, decision, run_id = res["summary"], Decision(res["decision"]), res["run_id"]
        else:
            from emotionthinker.promotion import promote as promote_model
            from flows.promote import default_evaluator

            d = promote_model(cfg, name, gate_metric, eval_data, evaluate_fn=default_evaluator(cfg), version=version)
            summary, decision, run_id = d.summary(), d.decision, d.run_id
    except PromotionError as exc:
        _fail(str(exc), 2)
    typer.echo(summary)
    typer.echo(f"  decision recorded: MLflow run {run_id} (stage promote); `emotionthinker ui` -> {ui_url(cfg)}")
    # Nothing to decide is a failure for a pipeline step; "kept" is a decision like "promoted".
    if decision in (Decision.NO_CHALLENGER, Decision.MISSING_EVALUATION, Decision.CHAMPION_CHANGED):
        raise typer.Exit(1)


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, "--port", help="local Prefect server port (default: schedule.prefect_port)"),
    interval: Optional[float] = typer.Option(None, "--interval", help="run every N seconds instead of schedule.cron"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Start a local Prefect server and serve the retrain flow on schedule.cron on this machine; Ctrl-C stops."""
    import signal

    cfg = _cfg(profile, config)
    from emotionthinker.schedule import PrefectServerError, serve as serve_scheduled

    def _terminate(signum, frame):  # until Prefect's runner installs its own SIGTERM handler
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    when = f"every {interval:g} s" if interval else f"cron '{cfg.schedule.cron}' ({cfg.schedule.timezone})"
    typer.echo(f"serving deployment {cfg.schedule.deployment_name!r} {when}, profile {cfg.profile}")
    try:
        serve_scheduled(cfg, config_file=config, interval_s=interval, port=port)
    except PrefectServerError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@train_app.command("rm")
def train_rm(
    tuples: Path = typer.Option(..., "--tuples", help="reward-model (q, r, g) tuples .jsonl (from `cot-data` or `rm-data`)"),
    result_out: Optional[Path] = ResultOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Reasoning reward model (Prefect flow): train -> held-out Spearman per criterion -> registry @challenger."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.reward_model import reward_model_flow
    from models.reward_model import RmDataError
    from models.sft import SftTrainingError

    _require(tuples.is_file(), f"tuples not found: {tuples}")
    try:
        res = reward_model_flow(rm_tuples=str(absolute_path(tuples)), profile=cfg.profile,
                                config_file=str(config) if config else None)  # fmt: skip
    except (RmDataError, ValidationFailed, SftTrainingError) as exc:
        _fail(f"reward model stopped: {exc}")
    _write_result(result_out, res)
    tr = res["training"]
    typer.echo(f"tuples: {json.dumps(res['counts'])} (held out {res['split_by']})")
    typer.echo(f"trained {tr['global_step']} steps, loss {tr['first_loss']} -> {tr['last_loss']}, {tr['runtime_s']:.0f} s"
               + (" (reused)" if tr["reused"] else "") + f"\n  model: {res['model_dir']}")  # fmt: skip
    for name, metrics in (("trained", res["eval"]), ("base", res["base_eval"])):
        if metrics:
            typer.echo(f"held-out ({name}): " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    if res["registered"]:
        reg = res["registered"]
        typer.echo(f"registered {reg['name']} v{reg['version']} @{reg['alias']} (load with {reg['source']})")
    typer.echo(f"data version: {json.dumps(res['data_version'])}; {res['wall_s']:.0f} s")
    typer.echo(f"MLflow run {res['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="hub:<id>, packaged:tiny-base, registry:<name>@<alias>, random:<name> or a folder"),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="manifest .jsonl to evaluate (else --benchmark's corpus folder)"),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="iemocap | meld | ravdess | savee | emodb | cremad | tess: name and split protocol"),
    judge: list[str] = typer.Option([], "--judge", help="llm | rm | factual (repeatable; default eval.judges)"),
    no_judge: bool = typer.Option(False, "--no-judge", help="accuracy only"),
    split: Optional[str] = typer.Option(None, "--split", help="override the benchmark's split (train/validation/test/all)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="first N selected clips only"),
    annotated: Optional[Path] = typer.Option(None, "--annotated", help="annotated records of these clips (for the judges)"),
    root: Optional[Path] = typer.Option(None, "--root", help="corpus folder for --benchmark without --manifest (default: shared data)"),
    variant: Optional[str] = typer.Option(None, "--variant", help="Table-4 variant tag (default: from the registry)"),
    result_out: Optional[Path] = ResultOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Evaluate a model (Prefect flow): batched answers -> UAR/WA/macro-F1/format/confusion -> judges -> MLflow."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.evaluation.data import EvalDataError
    from emotionthinker.evaluation.judges import JudgeError, check_judges
    from emotionthinker.registry import check_source
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.evaluate import evaluate_flow
    from models.sources import SourceError

    try:
        check_judges([] if no_judge else (judge or cfg.eval.judges), cfg)  # before the flow starts: a clear message
        check_source(model, cfg)
        res = evaluate_flow(
            model_source=model, manifest=str(absolute_path(manifest)) if manifest else None, benchmark=benchmark,
            profile=cfg.profile, config_file=str(config) if config else None,
            judges=[] if no_judge else (judge or None), split=split, limit=limit,
            annotated=str(annotated) if annotated else None, root=str(root) if root else None, variant=variant,
        )  # fmt: skip
    except (EvalDataError, JudgeError, SourceError, ValidationFailed, ValueError) as exc:
        typer.secho(f"evaluate stopped: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1 if isinstance(exc, ValidationFailed) else 2) from None
    _write_result(result_out, res)
    m = res["metrics"]
    typer.echo(f"{res['model']['label']} on {res['benchmark']} ({res['n']} clips, {res['quarantined']} quarantined): "
               f"UAR {m['uar']:.4f}  WA {m['weighted_accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
               f"format {m.get('format_rate', float('nan')):.3f}  answered {m['answer_rate']:.3f}")  # fmt: skip
    for name, j in res["judges"].items():
        means = ", ".join(f"{k} {v:.2f}" for k, v in j["means"].items())
        typer.echo(f"  judge {name}: {means or '-'} ({j['n_scored']} scored, failures {json.dumps(j['failures'])})")
    typer.echo(f"  outputs: {res['outputs']['jsonl']} (+ .csv)\n  eval data version: {res['eval_data_version']}")
    typer.echo(f"  MLflow run {res['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


@app.command()
def infer(
    clip: Path = typer.Argument(..., help="an audio file"),
    model: Optional[str] = typer.Option(None, "--model", help="model source (default: registry policy@champion, else newest challenger)"),
    asr: bool = typer.Option(True, "--asr/--no-asr", help="transcribe (and find stressed words)"),
    gender: Optional[str] = typer.Option(None, "--gender", help="male | female, when known (else the registered classifier)"),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="level thresholds (default: newest annotate run, else the shipped default)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Print a clip's prosody annotation and the model's reasoning and answer."""
    from emotionthinker.audio import AudioError
    from emotionthinker.evaluation.infer import NoModelError, format_inference, infer_clip
    from models.sources import SourceError

    cfg = _cfg(profile, config)
    if gender is not None and gender.lower() not in ("male", "female"):
        _fail("--gender must be male or female", 2)
    try:
        result = infer_clip(clip, cfg, model, use_asr=asr, gender=gender, calibration=calibration)
    except NoModelError as exc:
        _fail(str(exc), 2)
    except (AudioError, SourceError) as exc:
        _fail(str(exc))
    typer.echo(format_inference(result))


@app.command()
def tables(
    out: Optional[Path] = typer.Option(None, "--out", help="folder for table2.md, table4.md, tables.md (default <workspace>/evaluation/tables)"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Write the Table-2 and Table-4 comparison tables (MLflow evaluation runs beside the paper) as Markdown."""
    from emotionthinker.evaluation.tables import write_tables

    cfg = _cfg(profile, config)
    res = write_tables(cfg, out)
    typer.echo(res["markdown"]["table2"])
    typer.echo(res["markdown"]["table4"])
    typer.echo(f"{res['n_runs']} evaluation runs -> {res['paths']['tables']} (MLflow run {res['run_id']})")


@app.command()
def baseline(
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="manifest .jsonl to evaluate"),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="benchmark name and split protocol (as for evaluate)"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="AudioLM source whose audio encoder is probed (default models.policy_source)"),
    train_manifest: Optional[Path] = typer.Option(None, "--train-manifest", help="train split source (default: the evaluated manifest)"),
    split: Optional[str] = typer.Option(None, "--split"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    root: Optional[Path] = typer.Option(None, "--root", help="corpus folder for --benchmark without --manifest"),
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Linear-probe baseline: logistic regression on the frozen audio encoder's mean-pooled states."""
    from emotionthinker.evaluation.baselines import BaselineError, run_linear_probe
    from emotionthinker.evaluation.data import EvalDataError

    cfg = _cfg(profile, config)
    try:
        res = run_linear_probe(cfg, encoder, str(absolute_path(manifest)) if manifest else None, benchmark, split, limit,
                               str(absolute_path(train_manifest)) if train_manifest else None, str(root) if root else None)  # fmt: skip
    except (BaselineError, EvalDataError) as exc:
        _fail(f"baseline stopped: {exc}", 2)
    m = res["metrics"]
    typer.echo(f"linear probe on {res['benchmark']} ({res['n']} clips, {res['probe']['mode']}, "
               f"{res['probe']['n_train']} train clips): UAR {m['uar']:.4f}  WA {m['weighted_accuracy']:.4f}  "
               f"macro-F1 {m['macro_f1']:.4f}; MLflow run {res['run_id']}")  # fmt: skip


@train_app.command("grpo")
def train_grpo(
    data: Path = typer.Option(..., "--data", help="prompt records .jsonl: manifest, annotated or CoT records (audio + emotion)"),
    policy: Optional[str] = typer.Option(None, "--policy", help="EmotionThinker-Base source, e.g. registry:emotionthinker-base@challenger (default: grpo.policy_source or models.policy_source)"),
    reward: Optional[str] = typer.Option(None, "--reward", help="reward model source (default: rm.scorer_source; the untrained base with --untrained-rm)"),
    plain_grpo: Optional[bool] = typer.Option(None, "--plain-grpo/--no-plain-grpo", help="ablation: no reasoning reward R_t"),
    untrained_rm: Optional[bool] = typer.Option(None, "--untrained-rm/--trained-rm", help="ablation: R_t from the untrained base"),
    no_trust_weight: Optional[bool] = typer.Option(None, "--no-trust-weight/--trust-weight", help="ablation: tau = 1"),
    no_progressive: Optional[bool] = typer.Option(None, "--no-progressive/--progressive", help="ablation: R_t from the first step"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="default: grpo.max_steps"),
    result_out: Optional[Path] = ResultOpt,
    profile: Optional[str] = ProfileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """GRPO-PTR (Prefect flow): sample K answers per clip, R_f + R_o + trust-weighted R_t -> policy @challenger."""
    import json

    cfg = _cfg(profile, config)
    from emotionthinker.registry import check_source
    from emotionthinker.services import ui_url
    from emotionthinker.validation import ValidationFailed
    from flows.grpo_ptr import grpo_ptr_flow
    from models.grpo_data import GrpoDataError
    from models.grpo_trainer import GrpoTrainingError
    from models.sources import SourceError

    _require(data.is_file(), f"prompt file not found: {data}")
    try:
        for source in (policy, reward):
            if source:
                check_source(source, cfg)
    except SourceError as exc:
        _fail(str(exc), 2)
    try:
        res = grpo_ptr_flow(train_manifest_or_cot=str(absolute_path(data)), policy_source=policy, reward_source=reward,
                            profile=cfg.profile, config_file=str(config) if config else None, plain_grpo=plain_grpo,
                            untrained_rm=untrained_rm, no_trust_weight=no_trust_weight, no_progressive=no_progressive,
                            max_steps=max_steps)  # fmt: skip
    except (GrpoDataError, GrpoTrainingError, ValidationFailed, SourceError) as exc:
        _fail(f"grpo stopped: {exc}")
    _write_result(result_out, res)
    s = res["summary"]
    typer.echo(f"prompts: {json.dumps(res['counts'])}")
    typer.echo(f"GRPO-PTR from {res['policy_source']}: {res['global_step']} steps, R_t on at step {res['switch_step']}"
               + (" (reused)" if res["reused"] else "") + f"\n  model: {res['model_dir']}")  # fmt: skip
    typer.echo(f"mean reward {s['reward_first5']:.3f} -> {s['reward_last5']:.3f}, accuracy {s['accuracy_first5']:.3f} -> "
               f"{s['accuracy_last5']:.3f} (first vs last 5 steps)")  # fmt: skip
    if res["registered"]:
        reg = res["registered"]
        typer.echo(f"registered {reg['name']} v{reg['version']} @{reg['alias']} (load with {reg['source']})")
    typer.echo(f"data version: {json.dumps(res['data_version'])}; {res['wall_s']:.0f} s")
    typer.echo(f"MLflow run {res['run_id']}: `emotionthinker ui` -> {ui_url(cfg)}")


# A file or folder the command was pointed at that it cannot use: a user's path, not a bug in the code.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def main() -> None:
    """Console entry point: bad input found deep inside a stage, or a path the command cannot read or
    write (an --out folder under a read-only or missing parent, a full disk), ends as one red line."""
    from emotionthinker.errors import InputError

    try:
        app()
    except InputError as exc:
        typer.secho(f"bad input: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
    except OSError as exc:
        if exc.errno not in _PATH_ERRNOS or not exc.filename:
            raise
        why = "a file is there where a folder is needed" if exc.errno == errno.EEXIST else exc.strerror  # mkdir
        typer.secho(f"cannot use {exc.filename}: {why}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
