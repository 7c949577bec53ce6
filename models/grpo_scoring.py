"""R_t scoring for GRPO-PTR with each clip encoded once per step (the reward model's cost is the whole
step-time overhead of GRPO-PTR over plain GRPO).

The reward model's prompt is [system, clip, question, reasoning, rubric]: the K completions of a group
share everything up to the reasoning. `SharedPrefixRewardScorer` runs that shared prefix (audio
encoder included) once per clip, repeats its key/value cache for the clip's reasonings, runs each
row's own suffix, and decodes greedily with a plain loop over the cache (HF `generate` spends most of
a small model's decode time in per-token bookkeeping). The answers are parsed and counted by the
wrapped `RewardModel`, so R_t, the fallback for unparseable answers and the statistics are the same.

With `constrained` the answer's JSON skeleton is teacher-forced and only the four score digits are
chosen (argmax over the tokens of 1..5): wherever the reward model answers in its trained format this
is what greedy decoding answers, in one forward call per score instead of one per token (~40), and an
untrained reward model (the Table-4 ablation) still gives its preferred scores rather than the fallback.
With `expected` as well, each score is the probability-weighted sum_d d * p(d) over the digits at its
slot (G-Eval style) instead of the argmax: a briefly trained reward model that answers the modal score
for everything still ranks reasonings by how far its distribution leans, at no extra cost.

Suffixes differ in length; they are left-padded so that every row ends at the same column, and each
real token gets an explicit position (prefix length + its index), so the padding in the middle
changes no distance between real tokens: rows decode as they would alone. Families without 1-D
positions (Qwen2.5-Omni's mrope) use `RewardModel.score` unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models.grpo_rollout import supports_shared_prefix
from models.rewards import Scores


class SharedPrefixRewardScorer:
    """Wraps a models.reward_model.RewardModel; see the module docstring."""

    def __init__(self, rm: Any, constrained: bool = False, expected: bool = False):
        from models.reward_model import answer_skeleton

        self.rm = rm
        self.lm = rm.lm
        # The canonical answer's tokens (every score 3) and its score slots; None: free greedy decoding.
        self.skeleton = answer_skeleton(self.lm.tokenizer) if constrained else None
        self.expected = expected and self.skeleton is not None

    @property
    def stats(self):
        return self.rm.stats

    def __getattr__(self, name: str) -> Any:  # batch_size, weights, fallback, ... of the reward model
        return getattr(self.rm, name)

    def score(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[Scores | None]:
        if isinstance(questions, str):
            questions = [questions] * len(audios)
        if not (len(audios) == len(questions) == len(reasonings)):
            raise ValueError(f"{len(audios)} audios, {len(questions)} questions, {len(reasonings)} reasonings")
        if not supports_shared_prefix(self.lm) or not audios:
            return self.rm.score(audios, questions, reasonings)
        texts: list[str] = [""] * len(audios)
        expected: list[tuple[float, ...] | None] = [None] * len(audios)
        step = max(1, int(self.rm.batch_size))
        for start in range(0, len(audios), step):
            part = slice(start, start + step)
            texts[part], weighted = self._answers(list(audios[part]), list(questions[part]), list(reasonings[part]))
            if self.expected and weighted is not None:
                expected[part] = weighted
        scores = self.rm.score_texts(texts)  # parsed and counted as always
        return [Scores(*e) if e is not None else s for s, e in zip(scores, expected)]

    # -- generation ---------------------------------------------------------------------------------
    def _row_tokens(self, prompt: str, n_audio_tokens: int) -> list[int]:
        """The row's token ids as AudioLM.build_chat_inputs makes them, without running the feature extractor again."""
        from models.assemble import AUDIO_TOKENS
        from models.reward_model import RM_SYSTEM

        token = AUDIO_TOKENS["audio_token"]
        text = self.lm._render(prompt, RM_SYSTEM).replace(token, token * n_audio_tokens, 1)
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, audios: Sequence[Any], questions: Sequence[str], reasonings: Sequence[str]) -> list[str]:
        """Greedy answers in input order (what RewardModel.generate answers, computed with shared prefixes)."""
        return self._answers(audios, questions, reasonings)[0]

    @torch.no_grad()
    def _answers(self, audios: Sequence[Any], questions: Sequence[str],
                 reasonings: Sequence[str]) -> tuple[list[str], list[tuple[float, ...]] | None]:  # fmt: skip
        """The answers, and with a constrained skeleton each row's probability-weighted scores (else None)."""
        lm = self.lm
        core = lm._core()
        device = lm.device
        from models.reward_model import RM_SYSTEM, rm_prompt

        # Rows of one clip share the clip's prefix; a clip is known by its samples.
        clip_of: dict[str, int] = {}
        clip_index = []
        for a in audios:
            key = hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()
            clip_index.append(clip_of.setdefault(key, len(clip_of)))
        n_clips = len(clip_of)
        first_row = [clip_index.index(c) for c in range(n_clips)]
        prompts = [rm_prompt(q, r) for q, r in zip(questions, reasonings)]
        # Features and audio-token counts once per clip (from its first row), the other rows' tokens from text.
        firsts = [lm.build_chat_inputs([audios[i]], [prompts[i]], system=RM_SYSTEM) for i in first_row]
        n_audio = [int((f["input_ids"][0] == lm.audio_token_id).sum()) for f in firsts]
        rows = [self._row_tokens(p, n_audio[clip_index[i]]) for i, p in enumerate(prompts)]
        prefix_len = []
        for c in range(n_clips):
            members = [rows[i] for i in range(len(rows)) if clip_index[i] == c]
            n = min(len(m) for m in members) - 1  # every row keeps at least one token of its own
            k = 0
            while k < n and all(m[k] == members[0][k] for m in members):
                k += 1
            prefix_len.append(k)
        audio_id = lm.audio_token_id
        if any(audio_id in rows[i][prefix_len[clip_index[i]] :] for i in range(len(rows))):
            return self.rm.generate(audios, questions, reasonings), None  # the clip is not inside the shared part

        # Prefix pass: one row per clip, left-padded, with its audio features.
        width = max(prefix_len)
        pad = lm.tokenizer.pad_token_id
        ids = torch.full((n_clips, width), pad, dtype=torch.long)
        mask = torch.zeros((n_clips, width), dtype=torch.long)
        for c in range(n_clips):
            tokens = rows[first_row[c]][: prefix_len[c]]
            ids[c, width - len(tokens) :] = torch.tensor(tokens)
            mask[c, width - len(tokens) :] = 1
        features = torch.cat([f["input_features"] for f in firsts]).to(device)
        feature_mask = torch.cat([f["feature_attention_mask"] for f in firsts]).to(device)
        out = core.model(input_ids=ids.to(device), attention_mask=mask.to(device), input_features=features,
                         feature_attention_mask=feature_mask, use_cache=True)  # fmt: skip
        cache = out.past_key_values
        index = torch.tensor(clip_index, device=device)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)

        # Suffix pass: left-padded so all rows end together; positions continue each row's prefix.
        suffixes = [rows[i][prefix_len[clip_index[i]] :] for i in range(len(rows))]
        s_width = max(len(s) for s in suffixes)
        s_ids = torch.full((len(rows), s_width), pad, dtype=torch.long)
        s_mask = torch.zeros((len(rows), s_width), dtype=torch.long)
        positions = torch.zeros((len(rows), s_width), dtype=torch.long)
        for i, s in enumerate(suffixes):
            s_ids[i, s_width - len(s) :] = torch.tensor(s)
            s_mask[i, s_width - len(s) :] = 1
            positions[i, s_width - len(s) :] = width + torch.arange(len(s))
        attn = torch.cat([mask.index_select(0, index.cpu()), s_mask], dim=1).to(device)
        out = core.model(input_ids=s_ids.to(device), attention_mask=attn, position_ids=positions.to(device),
                         past_key_values=cache, use_cache=True)  # fmt: skip
        next_pos = torch.tensor([width + len(s) for s in suffixes], device=device)
        if self.skeleton is not None:
            return self._fill_score_slots(core, out.last_hidden_state[:, -1], cache, attn, next_pos)

        eos = torch.tensor(sorted(lm.eos_token_ids), device=device)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        tokens = []
        hidden = out.last_hidden_state[:, -1]
        for t in range(self.rm.max_new_tokens):
            nxt = core.lm_head(hidden).float().argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            live = ~done
            done = done | torch.isin(nxt, eos)
            if bool(done.all()) or t == self.rm.max_new_tokens - 1:
                break
            attn = torch.cat([attn, live.long().unsqueeze(-1)], dim=1)
            out = core.model(input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=(next_pos + t).unsqueeze(-1),
                             past_key_values=cache, use_cache=True)  # fmt: skip
            hidden = out.last_hidden_state[:, -1]
        generated = torch.stack(tokens, dim=1).tolist()
        return lm.tokenizer.batch_decode([lm._strip(row) for row in generated], skip_special_tokens=True), None

    def _fill_score_slots(self, core: Any, hidden: torch.Tensor, cache: Any, attn: torch.Tensor,
                          next_pos: torch.Tensor) -> tuple[list[str], list[tuple[float, ...]]]:  # fmt: skip
        """The skeleton answer with each score slot set to the most likely digit, and each slot's expected
        digit per row; `hidden` predicts answer token 0."""
        from models.reward_model import expected_digit

        skeleton, slots = self.skeleton
        device = hidden.device
        n = hidden.shape[0]
        answer = torch.tensor(skeleton, device=device).repeat(n, 1)
        fed = 0  # answer tokens already in the cache
        expected = []
        for slot, candidates in slots:
            if slot > fed:  # the skeleton (and the digit chosen last) up to this slot, in one call
                chunk = answer[:, fed:slot]
                attn = torch.cat([attn, torch.ones_like(chunk)], dim=1)
                positions = next_pos.unsqueeze(-1) + torch.arange(fed, slot, device=device)
                out = core.model(input_ids=chunk, attention_mask=attn, position_ids=positions,
                                 past_key_values=cache, use_cache=True)  # fmt: skip
                hidden = out.last_hidden_state[:, -1]
                fed = slot
            ids = torch.tensor(candidates, device=device)
            logits = core.lm_head(hidden).float()[:, ids]
            answer[:, slot] = ids[logits.argmax(-1)]
            expected.append(expected_digit(logits))
        texts = self.lm.tokenizer.batch_decode(answer.tolist(), skip_special_tokens=True)
        return texts, [tuple(float(v[i]) for v in expected) for i in range(n)]
