"""A plain HTTP/1.1 upstream doing the benchmark function's work: `python plain_upstream.py`.

Prints its port, then serves forever (thread per connection, h11), answering every request
with the same computation as the `work` handler of bench_functions.py, so the two differ only
by what running as a function adds.
"""

from __future__ import annotations

import socket
import sys
import threading

import h11


def work() -> str:
    total = 0
    for i in range(2000):
        total += i * i
    return str(total)


def serve(conn: socket.socket) -> None:
    h = h11.Connection(h11.SERVER)
    try:
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                data = conn.recv(65536)
                if not data:
                    return
                h.receive_data(data)
                continue
            if isinstance(event, h11.EndOfMessage):
                body = work().encode()
                out = h.send(h11.Response(status_code=200, headers=[
                    ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(body)))]))
                out += h.send(h11.Data(data=body)) + h.send(h11.EndOfMessage())
                conn.sendall(out)
                h.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (OSError, h11.ProtocolError):
        return
    finally:
        conn.close()


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
