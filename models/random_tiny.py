"""`test` profile backbones: random-initialised tiny models of the real classes, built from configs in < 1 s.

They exercise every code path of the real backbones (audio features, token expansion, generation,
log-probs, save/load) without any download. The tokenizer is byte-level BPE with no merges: 256 byte
tokens plus the ChatML and audio/vision special tokens, so any text round-trips.
"""

from __future__ import annotations

import torch

from models.assemble import AUDIO_TOKENS, CHAT_TEMPLATE, POSITIONS_PER_SECOND, qwen2audio_processor, whisper_feature_extractor

N_MELS = 80
HIDDEN = 32
VISION_TOKENS = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


def byte_tokenizer():
    """Byte-level tokenizer with ChatML and audio/vision special tokens, padding on the left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=list(AUDIO_TOKENS.values()) + list(VISION_TOKENS.values()),
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_dims(vocab_size: int, pad_id: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=pad_id,
    )


def _audio_dims(window_s: int) -> dict:
    return dict(
        num_mel_bins=N_MELS,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=2 * HIDDEN,
        d_model=HIDDEN,
        max_source_positions=window_s * POSITIONS_PER_SECOND,
    )


def _finish(model, tokenizer):
    model.generation_config.eos_token_id = [tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


def random_qwen2audio(window_s: int, seed: int = 0):
    """(model, tokenizer, feature_extractor, processor) for a tiny random `Qwen2AudioForConditionalGeneration`."""
    from transformers import LlamaConfig, Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration

    tokenizer = byte_tokenizer()
    # LlamaConfig as text backbone, like the tiny profile (SmolLM2), so test and tiny share a code path.
    config = Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(**_audio_dims(window_s)),
        text_config=LlamaConfig(**_text_dims(len(tokenizer), tokenizer.pad_token_id)),
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKENS["audio_token"]),
    )
    torch.manual_seed(seed)
    model = _finish(Qwen2AudioForConditionalGeneration(config), tokenizer)
    processor = qwen2audio_processor(tokenizer, window_s, N_MELS)
    return model, tokenizer, processor.feature_extractor, processor


def random_omni_thinker(window_s: int, seed: int = 0):
    """(model, tokenizer, feature_extractor, None) for a tiny random `Qwen2_5OmniThinkerForConditionalGeneration`.

    No `Qwen2_5OmniProcessor`: it requires a video processor, which needs torchvision (absent here).
    """
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    tokenizer = byte_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    head_dim = HIDDEN // 4
    text = _text_dims(len(tokenizer), tokenizer.pad_token_id)
    # mrope splits each rotary half (head_dim / 2) over time/height/width.
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, head_dim // 2 - 2]}
    config = Qwen2_5OmniThinkerConfig(
        text_config=text,
        audio_config={**_audio_dims(window_s), "output_dim": HIDDEN, "n_window": 50},
        vision_config={
            "depth": 1,
            "hidden_size": HIDDEN,
            "intermediate_size": HIDDEN,
            "num_heads": 2,
            "out_hidden_size": HIDDEN,
            "fullatt_block_indexes": [0],
        },
        audio_token_index=ids(AUDIO_TOKENS["audio_token"]),
        audio_start_token_id=ids(AUDIO_TOKENS["audio_bos_token"]),
        audio_end_token_id=ids(AUDIO_TOKENS["audio_eos_token"]),
        image_token_index=ids(VISION_TOKENS["image_token"]),
        video_token_index=ids(VISION_TOKENS["video_token"]),
        user_token_id=ids("u"),
    )
    # The standalone thinker config lacks these (only the full Omni config sets them); forward needs them.
    config.vision_start_token_id = ids(VISION_TOKENS["vision_bos_token"])
    config.vision_end_token_id = ids(VISION_TOKENS["vision_eos_token"])
    torch.manual_seed(seed)
    model = _finish(Qwen2_5OmniThinkerForConditionalGeneration(config), tokenizer)
    return model, tokenizer, whisper_feature_extractor(window_s, N_MELS), None


BUILDERS = {"qwen2audio-tiny": random_qwen2audio, "qwen2.5omni-tiny": random_omni_thinker}
