"""The CoT writer against a real OpenAI-style HTTP server on 127.0.0.1 that misbehaves on purpose.

The server (``http.server`` in a thread, a free port) speaks POST /v1/chat/completions and follows a
per-record script: 429s, 500/503s, sleeps past the client timeout, empty and malformed bodies,
responses that fail the content checks, 4xx. The writer must put every record either in the output
or in the errors file, never both and never twice, resume on a rerun, and count what it did.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from scripted_chat_server import ScriptedChatServer

from emotionthinker.cot import errors_path_for, write_cot
from emotionthinker.cot.cache import ResponseCache
from emotionthinker.cot.client import CotEndpointError
from emotionthinker.cot.writer import response_cache_path
from emotionthinker.records import read_jsonl

SECRET = "sk-test-not-a-real-key-4242"
CLIENT_TIMEOUT_S = 0.5


def good_reasoning(transcription: str, emotion: str) -> str:
    return (
        "The speaker is a woman whose voice sits fairly high and carries strong energy from the first word. "
        f'She says "{transcription}", and the pace is quick, with a falling contour at the end of the line. '
        "Those cues together make a relaxed reading unlikely, and the emphasis keeps building through the "
        f"sentence until it peaks near its close. Everything considered, the voice conveys {emotion}."
    )


class FakeOpenAI(ScriptedChatServer):
    """Scripted chat-completions server for the CoT writer; scripts are keyed by the clip's transcription."""

    def __init__(self) -> None:
        super().__init__()
        self.served: dict[str, list[str]] = defaultdict(list)
        self.usage_sent: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        user = body["messages"][-1]["content"]
        key = re.search(r'Transcription: "(.*)"', user).group(1)
        emotion = re.search(r"(?:Emotion \(the answer; do not reveal it early\)|Correct emotion): (.*)", user).group(1)
        action = self.next_action(key, h, body)
        with self.lock:
            self.served[key].append(action)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.respond(h, action, key, emotion, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): expected
        finally:
            with self.lock:
                self.in_flight -= 1

    def respond(self, h, action: str, key: str, emotion: str, body: dict) -> None:
        delivered = True
        if action == "timeout":
            time.sleep(CLIENT_TIMEOUT_S * 3)
            action, delivered = "ok", False  # the client has given up: these tokens never reach it
        elif action == "slow":
            time.sleep(0.3)
            action = "ok"
        if action.isdigit():
            self.send_status(h, action)
            return
        if action == "malformed":
            raw = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "The spea'
        elif action == "no_choices":
            raw = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m"}).encode()
        elif action == "empty_body":
            raw = b""
        else:
            text = {
                "ok": good_reasoning(key, emotion),
                "empty": "",
                "short": f'Hard to say: "{key}".',
                "label_first": f"{emotion.capitalize()} is obvious here. " + good_reasoning(key, emotion),
                "no_quote": good_reasoning(key, emotion).replace(f'"{key}"', "the sentence"),
            }[action]
            usage = {"prompt_tokens": 100, "completion_tokens": len(text.split()), "total_tokens": 100 + len(text.split())}
            with self.lock:
                for k, v in usage.items():
                    self.usage_sent[k] += v if delivered else 0
            raw = self.completion(text, body.get("model"), usage)
        self.send_body(h, raw)


def annotated(i: int, transcription: str, emotion: str = "angry", speaker: str | None = None) -> dict:
    return {
        "id": f"rec-{i:02d}", "audio_path": f"/data/clip{i}.wav", "corpus": "test", "split": "train",
        "speaker": speaker or f"spk-{i % 4}", "gender": "female", "emotion": emotion, "source_label": emotion,
        "transcription": transcription, "duration_s": 3.0, "transcription_source": "corpus",
        "annotations": {"pitch_level": "high", "energy_level": "high", "speed_level": "fast",
                        "stressed_words": ["door"], "intonation": "falling", "gender": "Female",
                        "age_level": "unknown"},
    }


SCRIPTS = {
    "kids are talking by the door 0": ["ok"],
    "kids are talking by the door 1": ["429", "ok"],
    "kids are talking by the door 2": ["500", "503", "ok"],
    "kids are talking by the door 3": ["timeout", "ok"],
    "kids are talking by the door 4": ["empty", "ok"],
    "kids are talking by the door 5": ["malformed", "ok"],
    "kids are talking by the door 6": ["no_choices", "empty_body", "ok"],
    "kids are talking by the door 7": ["short", "ok"],
    "kids are talking by the door 8": ["label_first", "no_quote", "ok"],
    "kids are talking by the door 9": ["500"],  # forever
    "kids are talking by the door 10": ["timeout"],  # forever
    "kids are talking by the door 11": ["malformed"],  # forever
    "kids are talking by the door 12": ["400"],  # not retryable
    "kids are talking by the door 13": ["short"],  # always fails the checks
}
EXPECTED_ERRORS = {"rec-09": "http_500", "rec-10": "timeout", "rec-11": "malformed_response", "rec-12": "http_400",
                   "rec-13": "rejected:too_few_words", "rec-14": "invalid_record"}


