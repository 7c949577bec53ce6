"""OpenAI-compatible chat client with counted retries, response checks and a cache.

Works with any server speaking the chat-completions API (OpenAI, Azure's v1
endpoint, vLLM, Ollama, llama.cpp): only ``base_url``, ``model`` and the name of
the environment variable holding the key come from configuration. The key is
read at construction and never logged, printed or stored.

The SDK's own retries are switched off (``max_retries=0``) so every retry is
ours: counted by reason, with exponential backoff and jitter, honouring
``Retry-After`` on 429s. A response that fails the content checks is retried
too (with a note saying why), and after ``max_retries`` the call fails with the
last reason so the caller can write the record to its errors file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import openai

from emotionthinker.config import CotConfig
from emotionthinker.cot.cache import ResponseCache
from emotionthinker.cot.checks import clean_response
from emotionthinker.cot.prompt import retry_note

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class CotEndpointError(RuntimeError):
    """The endpoint cannot serve any request (no key, bad key, unknown model): stop instead of failing every record."""


class MalformedResponseError(ValueError):
    """The server answered 2xx with something that is not a chat completion."""


@dataclass
class CallFailed(Exception):
    """A request that kept failing; ``reason`` is the last failure, ``history`` every attempt's."""

    reason: str
    attempts: int
    history: list[str]
    usage: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason} after {self.attempts} attempts"


@dataclass
class CallResult:
    text: str
    usage: dict[str, int]
    attempts: int
    history: list[str]
    cached: bool = False


def base_url_host(url: str | None) -> str | None:
    if not url:
        return None
    parsed = urlparse(url)
    return parsed.hostname or None


def is_local_url(url: str | None) -> bool:
    return base_url_host(url) in LOCAL_HOSTS


def resolve_api_key(cfg: CotConfig, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    key = env.get(cfg.api_key_env, "")
    if key:
        return key
    if is_local_url(cfg.base_url):
        return "EMPTY"  # local servers accept any non-empty key
    raise CotEndpointError(
        f"no API key: set the environment variable {cfg.api_key_env} (cot.api_key_env) for {base_url_host(cfg.base_url)}"
    )


def _usage_dict(usage: Any) -> dict[str, int]:
    out = {k: 0 for k in USAGE_KEYS}
    if usage is None:
        return out
    for k in USAGE_KEYS:
        v = getattr(usage, k, None) if not isinstance(usage, dict) else usage.get(k)
        if isinstance(v, int):
            out[k] = v
    if not out["total_tokens"]:
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


def add_usage(total: dict[str, int], more: dict[str, int]) -> None:
    for k in USAGE_KEYS:
        total[k] = total.get(k, 0) + int(more.get(k, 0))


def extract_text(resp: Any) -> tuple[str, dict[str, int]]:
    """Message text and token usage, or MalformedResponseError when the body is not a chat completion."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError(f"no choices in response ({type(resp).__name__})")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedResponseError("message content is not text")
    return content or "", _usage_dict(getattr(resp, "usage", None))


class ChatClient:
    """One configured endpoint; thread-safe (``complete`` may run in worker threads)."""

    def __init__(
        self,
        cfg: CotConfig,
        cache: ResponseCache | None = None,
        environ: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not cfg.base_url:
            raise CotEndpointError("cot.base_url is empty: use the offline composer")
        self.cfg = cfg
        self.cache = cache
        self._sleep = sleep
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._client = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=resolve_api_key(cfg, environ),
            max_retries=0,
            timeout=cfg.timeout_s,
        )

    @property
    def host(self) -> str | None:
        return base_url_host(self.cfg.base_url)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        with self._rng_lock:
            jitter = 0.5 + self._rng.random()  # full-ish jitter: spreads retries of parallel workers
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2**attempt)) * jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max_s))
        return delay

    def _request(self, messages: list[dict[str, str]]) -> Any:
        return self._client.chat.completions.create(
            model=self.cfg.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
        )

    def complete(
        self,
        messages: list[dict[str, str]],
        check: Callable[[str], list[str]] | None = None,
        cache_key: str | None = None,
    ) -> CallResult:
        """Send ``messages`` until a response passes ``check``; raise CallFailed after max_retries retries."""
        if cache_key and self.cache is not None:
            hit = self.cache.get(cache_key)
            if hit is not None and not (check and check(hit["text"])):
                return CallResult(hit["text"], {k: 0 for k in USAGE_KEYS}, 0, [], cached=True)
        usage = {k: 0 for k in USAGE_KEYS}
        history: list[str] = []
        attempt = 0
        current = messages
        while True:
            retry_after: float | None = None
            retryable = True
            try:
                resp = self._request(current)
                text, u = extract_text(resp)
                add_usage(usage, u)
                text = clean_response(text)
                problems = check(text) if check else ([] if text else ["empty"])
                if not problems:
                    history.append("ok")
                    if cache_key and self.cache is not None:
                        self.cache.put(cache_key, self.cfg.model, text, u)
                    return CallResult(text, usage, attempt + 1, history)
                reason = "rejected:" + ",".join(p.split(":")[0] for p in problems)
                current = messages[:-1] + [
                    {"role": messages[-1]["role"], "content": messages[-1]["content"] + retry_note(problems)}
                ]
            except openai.RateLimitError as exc:
                reason = "rate_limited"
                retry_after = _retry_after(exc)
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError:
                reason = "connection_error"
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise CotEndpointError(f"endpoint refused the request: HTTP {exc.status_code} ({type(exc).__name__})") from None
            except openai.APIStatusError as exc:
                reason = f"http_{exc.status_code}"
                retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
            except (MalformedResponseError, openai.APIResponseValidationError, json.JSONDecodeError, ValueError,
                    AttributeError, TypeError):
                reason = "malformed_response"
            history.append(reason)
            if not retryable or attempt >= self.cfg.max_retries:
                raise CallFailed(reason, attempt + 1, history, usage)
            delay = self._backoff(attempt, retry_after)
            log.debug("retrying after %s in %.2fs (attempt %d)", reason, delay, attempt + 1)
            self._sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._client.close()


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def retry_counts(history: list[str]) -> Counter[str]:
    """Reasons of the attempts that were retried (every attempt but a final success or the final failure)."""
    return Counter(history[:-1])
