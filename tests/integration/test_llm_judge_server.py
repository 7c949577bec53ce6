"""The LLM judge against a real OpenAI-style HTTP server on 127.0.0.1 that answers correctly, malformed
or not at all, per clip and per attempt (pattern of test_cot_client_server.py).

Every clip ends either scored or counted as a failure with its reason; malformed replies are retried
with a note and parsed leniently (fences, prose, key spellings); the key never reaches the results;
accepted replies are cached, so a rerun sends no request.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from http.server import BaseHTTPRequestHandler

import pytest
from scripted_chat_server import ScriptedChatServer

from emotionthinker.evaluation.judges import JudgeError, judge_messages, llm_judge, run_judges

SECRET = "sk-judge-test-not-a-real-key-77"
GOOD = {"factual_alignment": 4, "interpretative_quality": 3, "caption_completeness": 2, "fluency_and_structural_clarity": 5}


class JudgeServer(ScriptedChatServer):
    """Chat-completions server for the judge; scripts are keyed by the clip's transcription."""

    def handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        key = re.search(r'- transcription: "(.*)"', body["messages"][-1]["content"]).group(1)
        action = self.next_action(key, h, body)
        if action.isdigit():
            self.send_status(h, action)
            return
        if action == "broken_body":
            raw = b'{"id": "x", "choices": [{"message": {"content": "{\\"factual'
        else:
            text = {
                "ok": json.dumps(GOOD),
                "fenced": "Here is my grading:\n```json\n" + json.dumps({"Factual Alignment": "4", "Interpretative Quality": 3,
                          "Caption Completeness": 2, "Fluency and Structural Clarity": 5}) + "\n```\nThanks.",  # fmt: skip
                "prose": "The explanation is decent but misses the contour. I would give it a 3 overall.",
                "out_of_range": json.dumps(GOOD | {"caption_completeness": 7}),
                "missing_key": json.dumps({k: v for k, v in GOOD.items() if k != "interpretative_quality"}),
                "empty": "",
            }[action]
            raw = self.completion(text, body.get("model"), {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70})
        self.send_body(h, raw)


def record(i: int) -> dict:
    return {"id": f"c{i}", "audio_path": f"/clips/{i}.wav", "emotion": "angry", "transcription": f"clip number {i}",
            "annotations": {"pitch_level": "high", "energy_level": "high", "speed_level": "fast", "intonation": "uncertain",
                            "stressed_words": [], "gender": "Male", "age_level": "unknown"}}  # fmt: skip


def row(i: int) -> dict:
    return {"id": f"c{i}", "audio_path": f"/clips/{i}.wav",
            "output": f'<think>A man says "clip number {i}" loudly, fast and high.</think><answer>angry</answer>'}  # fmt: skip


def judge_cfg(cfg, server: JudgeServer, **eval_over):
    cot = cfg.cot.model_copy(update={"backoff_base_s": 0.0, "backoff_max_s": 0.0, "api_key_env": "JUDGE_TEST_KEY"})
    ev = cfg.eval.model_copy(update={"judge_base_url": server.base_url, "judge_model": "judge-model", "judge_max_retries": 2,
                                     "judge_timeout_s": 5.0, "judge_concurrency": 3, **eval_over})  # fmt: skip
    return cfg.model_copy(update={"cot": cot, "eval": ev})


SCRIPTS = {
    "clip number 0": ["ok"],
    "clip number 1": ["fenced"],  # prose + code fence + spelled-out keys + a number as string: parsed
    "clip number 2": ["prose", "ok"],  # malformed, then fixed after the retry note
    "clip number 3": ["out_of_range", "missing_key", "empty"],  # malformed three times: counted, not raised
    "clip number 4": ["500", "429", "ok"],  # transport errors retried
    "clip number 5": ["503"],  # keeps failing: counted by reason
    "clip number 6": ["broken_body", "ok"],  # truncated JSON body (not a chat completion): retried
}


