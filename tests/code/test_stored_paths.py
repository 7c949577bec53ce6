"""Records keep audio paths relative to the project root, so the same data has the same bytes (and DVC
hash) in every checkout, and records restored into another checkout find their clips there."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from emotionthinker import config as config_module
from emotionthinker.audio import AudioNotFoundError, load_audio, probe
from emotionthinker.config import load_config
from emotionthinker.records import read_jsonl
from emotionthinker.stored_paths import resolve_stored_path, stored_path, stored_path_from_file
from emotionthinker.versioning import content_md5

SR = 16000


def voiced(path: Path, f0: float, seconds: float = 1.2) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)
    return path


def test_stored_form_is_root_relative_in_and_beside_the_project_else_absolute(tmp_path, monkeypatch):
    root = tmp_path / "a" / "project"
    root.mkdir(parents=True)
    assert stored_path(root / "data" / "demo" / "x.wav", root) == "data/demo/x.wav"
    assert stored_path(tmp_path / "a" / "shared" / "data" / "x.wav", root) == "../shared/data/x.wav"
    elsewhere = tmp_path / "b" / "x.wav"  # two levels up: nothing a second checkout would share
    assert stored_path(elsewhere, root) == elsewhere.as_posix()
    # A symlinked ../shared keeps the name the user laid out, not where the link points.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a" / "linked").symlink_to(tmp_path / "elsewhere")
    assert stored_path(tmp_path / "a" / "linked" / "x.wav", root) == "../linked/x.wav"
    # A relative path is a path on the command line: relative to the cwd, not to the project.
    (tmp_path / "a" / "shared").mkdir()
    monkeypatch.chdir(tmp_path / "a" / "shared")
    assert stored_path("x.wav", root) == "../shared/x.wav"


def test_resolution_prefers_the_record_files_folder_then_the_project_root(tmp_path, monkeypatch):
    root, external = tmp_path / "project", tmp_path / "release"
    monkeypatch.setattr(config_module, "PROJECT_ROOT", root)
    voiced(root / "data" / "a.wav", 150)
    voiced(external / "clips" / "b.wav", 150)
    assert resolve_stored_path("data/a.wav") == root / "data" / "a.wav"
    assert resolve_stored_path("clips/b.wav", external) == external / "clips" / "b.wav"
    assert resolve_stored_path("data/a.wav", external) == root / "data" / "a.wav"  # not in the file's folder
    assert resolve_stored_path(external / "clips" / "b.wav", root) == external / "clips" / "b.wav"
    # A model-stage reader keeps the stored form, so its data hashes do not name the checkout either.
    assert stored_path_from_file("data/a.wav", external) == "data/a.wav"
    assert stored_path_from_file("clips/b.wav", external) == "../release/clips/b.wav"  # beside the project
    assert load_audio("data/a.wav").size == int(1.2 * SR)
    with pytest.raises(AudioNotFoundError, match="taken against the project root") as err:
        probe("data/missing.wav")
    assert err.value.path == str(root / "data" / "missing.wav")
    with pytest.raises(AudioNotFoundError, match="taken against the project root"):
        load_audio("data/missing.wav")  # the loader's error explains it too


def _checkout(root: Path, monkeypatch, image_env: dict[str, str] | None = None) -> tuple[Path, object]:
    """A project folder with the same external-format corpus (paths relative to its .jsonl) inside it;
    ``image_env``: the ET_ variables of a Docker image, whose paths win over the checkout's defaults."""
    monkeypatch.setattr(config_module, "PROJECT_ROOT", root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")} | (image_env or {})
    paths = {k: v for k, v in {"workspace": "var", "data": "data"}.items() if f"ET_PATHS__{k.upper()}" not in env}
    cfg = load_config("test", environ=env, overrides={"paths": paths})
    corpus = cfg.data_dir / "raw" / "release"  # <root>/data/raw/release in a checkout
    rows = []
    for i, (f0, gender) in enumerate([(110, "male"), (125, "male"), (210, "female"), (240, "female")]):
        voiced(corpus / "clips" / f"c{i}.wav", f0)
        rows.append({"audio_path": f"clips/c{i}.wav", "emotion": "neutral", "transcription": "kids are talking",
                     "speaker": f"s{i}", "gender": gender, "split": "train"})  # fmt: skip
    (corpus / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpus / "meta.jsonl", cfg


def _ingest_and_annotate(meta: Path, cfg) -> tuple[Path, Path]:
    from emotionthinker import ingest
    from emotionthinker.annotate import annotate_manifest

    result = ingest.build("jsonl", meta, cfg)
    report = ingest.validate(result, cfg)
    ds = ingest.write_dataset("jsonl", report, ingest.count(result, report), cfg)
    out = cfg.data_dir / "annotated" / "jsonl" / "annotated.jsonl"
    annotate_manifest(ds.manifest, out, cfg, use_asr=False, workers=1, progress=False)
    return ds.directory, out


def _build_datasets(meta: Path, cfg) -> tuple[list[str], bytes, Path]:
    """Manifest, annotations and SFT corpus of a checkout; their DVC md5s, the annotated bytes, the manifests."""
    from emotionthinker.sft_data.corpus import build_sft_corpus

    manifests, out = _ingest_and_annotate(meta, cfg)
    records = read_jsonl(manifests / "manifest.jsonl")
    assert [r["audio_path"] for r in records] == [f"data/raw/release/clips/c{i}.wav" for i in range(4)]
    assert all(load_audio(r["audio_path"], cfg.audio).size for r in records)  # found in this checkout
    sft = cfg.data_dir / "sft"
    report = build_sft_corpus(read_jsonl(out), None, sft, cfg, enforce=False)
    samples = [s for f in sorted(report.files.values()) for s in read_jsonl(f)]
    rendered = [s["audio"][0] for s in samples if s["task"] == "comparative"]
    assert rendered and all(p.startswith("data/sft/audio/") for p in rendered)
    assert all(load_audio(p, cfg.audio).size for p in rendered)  # the rendered clips were kept
    return [content_md5(d) for d in (manifests, out.parent, sft)], out.read_bytes(), manifests


def test_two_checkouts_of_the_same_data_write_the_same_bytes(tmp_path, monkeypatch):
    built = []
    for base in (tmp_path / "one", tmp_path / "two" / "deeper"):  # different folders and depths
        built.append(_build_datasets(*_checkout(base / "project", monkeypatch))[:2])
    assert built[0] == built[1] and len(built[0][1].splitlines()) == 4


def test_records_restored_into_another_checkout_read_its_clips(tmp_path, monkeypatch):
    """What `dvc pull` does: the record files arrive in a checkout that never saw the original folder."""
    from models.grpo_data import load_grpo_data

    meta, cfg = _checkout(tmp_path / "one" / "project", monkeypatch)
    _, annotated = _ingest_and_annotate(meta, cfg)
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(tmp_path / "one" / "project", moved)
    shutil.rmtree(tmp_path / "one")  # the original checkout is gone
    monkeypatch.setattr(config_module, "PROJECT_ROOT", moved)
    data = load_grpo_data(moved / annotated.relative_to(tmp_path / "one" / "project"), cfg)
    assert [p.audio_path for p in data.prompts] and not data.quarantined
    assert all(p.audio_path.startswith("data/raw/release/") for p in data.prompts)


def _image_layout(fs: Path) -> tuple[Path, dict[str, str], Path]:
    """The GPU flow-run image rebuilt under ``fs`` from its Dockerfile and job variables: the project root
    (WORKDIR), the folders and links the image makes, its ET_ variables, and the workspace volume's mount."""
    from tests.code.test_docker_files import DOCKER, JOB_VARIABLES, parse_dockerfile

    def inside(path: str) -> Path:
        return fs / path.lstrip("/")

    volume = inside(yaml.safe_load(JOB_VARIABLES.read_text())["volumes"][0].split(":")[1])
    root, env, made, links = None, {}, set(), []
    for kind, value in parse_dockerfile(DOCKER / "Dockerfile.worker-gpu")[-1].instructions:
        if kind == "WORKDIR":
            root = inside(value)
        elif kind == "ENV":
            for key, _, val in (token.partition("=") for token in shlex.split(value)):
                if key.startswith("ET_"):
                    env[key] = str(inside(val)) if val.startswith("/") else val
        elif kind == "RUN":
            made |= {d for args in re.findall(r"mkdir -p ([^&]+)", value) for d in args.split()}
            links += re.findall(r"ln -s (\S+) (\S+)", value)
    assert root is not None
    for target, link in links:
        assert target in made, f"the image links {link} to {target}, which it does not create"
        inside(target).mkdir(parents=True, exist_ok=True)
        inside(link).parent.mkdir(parents=True, exist_ok=True)
        inside(link).symlink_to(inside(target))
    return root, env, volume


def test_the_gpu_images_layout_writes_the_same_bytes_as_a_checkout(tmp_path, monkeypatch):
    """The flow-run image keeps its state in the workspace volume, two folders from its project root. Its
    data/ and var/ are links there, so its records say 'data/...' like a checkout's; with ET_PATHS__DATA=
    /workspace/data they named /workspace/..., and a dataset made in the image differed from a checkout's."""
    from emotionthinker.versioning import dvc_add_and_push

    checkout = _build_datasets(*_checkout(tmp_path / "checkout" / "project", monkeypatch))[:2]

    root, image_env, volume = _image_layout(tmp_path / "image")
    meta, cfg = _checkout(root, monkeypatch, image_env)
    for folder in (cfg.data_dir, cfg.workspace, cfg.cache_dir):
        assert folder.resolve().is_relative_to(volume), f"{folder} is not in the workspace volume"
    *image, manifests = _build_datasets(meta, cfg)  # its asserts: 'data/...' paths, clips found
    assert image == list(checkout)
    versioned = dvc_add_and_push(manifests, cfg, root)  # DVC through the link: a repository in the volume
    assert versioned["md5"] == checkout[0][0]
    assert (cfg.data_dir.resolve() / versioned["dvc_file"]).is_file()


def test_a_symlinked_shared_folder_keeps_its_name_from_the_config_and_the_command_line(tmp_path, monkeypatch):
    """CI's layout: ``../shared`` is a link. Records must say ``../shared/...`` in every checkout; the
    link's target names one machine (resolve() used to follow it, and the paths came out absolute)."""
    import flows.ingest
    from typer.testing import CliRunner

    from emotionthinker import services
    from emotionthinker.cli import app
    from emotionthinker.corpora import build_manifest
    from emotionthinker.evaluation.report import prepare_data

    target = tmp_path / "disk" / "mounted" / "shared"
    for actor, f0 in ((1, 120), (2, 220)):
        for emotion in (1, 5):
            voiced(target / "data" / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", f0)
    project = tmp_path / "ci" / "main"
    project.mkdir(parents=True)
    (tmp_path / "ci" / "shared").symlink_to(target)
    monkeypatch.setattr(config_module, "PROJECT_ROOT", project)
    monkeypatch.chdir(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    cfg = load_config("test", environ=env, overrides={"paths": {"workspace": "var", "data": "data"}})
    assert cfg.shared_data_dir == tmp_path / "ci" / "shared" / "data"  # the link, not its target

    # `evaluate --benchmark ravdess` without --root reads the configured shared folder.
    data = prepare_data(cfg, None, "ravdess")
    paths = sorted(r["audio_path"] for r in data.records)
    assert len(paths) == 4 and all(p.startswith("../shared/data/ravdess/Actor_0") for p in paths)

    # `ingest --root ../shared/...`: the flow gets the folder by the name the user gave.
    given: dict[str, str] = {}

    class Stop(Exception):
        pass

    def fake_flow(**kwargs):
        given.update(kwargs)
        raise Stop

    monkeypatch.setattr(flows.ingest, "ingest_flow", fake_flow)
    monkeypatch.setattr(services, "configure_environment", lambda cfg: {})  # keep this process's services
    res = CliRunner().invoke(app, ["ingest", "--corpus", "ravdess", "--root", "../shared/data/ravdess", "-p", "test"])
    assert isinstance(res.exception, Stop), res.output
    assert given["root"] == str(tmp_path / "ci" / "shared" / "data" / "ravdess")
    records = build_manifest("ravdess", Path(given["root"]), cfg).records
    assert sorted(r.audio_path for r in records) == paths


def test_run_params_name_files_in_their_stored_form_and_the_promotion_gate_reads_them(tmp_path, monkeypatch):
    """A team's shared MLflow server: runs of two checkouts show the same params, and the promotion gate
    finds an earlier evaluation's manifest from its stored form in whichever checkout it runs."""
    from mlflow import MlflowClient

    from emotionthinker.evaluation.report import find_eval_data
    from emotionthinker.tracking import start_stage_run

    root = tmp_path / "work" / "project"
    manifest = root / "data" / "manifests" / "demo" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}\n")
    monkeypatch.setattr(config_module, "PROJECT_ROOT", root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ET_")}
    cfg = load_config("test", environ=env, overrides={"paths": {"workspace": "var", "data": "data"}})
    params = {"manifest": str(manifest), "model_dir": root / "var" / "sft" / "final",
              "shared": str(tmp_path / "work" / "shared" / "data"), "outside": str(tmp_path / "x.jsonl"),
              "benchmark": "demo", "split": "test", "limit": None}  # fmt: skip
    with start_stage_run(cfg, "evaluate", params, tags={"eval_data_version": "demo-0123"}) as run:
        pass
    logged = MlflowClient(cfg.tracking_uri).get_run(run.run_id).data.params
    assert (logged["manifest"], logged["model_dir"]) == ("data/manifests/demo/manifest.jsonl", "var/sft/final")
    assert logged["shared"] == "../shared/data" and logged["outside"] == str(tmp_path / "x.jsonl")
    monkeypatch.chdir(tmp_path)  # not the project root: the stored path is taken against the root
    # An evaluation without a limit (the retrain flow's) logs it as JSON 'null'; the gate read it as int('null').
    assert find_eval_data(cfg, "demo-0123") == {"manifest": str(manifest), "benchmark": None, "split": "test",
                                                "limit": None, "eval_data_version": "demo-0123"}  # fmt: skip
