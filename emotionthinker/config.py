"""One typed configuration for the whole platform.

Resolution order (later wins): embedded defaults -> profile overrides
(`test`, `tiny` default, `paper`) -> a YAML file -> environment variables
``ET_<SECTION>__<FIELD>`` (e.g. ``ET_AUDIO__MAX_DURATION_S=30``).
The profile comes from the argument, else ``ET_PROFILE``; the YAML file from
the argument, else ``ET_CONFIG``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Profile = Literal["test", "tiny", "paper"]
PROFILES: tuple[str, ...] = ("test", "tiny", "paper")
ENV_PREFIX = "ET_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(_Section):
    """Where state lives. Relative paths resolve against the project root."""

    workspace: Path = Path("var")
    data: Path = Path("var/data")
    cache: Path = Path("var/cache")
    shared_data: Path = Path("../shared/data")

    def resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


class ServicesConfig(_Section):
    """Service endpoints; embedded defaults, real servers by configuration."""

    mlflow_tracking_uri: str = ""  # empty -> sqlite file in the workspace
    mlflow_artifact_root: str = ""  # empty -> folder in the workspace
    mlflow_experiment: str = "emotionthinker"
    prefect_api_url: str = ""  # empty -> Prefect's temporary local server
    prefect_home: str = ""  # empty -> <workspace>/prefect
    dvc_remote_url: str = ""  # empty -> <workspace>/dvc-remote
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(5000, ge=1, le=65535)


class AudioConfig(_Section):
    sample_rate: int = Field(16000, ge=8000)
    min_duration_s: float = Field(0.3, gt=0)
    max_duration_s: float = Field(60.0, gt=0)
    # A clip whose peak is below this level counts as silent.
    silence_peak_dbfs: float = Field(-60.0, le=0)

    @model_validator(mode="after")
    def _ordered(self) -> "AudioConfig":
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("audio.min_duration_s must be below audio.max_duration_s")
        return self


class ValidationConfig(_Section):
    # Share of quarantined records above which a flow stops before training.
    max_failure_rate: float = Field(0.2, ge=0, le=1)


class DemoConfig(_Section):
    clips_per_class: int = Field(12, ge=1)
    voices: list[str] = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3"]
    seed: int = 0


class ProsodyConfig(_Section):
    f0_floor_hz: float = Field(55.0, gt=0)
    f0_ceiling_hz: float = Field(500.0, gt=0)
    hop_s: float = Field(0.01, gt=0)
    octave_jump_cost: float = Field(0.35, ge=0)
    smooth_window: int = Field(9, ge=3)
    smooth_order: int = Field(2, ge=1)
    flat_span_st: float = 3.0
    expressive_span_st: float = 9.0
    direction_st: float = 2.0
    turn_depth_st: float = 2.0
    min_voiced_frames: int = Field(20, ge=1)
    min_group_size: int = Field(50, ge=1)
    workers: int = Field(0, ge=0)  # 0 -> all cores


class AsrConfig(_Section):
    source: str = "packaged:whisper-tiny.en"
    compute_type: str = "int8"
    language: str = "en"


class TraitsConfig(_Section):
    age_model: str = ""  # hub id of an age/gender model; empty -> age 'unknown'
    gender_model: str = "registry:emotionthinker-gender@champion"


class CotConfig(_Section):
    """OpenAI-compatible endpoint for reasoning writing and judging."""

    base_url: str = ""  # empty -> offline composer
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"  # the key itself is never stored in config
    concurrency: int = Field(4, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    temperature: float = Field(0.8, ge=0, le=2)
    seed: int = 0


class Config(_Section):
    profile: Profile = "tiny"
    paths: PathsConfig = PathsConfig()
    services: ServicesConfig = ServicesConfig()
    audio: AudioConfig = AudioConfig()
    validation: ValidationConfig = ValidationConfig()
    demo: DemoConfig = DemoConfig()
    prosody: ProsodyConfig = ProsodyConfig()
    asr: AsrConfig = AsrConfig()
    traits: TraitsConfig = TraitsConfig()
    cot: CotConfig = CotConfig()

    # -- derived locations -------------------------------------------------
    @property
    def workspace(self) -> Path:
        return self.paths.resolve(self.paths.workspace)

    @property
    def data_dir(self) -> Path:
        return self.paths.resolve(self.paths.data)

    @property
    def cache_dir(self) -> Path:
        return self.paths.resolve(self.paths.cache)

    @property
    def shared_data_dir(self) -> Path:
        return self.paths.resolve(self.paths.shared_data)

    @property
    def tracking_uri(self) -> str:
        return self.services.mlflow_tracking_uri or f"sqlite:///{self.workspace / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.services.mlflow_artifact_root or str(self.workspace / "mlflow" / "artifacts")

    @property
    def prefect_home(self) -> Path:
        return Path(self.services.prefect_home) if self.services.prefect_home else self.workspace / "prefect"

    @property
    def dvc_remote(self) -> str:
        return self.services.dvc_remote_url or str(self.workspace / "dvc-remote")


# Profiles are small overrides of one base; only sizes and checkpoints differ.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "test": {
        "paths": {"workspace": "var/test", "data": "var/test/data", "cache": "var/cache"},
        "demo": {"clips_per_class": 2},
        "prosody": {"min_group_size": 5},
    },
    "paper": {
        "paths": {"workspace": "var/paper", "data": "var/paper/data"},
        "asr": {"source": "hub:openai/whisper-large-v3", "compute_type": "float16"},
    },
}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """ET_SECTION__FIELD=value -> {"section": {"field": value}} (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_config(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the validated configuration; raise ConfigError with every problem listed."""
    env = dict(os.environ if environ is None else environ)
    profile = profile or env.get("ET_PROFILE") or "tiny"
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    data: dict[str, Any] = _deep_merge({"profile": profile}, PROFILE_OVERRIDES[profile])
    source = f"profile {profile}"
    config_file = config_file or env.get("ET_CONFIG")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        if loaded.get("profile", profile) != profile:
            raise ConfigError(f"config file {path} sets profile {loaded['profile']!r} but {profile!r} is active")
        data = _deep_merge(data, loaded)
        source += f" + {path}"
    env_over = _env_overrides(env)
    if env_over:
        data = _deep_merge(data, env_over)
        source += " + environment"
    if overrides:
        data = _deep_merge(data, overrides)
        source += " + overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
