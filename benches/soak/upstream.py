"""A soak upstream: a standard-library HTTP/1.1 server in its own process, so it can be killed.

    python benches/soak/upstream.py PORT      # PORT 0: pick one; prints "listening PORT"

Every request is answered 200 with a small JSON body (request bodies are read and counted),
except:
- header `x-soak-fault: reset`: the connection is closed without an answer;
- header `x-soak-fault: stall`: the answer comes after 3 s (past the soak's route timeout);
- while the mode is "fail" (`PUT /__mode` with body `fail`; `ok` restores): 503 to everything,
  as in a 5xx storm. `/__mode` itself is always answered.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time

MODE = {"value": "ok"}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        data = self._body()
        if self.path == "/__mode":
            if self.command == "PUT":
                with LOCK:
                    MODE["value"] = data.decode().strip() or "ok"
            self._answer(200, {"mode": MODE["value"]})
            return
        fault = self.headers.get("x-soak-fault")
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "stall":
            time.sleep(3.0)
        if MODE["value"] == "fail":
            self._answer(503, {"storm": True})
            return
        self._answer(200, {"path": self.path, "bytes": len(data)})

    do_GET = do_POST = do_PUT = _serve  # noqa: N815 (the standard library's names)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a peer that went away (the proxy gave up on a stall) is part of the soak


def main() -> None:
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
