"""A small stand-in OpenAI-compatible server for fast fault tests (never instead of vLLM).

``python fake_openai_server.py --port P [--delay S] [--model NAME]`` serves
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``; it answers
"4" to a prompt containing "2+2" and echoes otherwise. ``GET /debug/requests`` returns the
JSON bodies received so far (to check what reached the server).
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUESTS: list[dict] = []
LOCK = threading.Lock()


def make_handler(model: str, delay: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def setup(self):
            super().setup()  # no Nagle: headers and body go out at once (no 40 ms stalls)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status: int, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
            elif self.path == "/debug/requests":
                with LOCK:
                    self._send(200, list(REQUESTS))
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            with LOCK:
                REQUESTS.append({"path": self.path, "body": body})
            if body.get("model") != model:
                self._send(404, {"error": {"message": f"The model `{body.get('model')}` "
                                           "does not exist."}})
                return
            if delay:
                time.sleep(delay)
            if self.path == "/v1/chat/completions":
                prompt = body["messages"][-1]["content"]
            elif self.path == "/v1/completions":
                prompt = body["prompt"]
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            text = "4" if "2+2" in prompt else f"echo: {prompt}"
            usage = {"prompt_tokens": len(prompt.split()),
                     "completion_tokens": min(len(text.split()), body.get("max_tokens") or 99)}
            choice = {"index": 0, "finish_reason": "stop"}
            if self.path == "/v1/chat/completions":
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            self._send(200, {"id": "x", "object": "completion", "model": model,
                             "choices": [choice], "usage": usage})

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--model", default="fake-model")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.model, a.delay))
    srv.daemon_threads = True
    print(f"fake OpenAI server on {a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
