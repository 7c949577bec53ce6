"""CTranslate2 -> Whisper conversion, checked against an independent writer of the CT2 layout.

The writer below encodes a random tiny Whisper the way CTranslate2 stores it (fused q/k/v with a
zero k bias, fused cross-attention k/v, gamma/beta norms, float16, an alias for the output
projection); converting it back must reproduce the model exactly.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from models.convert_ctranslate2 import ConversionError, load_whisper_from_ct2, read_ct2


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path, variables: dict[str, np.ndarray], aliases: dict[str, str], spec: str = "WhisperSpec") -> None:
    codes = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}
    out = struct.pack("<I", 6) + _string(spec) + struct.pack("<II", 3, len(variables))
    for name, arr in variables.items():
        arr = np.require(arr, requirements="C")  # (ascontiguousarray would turn scalars into 1-D)
        out += _string(name) + struct.pack("<B", arr.ndim) + struct.pack("<" + "I" * arr.ndim, *arr.shape)
        out += struct.pack("<BI", codes[arr.dtype.type], arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases.items())
    path.write_bytes(out)


def whisper_as_ct2(model) -> dict[str, np.ndarray]:
    """Encode a WhisperForConditionalGeneration in CTranslate2's variable layout (float16)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = lambda a: a.astype(np.float16)  # noqa: E731
    out: dict[str, np.ndarray] = {}

    def attn(dst: str, src: str, cross: bool) -> None:
        q, k, v = (sd[f"{src}.{p}_proj.weight"] for p in "qkv")
        qb, vb = sd[f"{src}.q_proj.bias"], sd[f"{src}.v_proj.bias"]
        zeros = np.zeros_like(qb)
        if cross:
            out[f"{dst}/linear_0/weight"], out[f"{dst}/linear_0/bias"] = h(q), h(qb)
            out[f"{dst}/linear_1/weight"], out[f"{dst}/linear_1/bias"] = h(np.concatenate([k, v])), h(np.concatenate([zeros, vb]))
            o = "linear_2"
        else:
            out[f"{dst}/linear_0/weight"] = h(np.concatenate([q, k, v]))
            out[f"{dst}/linear_0/bias"] = h(np.concatenate([qb, zeros, vb]))
            o = "linear_1"
        out[f"{dst}/{o}/weight"], out[f"{dst}/{o}/bias"] = h(sd[f"{src}.out_proj.weight"]), h(sd[f"{src}.out_proj.bias"])

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = h(sd[f"{src}.weight"]), h(sd[f"{src}.bias"])

    cfg = model.config
    for side, n_layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        heads = cfg.encoder_attention_heads if side == "encoder" else cfg.decoder_attention_heads
        out[f"{side}/num_heads"] = np.array(heads, dtype=np.int16)
        for i in range(n_layers):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            attn(f"{dst}/self_attention", f"{src}.self_attn", cross=False)
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            if side == "decoder":
                attn(f"{dst}/attention", f"{src}.encoder_attn", cross=True)
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
            for ct2, hf in (("linear_0", "fc1"), ("linear_1", "fc2")):
                out[f"{dst}/ffn/{ct2}/weight"], out[f"{dst}/ffn/{ct2}/bias"] = h(sd[f"{src}.{hf}.weight"]), h(sd[f"{src}.{hf}.bias"])
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        out[f"{side}/position_encodings/encodings"] = h(sd[f"model.{side}.embed_positions.weight"])
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"], out[f"encoder/{conv}/bias"] = h(sd[f"model.encoder.{conv}.weight"]), h(sd[f"model.encoder.{conv}.bias"])
    out["decoder/embeddings/weight"] = h(sd["model.decoder.embed_tokens.weight"])
    out["decoder/activation"] = np.array(1, dtype=np.int8)  # a scalar flag, as in real files
    return out


@pytest.fixture(scope="module")
def tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=120, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
        max_source_positions=10, max_target_positions=12,
        pad_token_id=118, eos_token_id=118, bos_token_id=119, decoder_start_token_id=119,  # see TOY_TOKENIZER
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # CT2 keeps float16; compare against the same rounding
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


# Special tokens of the toy vocabulary; the converter reads them from tokenizer.json beside model.bin.
TOY_TOKENIZER = {"added_tokens": [{"id": 118, "content": "<|endoftext|>"}, {"id": 119, "content": "<|startoftranscript|>"}]}


def test_ct2_round_trip_reproduces_whisper_exactly(tmp_path, tiny_whisper):
    write_ct2(tmp_path / "model.bin", whisper_as_ct2(tiny_whisper), {"decoder/projection/weight": "decoder/embeddings/weight"})
    with pytest.raises(ConversionError, match="do not fit the vocabulary"):
        load_whisper_from_ct2(tmp_path)  # Whisper's standard ids (50256...) are outside a 120-token vocabulary
    (tmp_path / "tokenizer.json").write_text(json.dumps(TOY_TOKENIZER))
    converted = load_whisper_from_ct2(tmp_path)

    cfg = converted.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.num_mel_bins) == (16, 2, 3, 8)
    assert (cfg.max_source_positions, cfg.max_target_positions, cfg.vocab_size) == (10, 12, 120)
    assert (cfg.eos_token_id, cfg.decoder_start_token_id) == (118, 119)
    assert converted.model.encoder.layers[0].self_attn.k_proj.bias is None
    ref, got = tiny_whisper.state_dict(), converted.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert all(p.device.type == "cpu" for p in converted.parameters())

    features = torch.randn(1, 8, 20)
    decoder_ids = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        assert torch.allclose(
            tiny_whisper(features, decoder_input_ids=decoder_ids).logits,
            converted(features, decoder_input_ids=decoder_ids).logits,
            atol=1e-6,
        )


def test_read_ct2_rejects_broken_files(tmp_path):
    bad = tmp_path / "model.bin"
    write_ct2(bad, {"encoder/x": np.ones((4, 4), np.float16)}, {})
    data = bad.read_bytes()
    bad.write_bytes(data[:-10])
    with pytest.raises(ConversionError, match="truncated"):
        read_ct2(bad)
    bad.write_bytes(b"\x01\x00")
    with pytest.raises(ConversionError):
        read_ct2(bad)
    write_ct2(bad, {"w": np.ones(2, np.float16)}, {}, spec="TransformerSpec")
    assert read_ct2(bad)[0] == "TransformerSpec"
    with pytest.raises(ConversionError, match="not a WhisperSpec"):
        load_whisper_from_ct2(tmp_path)


def test_packaged_whisper_header_is_tiny_en():
    from models.convert_ctranslate2 import packaged_whisper_dir, whisper_config_from_ct2

    spec, variables = read_ct2(packaged_whisper_dir() / "model.bin")
    cfg = whisper_config_from_ct2(variables)
    assert spec == "WhisperSpec"
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size, cfg.num_mel_bins) == (384, 4, 4, 51864, 80)
