"""`AudioLM`: one interface over the audio LLM families the platform trains and evaluates.

Families: `qwen2audio` (`Qwen2AudioForConditionalGeneration`: the tiny base and the test model) and
`qwen2_5omni` (`Qwen2_5OmniThinkerForConditionalGeneration`: the paper policy / reward model, and a
random test model). Callers never see the family: they pass audio (16 kHz mono float arrays) and
prompts, and get chat inputs, generations, or per-token log-probs of given completions.

Inputs are built here rather than by the families' processors: both processors do the same audio
work (Whisper log-mel features padded to the window, one <|AUDIO|> token per encoder frame), and
Qwen2.5-Omni's processor cannot be built without torchvision. A test checks that the qwen2audio
inputs equal `Qwen2AudioProcessor`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotionthinker.labels import SYSTEM_PROMPT, USER_PROMPT
from models.assemble import AUDIO_TOKENS, CHAT_TEMPLATE, MANIFEST, ensure_tiny_base, write_manifest
from models.sources import ModelSource, SourceError, parse_source

AUDIO_PLACEHOLDER = "<audio>"  # where the clip goes in a prompt (the released user prompt starts with it)
IGNORE_INDEX = -100
MODEL_TYPES = {"qwen2_audio": "qwen2audio", "qwen2_5_omni_thinker": "qwen2_5omni", "qwen2_5_omni": "qwen2_5omni"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Released Qwen2.5-Omni ids; the standalone thinker config lacks them and mrope indexing reads them.
OMNI_VISION_START_END = (151652, 151653)


class AudioLMError(ValueError):
    """Bad input to an AudioLM (audio, prompts, completions) or an unloadable checkpoint."""


def _model_class(family: str):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2AudioForConditionalGeneration

    classes = {"qwen2audio": Qwen2AudioForConditionalGeneration, "qwen2_5omni": Qwen2_5OmniThinkerForConditionalGeneration}
    if family not in classes:
        raise AudioLMError(f"unknown backbone family {family!r}; known: {', '.join(classes)}")
    return classes[family]


@dataclass
class Generation:
    """Generated completions, grouped by prompt: rows i*k .. i*k+k-1 belong to prompt i (k = num_return_sequences)."""

    texts: list[str]
    completion_ids: list[list[int]]  # sampled tokens, padding removed, end-of-turn token kept
    inputs: dict[str, torch.Tensor]  # the prompt inputs; pass them back to completion_logprobs
    num_return_sequences: int


@dataclass
class CompletionLogprobs:
    logprobs: torch.Tensor  # [N, T] log p(token | prefix); 0 where mask is False
    mask: torch.Tensor  # [N, T] bool, True on completion tokens

    def sum(self) -> torch.Tensor:
        return self.logprobs.sum(-1)


def pad_completions(completions: Sequence[Sequence[int]], n_prompts: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """k completions per prompt as right-padded ids and their mask; refuses a count that is not a positive multiple."""
    if len(completions) == 0 or len(completions) % n_prompts:
        raise AudioLMError(f"{len(completions)} completions for {n_prompts} prompts (need a positive multiple)")
    width = max(1, max(len(c) for c in completions))
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    cmask = torch.zeros((len(completions), width), dtype=torch.bool)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
        cmask[i, : len(c)] = True
    return ids, cmask, len(completions) // n_prompts


class AudioLM:
    """A backbone with its tokenizer and feature extractor; see the module docstring."""

    def __init__(self, model, tokenizer, feature_extractor, family: str, window_s: int, source: str = "", processor=None):
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.processor = processor  # Qwen2AudioProcessor for qwen2audio (saved for AutoProcessor users)
        self.family = family
        self.window_s = int(window_s)
        self.source = source
        tokenizer.padding_side = "left"  # prompts end at the same index, so completions start together
        self.audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKENS["audio_token"])
        if self.audio_token_id != model.config.audio_token_id:
            raise AudioLMError(f"tokenizer audio token id {self.audio_token_id} != model's {model.config.audio_token_id}")
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos])

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_source(cls, source: str | ModelSource, cfg) -> "AudioLM":
        """Load the backbone a source names; `cfg` supplies cache dir, window, dtype and seed."""
        src = source if isinstance(source, ModelSource) else parse_source(source)
        mcfg = cfg.models
        dtype = DTYPES[mcfg.dtype]
        if src.kind == "random":
            from models.random_tiny import BUILDERS

            model, tokenizer, fe, processor = BUILDERS[src.name](mcfg.audio_window_s, mcfg.seed)
            family = MODEL_TYPES[model.config.model_type]
            return cls(model.to(dtype), tokenizer, fe, family, mcfg.audio_window_s, str(src), processor)
        if src.kind == "packaged":
            if src.name != "tiny-base":
                raise SourceError(f"{src} is a component, not an audio LLM; use packaged:tiny-base")
            return cls.load(ensure_tiny_base(cfg.cache_dir, mcfg.audio_window_s, mcfg.seed), dtype=dtype, source=str(src))
        if src.kind == "path":
            if (src.path / MANIFEST).is_file():
                return cls.load(src.path, dtype=dtype, source=str(src))
            return cls._from_pretrained(str(src.path), None, dtype, str(src))
        if src.kind == "hub":
            return cls._from_pretrained(src.name, src.ref, dtype, str(src))
        if src.kind == "registry":
            from emotionthinker.registry import resolve_registry_source

            return cls.load(resolve_registry_source(src, cfg), dtype=dtype, source=str(src))
        raise SourceError(f"{src}: unknown source kind")

    @classmethod
    def _from_pretrained(cls, name_or_path: str, revision: str | None, dtype, source: str) -> "AudioLM":
        """A transformers checkpoint (hub id or folder) of a known family; safetensors only."""
        from transformers import AutoConfig, AutoTokenizer, WhisperFeatureExtractor

        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
        family = MODEL_TYPES.get(config.model_type)
        if family is None:
            raise AudioLMError(f"{source}: model type {config.model_type!r} is not an audio LLM family we support")
        model = _model_class(family).from_pretrained(name_or_path, revision=revision, dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        fe = WhisperFeatureExtractor.from_pretrained(name_or_path, revision=revision)
        if family == "qwen2_5omni":
            for attr, value in zip(("vision_start_token_id", "vision_end_token_id"), OMNI_VISION_START_END):
                if getattr(model.config, attr, None) is None:
                    setattr(model.config, attr, value)
        return cls(model.eval(), tokenizer, fe, family, fe.chunk_length, source)

    @classmethod
    def load(cls, folder: str | Path, dtype=torch.float32, source: str | None = None) -> "AudioLM":
        """Load what `save` wrote (safetensors weights, tokenizer, feature extractor, manifest)."""
        from transformers import AutoTokenizer, Qwen2AudioProcessor, WhisperFeatureExtractor

        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AudioLMError(f"{folder} is not a saved AudioLM ({MANIFEST}: {exc})") from None
        family = manifest["family"]
        model = _model_class(family).from_pretrained(folder, dtype=dtype, use_safetensors=True)
        processor = None
        if family == "qwen2audio":
            processor = Qwen2AudioProcessor.from_pretrained(folder)
            tokenizer, fe = processor.tokenizer, processor.feature_extractor
        else:
            tokenizer, fe = AutoTokenizer.from_pretrained(folder), WhisperFeatureExtractor.from_pretrained(folder)
        return cls(model.eval(), tokenizer, fe, family, manifest["window_s"], source or manifest.get("source", str(folder)), processor)

    def save(self, folder: str | Path) -> Path:
        """Write weights (safetensors), tokenizer, feature extractor and the manifest into `folder`.

        Saves `self.model` as it is: merge LoRA adapters into it first for a standalone checkpoint.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        if self.processor is not None:
            self.processor.save_pretrained(folder)
        else:
            self.tokenizer.save_pretrained(folder)
            self.feature_extractor.save_pretrained(folder)
        write_manifest(folder, self.family, self.window_s, source=self.source)
        return folder

    # -- inputs --------------------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def freeze_audio_encoder(self, frozen: bool = True) -> None:
        for p in self._core().model.audio_tower.parameters():
            p.requires_grad_(not frozen)

    def _core(self):
        """The transformers model under any PEFT wrapper (LoRA layers stay in place)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _check_audio(self, audio: Any, index: int) -> np.ndarray:
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim != 1:
            raise AudioLMError(f"audio {index}: expected 1-D mono samples at {self.sampling_rate} Hz, got shape {arr.shape}")
        if arr.size == 0:
            raise AudioLMError(f"audio {index}: empty")
        if not np.isfinite(arr).all():
            raise AudioLMError(f"audio {index}: contains NaN or infinite samples")
        return arr

    def _render(self, prompt: str, system: str | None) -> str:
        if prompt.count(AUDIO_PLACEHOLDER) > 1:
            raise AudioLMError(f"prompt has {prompt.count(AUDIO_PLACEHOLDER)} {AUDIO_PLACEHOLDER} markers; one clip per prompt")
        before, marker, after = prompt.partition(AUDIO_PLACEHOLDER)
        if not marker:  # no marker: the clip goes first, as in the released prompt
            before, after = "", prompt
        content = ([{"type": "text", "text": before}] if before else []) + [{"type": "audio"}]
        content += [{"type": "text", "text": after}] if after else []
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": content}]
        template = self.tokenizer.chat_template or CHAT_TEMPLATE
        text = self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
        if text.count(AUDIO_TOKENS["audio_token"]) != 1:  # a hub template that does not render audio parts
            text = self.tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True)
        return text

    def _prompts(self, prompts: str | Sequence[str] | None, n: int) -> list[str]:
        if prompts is None or isinstance(prompts, str):
            return [prompts or USER_PROMPT] * n
        prompts = list(prompts)
        if len(prompts) != n:
            raise AudioLMError(f"{len(prompts)} prompts for {n} audios")
        return prompts

    def build_chat_inputs(
        self,
        audios: Sequence[Any],
        prompts: str | Sequence[str] | None = None,
        completions: Sequence[str] | None = None,
        system: str | None = SYSTEM_PROMPT,
    ) -> dict[str, torch.Tensor]:
        """Tokenised chat (system + user prompt with the clip) and audio features for a batch.

        Without completions the text ends with the assistant header (ready to generate). With
        completions each assistant answer and the end-of-turn token are appended, and `labels`
        (IGNORE_INDEX outside the answers) and `completion_mask` are added: a supervised batch.
        """
        if len(audios) == 0:
            raise AudioLMError("no audio given")
        arrays = [self._check_audio(a, i) for i, a in enumerate(audios)]
        texts = [self._render(p, system) for p in self._prompts(prompts, len(arrays))]
        feats = self.feature_extractor(
            arrays,
            sampling_rate=self.sampling_rate,
            padding="max_length",  # Whisper-family encoders take exactly the window; longer audio is cut
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        frames = feats["attention_mask"].sum(-1)
        n_tokens = ((frames - 1) // 2 + 1 - 2) // 2 + 1  # conv stride 2, then average pooling by 2
        audio_token = AUDIO_TOKENS["audio_token"]
        texts = [t.replace(audio_token, audio_token * int(n), 1) for t, n in zip(texts, n_tokens)]
        tok = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = {
            "input_ids": tok["input_ids"],
            "attention_mask": tok["attention_mask"],
            "input_features": feats["input_features"].to(self.model.dtype),
            "feature_attention_mask": feats["attention_mask"],
        }
        if completions is None:
            return inputs
        if len(completions) != len(arrays):
            raise AudioLMError(f"{len(completions)} completions for {len(arrays)} audios")
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] + [end] for c in completions]
        full, cmask = self._append_completions(inputs, ids)
        labels = torch.full_like(full["input_ids"], IGNORE_INDEX)
        labels[:, -cmask.shape[1] :] = full["input_ids"][:, -cmask.shape[1] :].masked_fill(~cmask, IGNORE_INDEX)
        full["labels"], full["completion_mask"] = labels, cmask
        return full

    def _append_completions(self, inputs: dict[str, torch.Tensor], completions: Sequence[Sequence[int]]):
        """Prompt (left-padded) + completion (right-padded); inputs repeat when there are k completions per prompt."""
        ids, cmask, k = pad_completions(completions, inputs["input_ids"].shape[0], self.tokenizer.pad_token_id)
        rep = {name: t.repeat_interleave(k, dim=0) for name, t in inputs.items() if name in _MODEL_INPUTS}
        rep["input_ids"] = torch.cat([rep["input_ids"], ids], dim=1)
        rep["attention_mask"] = torch.cat([rep["attention_mask"], cmask.long()], dim=1)
        return rep, cmask

    def _forward_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model kwargs on the model's device. No explicit position ids: with rotary embeddings the
        offset that left padding adds cancels out, and log-probs match generate() exactly (tested)."""
        return {k: v.to(self.device) for k, v in inputs.items() if k in _MODEL_INPUTS}

    # -- inference -----------------------------------------------------------------------------------
    def generate(
        self,
        audios: Sequence[Any],
        prompts: str | Sequence[str] | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        num_return_sequences: int = 1,
        top_p: float = 1.0,
        top_k: int = 0,
        system: str | None = SYSTEM_PROMPT,
    ) -> Generation:
        """Answer each clip; k = num_return_sequences samples per prompt, grouped by prompt.

        Sampling defaults to the plain tempered distribution (top_k=0, top_p=1), so
        completion_logprobs(..., temperature=t) gives exactly the log-probs the samples were drawn with.
        """
        inputs = self.build_chat_inputs(audios, prompts, system=system)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences, do_sample=do_sample)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = self.model.generate(**{k: v.to(self.device) for k, v in inputs.items()}, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        completion_ids = [self._strip(row) for row in out[:, prompt_len:].tolist()]
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Generation(texts, completion_ids, inputs, num_return_sequences)

    def _strip(self, row: list[int]) -> list[int]:
        for i, token in enumerate(row):
            if token in self.eos_token_ids:
                return row[: i + 1]
        return row

    def completion_logprobs(
        self,
        inputs: dict[str, torch.Tensor],
        completions: Sequence[str] | Sequence[Sequence[int]],
        temperature: float = 1.0,
    ) -> CompletionLogprobs:
        """Per-token log-probs of given completions after the prompts in `inputs` (differentiable).

        `completions` are strings (tokenised as-is, no end token added) or token-id lists such as
        Generation.completion_ids; k completions per prompt are allowed (grouped by prompt). Logits are
        computed only on the completion positions, which keeps memory at O(N x T x vocab).
        """
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] if isinstance(c, str) else list(c) for c in completions]
        full, cmask = self._append_completions(inputs, ids)
        width = cmask.shape[1]
        core = self._core()
        hidden = core.model(**self._forward_inputs(full), use_cache=False).last_hidden_state
        hidden = hidden[:, -width - 1 : -1]  # position t predicts token t + 1
        logprobs = torch.log_softmax(core.lm_head(hidden).float() / temperature, dim=-1)
        targets = full["input_ids"][:, -width:].to(logprobs.device)
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = cmask.to(token_lp.device)
        return CompletionLogprobs(token_lp.masked_fill(~mask, 0.0), mask)


_MODEL_INPUTS = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")