@pytest.fixture
def records() -> list[dict]:
    recs = [annotated(i, t) for i, t in enumerate(SCRIPTS)]
    bad = annotated(14, "kids are talking by the door 14")
    bad["emotion"] = "boredom"  # not one of the nine labels
    recs.append(bad)
    recs.append(dict(recs[0]))  # a duplicate id: processed once
    return recs


def online_cfg(cfg, base_url: str):
    cfg.cot.base_url = base_url
    cfg.cot.model = "test-model"
    cfg.cot.api_key_env = "ET_TEST_COT_KEY"
    cfg.cot.concurrency = 3
    cfg.cot.max_retries = 3
    cfg.cot.timeout_s = CLIENT_TIMEOUT_S
    cfg.cot.backoff_base_s = 0.01
    cfg.cot.backoff_max_s = 0.05
    return cfg


def ids_in(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)] if path.exists() else []


def test_every_record_written_or_errored_once_and_rerun_completes(cfg, records, tmp_path):
    out = tmp_path / "cot.jsonl"
    errors = errors_path_for(out)
    env = {"ET_TEST_COT_KEY": SECRET}
    all_ids = {r["id"] for r in records}
    with FakeOpenAI() as server:
        server.scripts = dict(SCRIPTS)
        online_cfg(cfg, server.base_url)
        rep = write_cot(records, out, cfg, environ=env)

        written, errored = ids_in(out), ids_in(errors)
        assert len(written) == len(set(written)) and len(errored) == len(set(errored)), "an id appears twice"
        assert set(written) | set(errored) == all_ids and not set(written) & set(errored)
        assert set(written) == {f"rec-{i:02d}" for i in range(9)}
        # Both files come out in input order, not in the order the retried and slow requests finished.
        assert written == [f"rec-{i:02d}" for i in range(9)] and errored == sorted(errored)
        reasons = {e["id"]: e["reason"].split(": ")[0] for e in read_jsonl(errors)}  # code before the detail
        assert reasons == EXPECTED_ERRORS
        # retried up to max_retries, except the non-retryable 400
        attempts = {e["id"]: e.get("attempts") for e in read_jsonl(errors)}
        assert attempts["rec-09"] == attempts["rec-10"] == attempts["rec-11"] == attempts["rec-13"] == 4
        assert attempts["rec-12"] == 1 and server.requests["kids are talking by the door 12"] == 1

        # what the report counted is what the server saw
        assert rep.n_written == 9 and rep.n_errors == 6 and rep.n_invalid == 1 and rep.n_duplicates == 1
        assert rep.n_requests == sum(server.requests.values())
        assert rep.retries["rate_limited"] == 1
        assert rep.retries["http_500"] == 1 + 3 and rep.retries["http_503"] == 1
        assert rep.retries["timeout"] == 1 + 3
        assert rep.retries["malformed_response"] == 1 + 2 + 3  # malformed, no choices + empty body, forever
        assert rep.retries["rejected:empty"] == 1
        assert rep.retries["rejected:too_few_words"] == 1 + 3
        assert rep.retries["rejected:opens_with_label"] == 1 and rep.retries["rejected:no_transcript"] == 1
        assert dict(rep.usage) == dict(server.usage_sent)  # tokens of every completion, rejected ones too
        assert server.auth_headers == {f"Bearer {SECRET}"}

        recs = {r["id"]: r for r in read_jsonl(out)}
        r8 = recs["rec-08"]
        assert r8["provenance"]["attempts"] == 3 and r8["provenance"]["base_url_host"] == "127.0.0.1"
        assert r8["provenance"]["writer"] == "openai-compatible" and r8["provenance"]["model"] == "test-model"
        assert r8["target"].startswith("<think>") and r8["target"].endswith("</think><answer>angry</answer>")

        # Rerun with a healed server: only the errored records are requested again.
        server.scripts = {}
        before = Counter(server.requests)
        rep2 = write_cot(records, out, cfg, environ=env)
        asked = {k for k in server.requests if server.requests[k] > before[k]}
        assert asked == {f"kids are talking by the door {i}" for i in (9, 10, 11, 12, 13)}
        assert rep2.n_resumed == 9 and rep2.n_written == 5 and rep2.n_errors == 1
        written, errored = ids_in(out), ids_in(errors)
        assert written == [f"rec-{i:02d}" for i in range(14)]  # the retried ones in their input places
        assert errored == ["rec-14"]  # only the invalid record is left, once

        # A writer killed mid-line leaves a torn last line: the rerun drops it and rewrites that record.
        data = out.read_bytes()
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        torn_id = json.loads(data[last_start:])["id"]
        out.write_bytes(data[: last_start + 40])
        rep3 = write_cot(records, out, cfg, environ=env)
        assert rep3.n_written == 1 and ids_in(out) == [f"rec-{i:02d}" for i in range(14)]
        assert rep3.n_cached == 1  # its accepted response came from the cache: no new request
        assert sum(server.requests.values()) == sum(before.values()) + 5

    # The key is never written anywhere.
    cache_file = response_cache_path(cfg)
    for path in (out, errors, cache_file):
        assert SECRET.encode() not in path.read_bytes()


