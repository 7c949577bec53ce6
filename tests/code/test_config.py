from pathlib import Path

import pytest

from emotionthinker.config import PROJECT_ROOT, Config, ConfigError, load_config


def test_default_profile_is_tiny():
    cfg = load_config(environ={})
    assert cfg.profile == "tiny"
    assert cfg.tracking_uri.startswith("sqlite:///") and cfg.tracking_uri.endswith("mlflow.db")
    assert cfg.services.ui_host == "127.0.0.1"


def test_profiles_differ_only_by_overrides():
    test, paper = load_config("test", environ={}), load_config("paper", environ={})
    assert test.demo.clips_per_class < load_config("tiny", environ={}).demo.clips_per_class
    assert paper.asr.source.startswith("hub:")


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_config("huge", environ={})


def test_profile_from_environment():
    assert load_config(environ={"ET_PROFILE": "test"}).profile == "test"


def test_yaml_then_env_override(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("audio:\n  max_duration_s: 30\nprosody:\n  flat_span_st: 2.5\n")
    cfg = load_config("tiny", f, environ={"ET_AUDIO__MAX_DURATION_S": "20"})
    assert cfg.audio.max_duration_s == 20  # env wins over the file
    assert cfg.prosody.flat_span_st == 2.5


def test_config_file_from_env(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("validation:\n  max_failure_rate: 0.05\n")
    assert load_config(environ={"ET_CONFIG": str(f)}).validation.max_failure_rate == 0.05


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"ET_AUDIO__MAX_DURATION_S": "-1", "ET_PROSODY__NO_SUCH_KNOB": "1"})
    msg = str(err.value)
    assert "audio.max_duration_s" in msg and "prosody.no_such_knob" in msg


def test_cross_field_check():
    with pytest.raises(ConfigError, match="min_duration_s must be below"):
        load_config(overrides={"audio": {"min_duration_s": 5, "max_duration_s": 4}}, environ={})


def test_bad_yaml_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(config_file=tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=bad, environ={})
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(config_file=lst, environ={})


def test_profile_mismatch_in_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("profile: paper\n")
    with pytest.raises(ConfigError, match="sets profile 'paper'"):
        load_config("tiny", f, environ={})


def test_relative_paths_resolve_against_project_root():
    cfg = load_config(environ={})
    assert cfg.workspace == PROJECT_ROOT / "var"  # not the current directory's var/
    assert isinstance(cfg, Config)


def test_every_folder_in_the_config_is_taken_against_the_project_root(tmp_path: Path, monkeypatch):
    """A scheduled run starts in whatever folder `serve` or the worker was started in; a relative folder
    in the config must name the same place from there. Paths on the command line stay cwd-relative."""
    from emotionthinker import config as config_module
    from emotionthinker.evaluation.data import eval_root
    from emotionthinker.prosody.asr import resolve_model_location
    from emotionthinker.prosody.stress import WhiStressDetector
    from emotionthinker.traits.gender import gender_model_identity
    from models import grpo_pipeline, reward_model, sft_pipeline

    root = tmp_path / "project"
    monkeypatch.setattr(config_module, "PROJECT_ROOT", root)
    for folder in ("models/asr", "models/whistress", "data/sft-large"):
        (root / folder).mkdir(parents=True)
    (root / "models" / "asr" / "model.bin").write_bytes(b"x")
    (root / "models" / "whistress" / "metadata.json").write_text("{}")
    (root / "models" / "gender.json").write_text("{}")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("test", environ={}, overrides={
        "services": {"prefect_home": "var/prefect-home"}, "sft": {"data_dir": "data/sft-large", "output_dir": "out/sft"},
        "grpo": {"output_dir": "out/grpo"}, "rm": {"output_dir": "out/rm"}, "eval": {"output_dir": "out/eval"},
        "traits": {"gender_model": "models/gender.json"}, "asr": {"source": "models/asr"},
    })  # fmt: skip
    assert cfg.prefect_home == root / "var" / "prefect-home"
    assert sft_pipeline.resolve_data_dir(cfg) == root / "data" / "sft-large"
    assert sft_pipeline.resolve_data_dir(cfg, "mine") == elsewhere / "mine"  # the command line's --data
    assert [f(cfg) for f in (sft_pipeline.output_root, grpo_pipeline.output_root, reward_model.output_root,
                             eval_root)] == [root / "out" / d for d in ("sft", "grpo", "rm", "eval")]  # fmt: skip
    assert gender_model_identity(cfg) != "none"  # found the file, hashed it
    assert resolve_model_location(cfg.asr.source) == str(root / "models" / "asr")
    assert WhiStressDetector._resolve("models/whistress", "", True) == root / "models" / "whistress"
    # Unset, they stay where they always were: under the workspace.
    assert grpo_pipeline.output_root(load_config("test", environ={})) == load_config("test", environ={}).workspace / "grpo"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "benchmarks").glob("*.yaml")), ids=lambda p: p.name)
def test_benchmark_configs_load(path: Path):
    # The acceptance scripts pass these as --config; a misspelt key would only fail after the data steps.
    cfg = load_config(None, path, environ={})
    assert cfg.profile == "tiny"
