"""Sampling K completions per prompt and their per-token log-probs, with the prompt encoded once.

A GRPO step sees each prompt (system + user text + ~100-200 audio tokens) K times, with completions
that are short next to it. `AudioLM.generate(num_return_sequences=K)` and
`AudioLM.completion_logprobs` repeat the prompt K times before the forward pass; here the prompt is
run once per prompt (audio encoder included), its key/value cache is repeated K times, and only the
completion tokens run K times. For the tiny profile (221 prompt tokens, 48 completion tokens, K = 4)
that is ~2.5x fewer tokens through the LM in each of the three passes of a step (sampling, policy
forward/backward, reference forward).

Positions: without explicit position ids the LM numbers the prompt 0..L-1 and the completion
L..L+T-1, exactly as in a full forward of prompt + completion, so the log-probs equal
`AudioLM.completion_logprobs` up to float rounding (tested). Gradients flow through the repeated
cache into the prompt pass. Only families whose LM takes plain 1-D positions support it
(`qwen2audio`); Qwen2.5-Omni's 3-D mrope positions take the plain AudioLM path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.backbone import AudioLM, CompletionLogprobs, Generation, pad_completions

SHARED_PREFIX_FAMILIES = ("qwen2audio",)
_MODEL_INPUTS = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")


def supports_shared_prefix(lm: AudioLM) -> bool:
    return lm.family in SHARED_PREFIX_FAMILIES


def _prompt_pass(lm: AudioLM, inputs: dict[str, torch.Tensor]):
    """Run the prompts (with audio) once: (last hidden state [P, H], key/value cache)."""
    core = lm._core()
    out = core.model(**{k: v.to(lm.device) for k, v in inputs.items() if k in _MODEL_INPUTS}, use_cache=True)
    return out.last_hidden_state[:, -1], out.past_key_values


def suppressed_tokens(lm: AudioLM) -> tuple[int, ...]:
    """Tokens a completion must never hold: the audio placeholder (one in a completion would be read as a
    second clip by a later full forward pass, and fail there). Sampling and log-probs both exclude them."""
    return (lm.audio_token_id,)


def _logits(lm: AudioLM, hidden: torch.Tensor, temperature: float, suppress: Sequence[int] = ()) -> torch.Tensor:
    logits = lm._core().lm_head(hidden).float() / temperature
    if suppress:
        logits[..., list(suppress)] = float("-inf")
    return logits


@torch.no_grad()
def sample_groups(
    lm: AudioLM,
    audios: Sequence[Any],
    prompts: str | Sequence[str] | None,
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    suppress: Sequence[int] | None = None,
) -> Generation:
    """k completions per prompt sampled from softmax(logits / temperature) (no top-k / top-p), grouped by
    prompt as `AudioLM.generate` groups them; falls back to it for families without prefix sharing.

    Each completion stops after its first end-of-turn token (kept, as generate keeps it). `suppress`
    (default `suppressed_tokens`) are never sampled; pass the same to `group_logprobs`.
    """
    if not supports_shared_prefix(lm):
        return lm.generate(audios, prompts, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                           num_return_sequences=k)  # fmt: skip
    suppress = suppressed_tokens(lm) if suppress is None else tuple(suppress)
    inputs = lm.build_chat_inputs(audios, prompts)
    hidden, cache = _prompt_pass(lm, inputs)
    cache.batch_repeat_interleave(k)
    mask = inputs["attention_mask"].to(lm.device).repeat_interleave(k, dim=0)
    logits = _logits(lm, hidden, temperature, suppress).repeat_interleave(k, dim=0)
    n = logits.shape[0]
    eos = torch.tensor(sorted(lm.eos_token_ids), device=lm.device)
    pad = lm.tokenizer.pad_token_id
    done = torch.zeros(n, dtype=torch.bool, device=lm.device)
    tokens: list[torch.Tensor] = []
    core = lm._core()
    for t in range(max_new_tokens):
        probs = torch.softmax(logits, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        tokens.append(nxt)
        live = ~done
        done = done | torch.isin(nxt, eos)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, live.long().unsqueeze(-1)], dim=1)
        out = core.model(input_ids=nxt.unsqueeze(-1), attention_mask=mask, past_key_values=cache, use_cache=True)
        logits = _logits(lm, out.last_hidden_state[:, -1], temperature, suppress)
    rows = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in range(n)]
    completion_ids = [lm._strip(row) for row in rows]
    texts = lm.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Generation(texts, completion_ids, inputs, k)


def group_logprobs(
    lm: AudioLM,
    inputs: dict[str, torch.Tensor],
    completion_ids: Sequence[Sequence[int]],
    temperature: float = 1.0,
    shared_prefix: bool = True,
    suppress: Sequence[int] | None = None,
) -> CompletionLogprobs:
    """Per-token log-probs of k completions per prompt (differentiable), as `AudioLM.completion_logprobs`,
    under the distribution `sample_groups` samples from (`suppress` tokens excluded)."""
    if not (shared_prefix and supports_shared_prefix(lm)):
        return lm.completion_logprobs(inputs, completion_ids, temperature)
    suppress = suppressed_tokens(lm) if suppress is None else tuple(suppress)
    ids, cmask, k = pad_completions(completion_ids, inputs["input_ids"].shape[0], lm.tokenizer.pad_token_id)
    ids, cmask = ids.to(lm.device), cmask.to(lm.device)
    hidden, cache = _prompt_pass(lm, inputs)
    hidden = hidden.repeat_interleave(k, dim=0).unsqueeze(1)  # predicts completion token 0
    if ids.shape[1] > 1:
        cache.batch_repeat_interleave(k)
        mask = torch.cat([inputs["attention_mask"].to(lm.device).repeat_interleave(k, dim=0), cmask[:, :-1].long()], dim=1)
        out = lm._core().model(input_ids=ids[:, :-1], attention_mask=mask, past_key_values=cache, use_cache=True)
        hidden = torch.cat([hidden, out.last_hidden_state], dim=1)  # position t predicts token t + 1
    logprobs = torch.log_softmax(_logits(lm, hidden, temperature, suppress), dim=-1)
    token_lp = logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return CompletionLogprobs(token_lp.masked_fill(~cmask, 0.0), cmask)
