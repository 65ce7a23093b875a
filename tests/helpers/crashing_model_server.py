"""A stand-in for llama.cpp's server that segfaults: `python crashing_model_server.py --port N`.

It lists one model and answers chat completions (streamed or not) with a short text, except the
`--crash-on`th request of each run, on which it kills itself with SIGSEGV, as a llama.cpp build
with kernels the CPU cannot run does on its first inference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crash-on", type=int, default=1, help="crash on this POST (1 = first)")
    options = parser.parse_args()
    posts = 0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            print(format % args, flush=True)

        def do_GET(self) -> None:
            self.send_json({"object": "list", "data": [{"id": "crashy", "object": "model"}]})

        def do_POST(self) -> None:
            nonlocal posts
            posts += 1
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if posts == options.crash_on:
                print("ggml_compute_forward: about to run a kernel this CPU cannot", flush=True)
                os.kill(os.getpid(), signal.SIGSEGV)
                # The signal may land on another thread a moment later: answer nothing meanwhile.
                time.sleep(60)
            if request.get("stream"):
                self.send_stream(["Still ", "here."])
            else:
                message = {"role": "assistant", "content": "Hi"}
                self.send_json({"object": "chat.completion", "choices": [{"message": message}]})

        def send_json(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_stream(self, pieces: list[str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks: list[dict[str, Any]] = [
                {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                for piece in pieces
            ]
            chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            for chunk in chunks:
                chunk.update(id="chatcmpl-crashy", object="chat.completion.chunk", created=0)
                chunk["model"] = "crashy"
                self.write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                time.sleep(0.01)
            self.write_chunk(b"data: [DONE]\n\n")
            self.write_chunk(b"")

        def write_chunk(self, data: bytes) -> None:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    ThreadingHTTPServer(("127.0.0.1", options.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