def test_concurrency_limit_and_cache_serves_a_rebuilt_output(cfg, tmp_path):
    recs = [annotated(i, f"dogs are sitting by the door {i}", "sad") for i in range(4)]
    out = tmp_path / "cot.jsonl"
    with FakeOpenAI() as server:
        server.scripts = {r["transcription"]: ["slow"] for r in recs}
        online_cfg(cfg, server.base_url)
        write_cot(recs, out, cfg, environ={})  # local server: no key needed ("EMPTY")
        assert server.auth_headers == {"Bearer EMPTY"}
        assert 2 <= server.max_in_flight <= cfg.cot.concurrency  # parallel, within the limit
        n = sum(server.requests.values())
        out.unlink()
        rep = write_cot(recs, out, cfg, environ={})
        assert sum(server.requests.values()) == n and rep.n_cached == 4 and rep.usage["total_tokens"] == 0
        assert sorted(ids_in(out)) == [r["id"] for r in recs]
        with ResponseCache(response_cache_path(cfg)) as cache:
            assert len(cache) == 4


def test_auth_failure_stops_the_run(cfg, tmp_path):
    recs = [annotated(i, f"the door is open {i}") for i in range(3)]
    with FakeOpenAI() as server:
        server.scripts = {f"the door is open {i}": ["401"] for i in range(3)}
        online_cfg(cfg, server.base_url)
        with pytest.raises(CotEndpointError, match="401"):
            write_cot(recs, tmp_path / "cot.jsonl", cfg, environ={})
        assert not (tmp_path / "cot.jsonl").exists() or ids_in(tmp_path / "cot.jsonl") == []


def test_remote_endpoint_without_key_is_refused(cfg, tmp_path):
    cfg.cot.base_url = "https://api.example.com/v1"
    cfg.cot.api_key_env = "ET_TEST_UNSET_KEY"
    with pytest.raises(CotEndpointError, match="ET_TEST_UNSET_KEY"):
        write_cot([annotated(0, "a b c d")], tmp_path / "cot.jsonl", cfg, environ={})


def test_llm_rm_tuples_ask_for_the_target_scores(cfg, tmp_path):
    """Appendix D path: the rewrite comes from the endpoint; g is the configuration it was asked for."""
    from emotionthinker.cot import write_rm_tuples

    recs = [annotated(i, f"the kettle is boiling now {i}") for i in range(3)]
    cot_path = tmp_path / "cot.jsonl"
    write_cot(recs, cot_path, cfg)  # gold reasoning from the offline composer
    with FakeOpenAI() as server:
        server.scripts = {"the kettle is boiling now 2": ["500"]}  # this record's rewrites keep failing
        online_cfg(cfg, server.base_url)
        cfg.cot.max_retries = 1
        cfg.rm_data.writer = "llm"
        cfg.rm_data.variants_per_record = 2
        summary = write_rm_tuples(cot_path, tmp_path / "rm.jsonl", cfg)
    tuples = read_jsonl(tmp_path / "rm.jsonl")
    degraded = [t for t in tuples if t["kind"] == "degraded"]
    assert summary["n_gold"] == 3 and len(degraded) == 4 and summary["n_failed"] == 2
    assert all(t["g"] == t["requested"] and t["writer"] == "openai-compatible" for t in degraded)
    assert all("kettle is boiling now" in t["r"] for t in degraded)
    assert [e["record_id"] for e in read_jsonl(summary["errors"])] == [recs[2]["id"]] * 2