def test_llm_judge_scores_retries_and_counts_failures(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    n = len(SCRIPTS)
    with JudgeServer() as server:
        server.scripts = dict(SCRIPTS)
        jcfg = judge_cfg(cfg, server)
        res = llm_judge([row(i) for i in range(n)], [record(i) for i in range(n)], jcfg, cache_path=tmp_path / "cache.sqlite")
        first_requests = dict(server.requests)

        expected = {c: float(v) for c, v in GOOD.items()}
        for i in (0, 1, 2, 4, 6):
            assert res.scores[i] == expected, i
        assert res.scores[3] is None and res.scores[5] is None
        assert res.failures == Counter({"unparseable": 1, "http_503": 1})
        assert first_requests == {"clip number 0": 1, "clip number 1": 1, "clip number 2": 2, "clip number 3": 3,
                                  "clip number 4": 3, "clip number 5": 3, "clip number 6": 2}  # fmt: skip
        assert res.info["retries"] == {"rejected:" + "its reply was not one JSON object scoring the four criteria from 1 to 5": 3,
                                       "http_500": 1, "rate_limited": 1, "http_503": 2, "malformed_response": 1}  # fmt: skip
        assert res.n_scored == 5 and res.means()["fluency_and_structural_clarity"] == 5.0
        m = res.metrics()
        assert m["judge/llm/failures"] == 2 and m["judge/llm/factual_alignment"] == 4.0
        assert server.auth_headers == {f"Bearer {SECRET}"} and SECRET not in json.dumps([res.details, res.info])
        retry = [b for b in server.bodies if "clip number 2" in b["messages"][-1]["content"]][1]
        assert "rejected because its reply was not one JSON object" in retry["messages"][-1]["content"]
        assert all(b["model"] == "judge-model" and b["temperature"] == 0.0 for b in server.bodies)

        # Accepted replies are cached: a rerun asks only for the clips that failed.
        again = llm_judge([row(i) for i in range(n)], [record(i) for i in range(n)], jcfg, cache_path=tmp_path / "cache.sqlite")
        assert again.scores == res.scores
        assert {k: server.requests[k] - first_requests.get(k, 0) for k in server.requests if server.requests[k] != first_requests.get(k, 0)} == {
            "clip number 3": 3, "clip number 5": 3}  # the last scripted behaviour repeats: 1 try + 2 retries each
        assert all(d.get("cached") for i, d in enumerate(again.details) if i not in (3, 5))


def test_judge_prompt_holds_rubric_reference_and_reasoning():
    msgs = judge_messages(record(1), row(1)["output"])
    user = msgs[-1]["content"]
    for needle in ("factual_alignment", "interpretative_quality", "caption_completeness", "fluency_and_structural_clarity",
                   '- transcription: "clip number 1"', "- pitch level: high", "- intonation contour: not determined",
                   "- speaker age group: not determined", 'A man says "clip number 1"', "final answer: angry"):  # fmt: skip
        assert needle in user, needle
    assert "<think>" not in user and "<audio>" not in user


def test_refused_endpoint_counts_every_clip_and_stops(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    with JudgeServer() as server:
        server.scripts = {f"clip number {i}": ["401"] for i in range(4)}
        res = llm_judge([row(i) for i in range(4)], [record(i) for i in range(4)], judge_cfg(cfg, server, judge_concurrency=1))
        assert res.failures == Counter({"endpoint_refused": 4}) and res.n_scored == 0
        assert sum(server.requests.values()) == 1  # stopped after the first refusal
        assert "HTTP 401" in res.info["endpoint_error"]


def test_run_judges_wires_llm_and_factual_and_limits_clips(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    with JudgeServer() as server:
        jcfg = judge_cfg(cfg, server, judge_max_clips=2)
        out = run_judges(["llm", "factual"], [row(i) for i in range(3)], [record(i) for i in range(3)], jcfg, tmp_path / "c.sqlite")
        assert set(out) == {"llm", "factual"} and len(out["llm"].scores) == len(out["factual"].scores) == 2
        assert sum(server.requests.values()) == 2
        # "loudly, fast and high" + "A man" + the quote: all supported by the annotation
        assert out["factual"].scores[0]["factual_alignment"] == 5.0
    no_endpoint = cfg.model_copy(update={"cot": cfg.cot.model_copy(update={"base_url": ""})})
    with pytest.raises(JudgeError, match="needs an endpoint"):
        run_judges(["llm"], [row(0)], [record(0)], no_endpoint)
    with pytest.raises(JudgeError, match="unknown judge"):
        run_judges(["gpt"], [row(0)], [record(0)], cfg)
