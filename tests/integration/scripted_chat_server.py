"""A real OpenAI-style chat-completions server on 127.0.0.1 (``http.server`` in a thread, a free port) whose
replies follow a per-key script, for the CoT writer and LLM judge tests.

Subclasses say which key a request belongs to and what each scripted action answers; this class counts
attempts per key, picks the action (the last one repeats), records bodies and auth headers, and writes
injected HTTP errors and completion bodies.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedChatServer:
    """``scripts[key]`` lists one behaviour per attempt: an HTTP status ("429", "500", ...) or a subclass action."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.requests: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.auth_headers: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                server.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_action(self, key: str, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> str:
        """Count this attempt for `key` and return its scripted action (the default is "ok")."""
        with self.lock:
            n = self.requests[key]
            self.requests[key] += 1
            script = self.scripts.get(key, ["ok"])
            self.bodies.append(body)
            self.auth_headers.add(h.headers.get("authorization", ""))
            return script[min(n, len(script) - 1)]

    def handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def send_status(h: BaseHTTPRequestHandler, status: str) -> None:
        """An injected HTTP error with an OpenAI-style error body; a 429 says retry at once."""
        payload = json.dumps({"error": {"message": f"injected {status}", "type": "test"}}).encode()
        h.send_response(int(status))
        h.send_header("content-type", "application/json")
        if status == "429":
            h.send_header("retry-after", "0")
        h.send_header("content-length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    @staticmethod
    def completion(text: str, model: str | None, usage: dict[str, int]) -> bytes:
        return json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": usage,
        }).encode()  # fmt: skip

    @staticmethod
    def send_body(h: BaseHTTPRequestHandler, raw: bytes) -> None:
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)
