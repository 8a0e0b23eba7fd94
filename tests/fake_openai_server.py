"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for backend tests.

Each POST to /v1/chat/completions takes the next scripted `Reply` (or the
default answer when the script is empty) and records the request, so a test
can serve normal answers, error statuses, Retry-After headers, invalid JSON,
hangs, server-sent event streams and streams that break off.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion_body(
    text: str = "Paris.",
    finish_reason: str = "stop",
    prompt_tokens: int = 11,
    completion_tokens: int = 3,
) -> dict[str, Any]:
    """Build a chat-completion response body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_events(
    pieces: list[str], finish_reason: str = "stop", usage: bool = True
) -> list[str]:
    """Build the `data:` payloads of a streamed completion, ending with [DONE]."""
    events = [
        json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]})
        for piece in pieces
    ]
    events.append(
        json.dumps(
            {"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}
        )
    )
    if usage:
        events.append(
            json.dumps(
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 9, "completion_tokens": len(pieces)},
                }
            )
        )
    events.append("[DONE]")
    return events


@dataclass
class Reply:
    """One scripted response; `hang` blocks until the server stops."""

    status: int = 200
    body: Any = field(default_factory=completion_body)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    events: list[str] | None = None  # server-sent events instead of a JSON body
    drop_after_events: int | None = None  # close the stream after this many


class FakeOpenAIServer:
    """State shared by the handler threads: the script and the recorded requests."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self.script.popleft() if self.script else Reply()


def _handler(state: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            reply = state.next_reply(body, dict(self.headers))
            if reply.hang:
                state.stopping.wait()
                return
            time.sleep(reply.delay_s)
            if reply.events is not None:
                self._send_events(reply)
            else:
                self._send_body(reply)

        def _send_body(self, reply: Reply) -> None:
            raw = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            data = raw.encode("utf-8")
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_events(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            events = reply.events or []
            for index, event in enumerate(events):
                if reply.drop_after_events is not None and index >= (
                    reply.drop_after_events
                ):
                    break
                self.wfile.write(f"data: {event}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def run_fake_openai_server() -> Iterator[FakeOpenAIServer]:
    """Serve a `FakeOpenAIServer` on a free 127.0.0.1 port until the block exits."""
    state = FakeOpenAIServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
