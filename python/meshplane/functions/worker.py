"""One function instance: `python .../meshplane/functions/worker.py SOCKET CONTROL_FD`.

Lambda's execution environment as a process (spec/lambda.md §3, §5, §7, §8). The settings come
as JSON in `MESHPLANE_FUNCTION_SPEC` (`InstanceSpec.to_env` writes it). The worker:

1. sets the environment (the function's variables, then Lambda's reserved ones), puts the code
   root, then the layers (the last layer first, so later layers override earlier ones), on
   `sys.path`, imports the handler's module and looks the handler up: the Init phase, timed
   ("Init Duration"). A failed init is kept: every invocation then answers its error
   (`Runtime.ImportModuleError`, `Runtime.HandlerNotFound`, or the exception), as Lambda does;
2. serves HTTP/1.1 (h11) on the Unix socket SOCKET, one invocation at a time (connections are
   served by threads, the invocation itself holds a lock). A request carrying
   `x-meshplane-invoke: <the per-process secret>` is a *raw invoke* (body = the event JSON,
   response = the result JSON, or the error payload with `X-Amz-Function-Error: Unhandled`);
   any other request becomes an API Gateway payload 2.0 event, and its result a response
   (a function error answers 502 with the error payload);
3. reports on CONTROL_FD, one JSON object a line: `ready` (init time), `start` and `end` of
   each invocation (duration, error type, max memory, cold or warm), and `exit` with the reason
   before it ends itself;
4. enforces the timeout and the memory limit from a watchdog thread: at the deadline, or when
   the resident set size exceeds `memorySize`, it answers the invocation with Lambda's error
   (`Sandbox.Timedout` / `Runtime.ExitError`), and the process exits (the supervisor starts a
   fresh one when needed). Memory is measured as RSS (/proc/self/statm) every 5 ms during an
   invocation, not with RLIMIT_AS: Python's address space (thread stacks, malloc arenas) is far
   larger than what it uses, so an address-space cap at `memorySize` would fail healthy code.

Prints of the handler go to stdout between the START and END lines; the last 4 KB of an
invocation's output return to a raw invoke in `x-meshplane-log-tail` (base64).

Imports only the standard library, h11 and `_http_event`, and the supervisor runs it by path
(not `-m`, which would import the `meshplane.functions` package and trio): its start-up is the
cold start.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import math
import os
import resource
import socket
import sys
import threading
import time
import traceback
import uuid
from typing import Any

import h11

if __package__:
    from meshplane.functions._http_event import ResultError, build_event, http_response
else:  # run by path (the supervisor does, so a cold start imports no meshplane package)
    from _http_event import (  # type: ignore[import-not-found,no-redef]
        ResultError,
        build_event,
        http_response,
    )

    del sys.path[0]  # this directory: not the handler's import path

SPEC_ENV = "MESHPLANE_FUNCTION_SPEC"
INVOKE_HEADER = "x-meshplane-invoke"
LOG_TAIL_HEADER = "x-meshplane-log-tail"
REQUEST_ID_HEADER = "x-meshplane-request-id"
LOG_TAIL_BYTES = 4096
MEMORY_POLL_S = 0.005
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_mb() -> float:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE / 1048576


def _max_rss_mb() -> int:
    return math.ceil(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class Context:
    """Lambda's context object (spec/lambda.md §7)."""

    def __init__(self, spec: dict[str, Any], request_id: str, deadline: float,
                 client_context: Any = None) -> None:
        self.function_name = spec["name"]
        self.function_version = spec["version"]
        self.invoked_function_arn = (
            f"arn:aws:lambda:{spec['region']}:000000000000:function:{spec['name']}"
            + (f":{spec['qualifier']}" if spec.get("qualifier") not in (None, "$LATEST") else "")
        )
        self.memory_limit_in_mb = int(spec["memoryMB"])
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec['name']}"
        self.log_stream_name = spec["logStream"]
        self.identity = None
        self.client_context = client_context
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Tee(io.TextIOBase):
    """stdout/stderr: written through, and kept for the running invocation's log tail."""

    def __init__(self, stream: Any, worker: Worker) -> None:
        self._stream = stream
        self._worker = worker

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._stream.flush()
        self._worker.capture(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class Worker:
    def __init__(self, spec: dict[str, Any], control: Any) -> None:
        self.spec = spec
        self.control = control
        self.timeout_s = spec["timeoutMs"] / 1000
        self.memory_mb = int(spec["memoryMB"])
        self.handler: Any = None
        self.init_error: dict[str, Any] | None = None
        self.init_ms = 0.0
        # A provisioned instance's Init ran ahead of any invocation: no invocation is cold.
        self.cold = not spec.get("provisioned", False)
        self.invoke_lock = threading.Lock()
        self.control_lock = threading.Lock()
        # The running invocation, read by the watchdog.
        self.state_lock = threading.Lock()
        self.current: dict[str, Any] | None = None
        self.log: list[str] = []
        self.listener: socket.socket | None = None
        self.wake = threading.Event()

    # --- reporting --------------------------------------------------------------------------

    def report(self, event: str, **fields: Any) -> None:
        line = json.dumps({"e": event, **fields}) + "\n"
        with self.control_lock:
            try:
                self.control.write(line)
                self.control.flush()
            except (OSError, ValueError):
                pass  # the supervisor is gone; the process will be ended with it

    def capture(self, text: str) -> None:
        if self.current is not None:
            self.log.append(text)

    def emit(self, line: str) -> None:
        sys.stdout.write(line + "\n")

    # --- init -------------------------------------------------------------------------------

    def init(self) -> None:
        spec = self.spec
        started = time.monotonic()
        # Lambda's Init Duration covers the runtime's start too: from the spawn, when known.
        spawned = spec.get("spawnedAt")
        started -= max(0.0, time.time() - spawned) if spawned else 0.0
        os.environ.update(spec.get("environment") or {})
        os.environ.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": spec["name"],
                "AWS_LAMBDA_FUNCTION_VERSION": spec["version"],
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec["memoryMB"]),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(math.ceil(self.timeout_s)),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec['name']}",
                "AWS_LAMBDA_LOG_STREAM_NAME": spec["logStream"],
                "AWS_REGION": spec["region"],
                "AWS_DEFAULT_REGION": spec["region"],
                "AWS_EXECUTION_ENV": "meshplane_python",
                "AWS_LAMBDA_INITIALIZATION_TYPE": (
                    "provisioned-concurrency" if spec.get("provisioned") else "on-demand"),
                "LAMBDA_TASK_ROOT": spec["codeDir"],
                "LAMBDA_RUNTIME_DIR": os.path.dirname(os.path.abspath(__file__)),
                "_HANDLER": spec["handler"],
                "TZ": ":UTC",
            }
        )
        paths = [spec["codeDir"]]
        for layer in reversed(spec.get("layerDirs") or []):
            py = os.path.join(layer, "python")
            paths += [py, os.path.join(py, "lib", f"python{sys.version_info[0]}."
                                            f"{sys.version_info[1]}", "site-packages"), layer]
        sys.path[:0] = paths
        with contextlib.suppress(OSError):
            os.chdir(spec["codeDir"])
        module_name, _, attr = spec["handler"].rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            self.init_error = _error(f"Unable to import module '{module_name}': {exc}",
                                     "Runtime.ImportModuleError", exc)
        except Exception as exc:  # module-level init code raised
            self.init_error = _error(str(exc), type(exc).__name__, exc)
        else:
            self.handler = getattr(module, attr, None)
            if not callable(self.handler):
                self.init_error = _error(
                    f"Handler '{attr}' missing on module '{module_name}'",
                    "Runtime.HandlerNotFound", None)
        self.init_ms = (time.monotonic() - started) * 1000
        if self.init_error is not None:
            self.emit(f"[ERROR] {self.init_error['errorType']}: {self.init_error['errorMessage']}")

    # --- one invocation ---------------------------------------------------------------------

    def invoke(self, event: Any, request_id: str, client_context: Any) -> tuple[Any, dict | None]:
        """Run the handler: (result, None) or (None, error payload). Holds `invoke_lock`."""
        deadline = time.monotonic() + self.timeout_s
        context = Context(self.spec, request_id, deadline, client_context)
        if self.init_error is not None:
            return None, {**self.init_error, "requestId": request_id}
        try:
            return self.handler(event, context), None
        except Exception as exc:
            return None, {**_error(str(exc), type(exc).__name__, exc), "requestId": request_id}

    def begin(self, request_id: str, conn: socket.socket, raw: bool) -> None:
        self.log = []
        with self.state_lock:
            self.current = {
                "id": request_id, "conn": conn, "raw": raw,
                "started": time.monotonic(), "deadline": time.monotonic() + self.timeout_s,
                "answered": False,
            }
        self.wake.set()
        self.report("start", id=request_id)
        self.emit(f"START RequestId: {request_id} Version: {self.spec['version']}")

    def finish(self, error_type: str | None) -> tuple[float, str] | None:
        """END and REPORT lines; None when the watchdog already answered."""
        with self.state_lock:
            current = self.current
            if current is None or current["answered"]:
                return None
            current["answered"] = True
        duration = (time.monotonic() - current["started"]) * 1000
        self._report_end(current["id"], duration, error_type)
        tail = "".join(self.log)[-LOG_TAIL_BYTES:]
        with self.state_lock:
            self.current = None
        return duration, tail

    def _report_end(self, request_id: str, duration: float, error_type: str | None) -> None:
        max_mem = _max_rss_mb()
        cold = self.cold
        self.cold = False
        self.emit(f"END RequestId: {request_id}")
        line = (
            f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(duration))} ms\t"
            f"Memory Size: {self.memory_mb} MB\tMax Memory Used: {max_mem} MB"
        )
        if cold:
            line += f"\tInit Duration: {self.init_ms:.2f} ms"
        self.emit(line)
        self.report("end", id=request_id, durationMs=round(duration, 3), error=error_type,
                    maxMemoryMB=max_mem, cold=cold, initMs=round(self.init_ms, 3) if cold else None)

    # --- watchdog ---------------------------------------------------------------------------

    def watchdog(self) -> None:
        """Ends the process when the running invocation times out or uses too much memory, and
        when the supervisor is gone (an instance never outlives its proxy)."""
        parent = os.getppid()
        while True:
            if self.current is None:
                # Idle: no polling, only a look at the parent now and then.
                self.wake.wait(1.0)
                self.wake.clear()
            else:
                time.sleep(MEMORY_POLL_S)
            if os.getppid() != parent:
                os._exit(1)
            with self.state_lock:
                current = self.current
                if current is None or current["answered"]:
                    continue
                now = time.monotonic()
                if now >= current["deadline"]:
                    reason, error_type = "timeout", "Sandbox.Timedout"
                    message = (f"RequestId: {current['id']} Error: Task timed out after "
                               f"{self.timeout_s:.2f} seconds")
                elif _rss_mb() > self.memory_mb:
                    reason, error_type = "memory", "Runtime.ExitError"
                    message = (f"RequestId: {current['id']} Error: Runtime exited with error: "
                               "signal: killed")
                else:
                    continue
                current["answered"] = True
            self._die(current, reason, error_type, message, now)

    def _die(self, current: dict[str, Any], reason: str, error_type: str, message: str,
             now: float) -> None:
        duration = (now - current["started"]) * 1000
        if reason == "timeout":
            self.emit(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {current['id']} "
                      f"Task timed out after {self.timeout_s:.2f} seconds")
        else:
            self.emit(f"RequestId: {current['id']} Error: Runtime exited with error: signal: killed")
        # The supervisor first: it takes this instance out of the cluster before the answer
        # releases it in the core.
        self.report("exit", reason=reason)
        # New connections now fail at once (a connect failure the proxy retries elsewhere)
        # instead of queueing on a process about to end.
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.spec["socket"])
                self.listener.close()
        self._report_end(current["id"], duration, error_type)
        payload = {"errorMessage": message, "errorType": error_type, "requestId": current["id"]}
        tail = "".join(self.log)[-LOG_TAIL_BYTES:]
        with contextlib.suppress(OSError):
            _send_error(current["conn"], current["raw"], payload, self.spec["version"], tail,
                        close=True)
        sys.stdout.flush()
        os._exit(0 if reason == "timeout" else 137)

    # --- serving ----------------------------------------------------------------------------

    def serve_connection(self, conn: socket.socket) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request, body = _read_request(conn, h)
                if request is None:
                    return
                self.handle(conn, h, request, body)
                if h.our_state is h11.MUST_CLOSE or h.their_state is h11.MUST_CLOSE:
                    return
                h.start_next_cycle()
        except (OSError, h11.ProtocolError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle(self, conn: socket.socket, h: h11.Connection, request: h11.Request,
               body: bytes) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        lookup = {k.lower(): v for k, v in headers}
        raw = lookup.get(INVOKE_HEADER) == self.spec["secret"]
        headers = [(k, v) for k, v in headers if k.lower() != INVOKE_HEADER]
        request_id = lookup.get(REQUEST_ID_HEADER) or str(uuid.uuid4())
        client_context = None
        if raw and "x-amz-client-context" in lookup:
            with contextlib.suppress(ValueError):
                client_context = json.loads(base64.b64decode(lookup["x-amz-client-context"]))
        with self.invoke_lock:
            if raw:
                try:
                    event = json.loads(body) if body.strip() else {}
                except ValueError as exc:
                    _respond(h, conn, 400, [("content-type", "application/json"),
                                            ("x-amzn-errortype", "InvalidRequestContentException")],
                             json.dumps({"Type": "User", "message": f"Could not parse request "
                                         f"body into json: {exc}"}).encode())
                    return
            else:
                event = build_event(request.method.decode(), request.target.decode("latin-1"),
                                    headers, body, request_id=request_id)
            self.begin(request_id, conn, raw)
            result, error = self.invoke(event, request_id, client_context)
            response: tuple[int, list[tuple[str, str]], bytes] | None = None
            if error is None:
                try:
                    if raw:
                        data = json.dumps(result).encode()
                        response = (200, [("content-type", "application/json")], data)
                    else:
                        response = http_response(result)
                except (TypeError, ValueError, ResultError) as exc:
                    error = {"errorMessage": f"Unable to marshal response: {exc}",
                             "errorType": "Runtime.MarshalError", "requestId": request_id}
            if error is not None:
                print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
                for frame in error.get("stackTrace") or []:
                    sys.stderr.write(frame)
            done = self.finish(error["errorType"] if error else None)
            if done is None:
                return  # the watchdog answered; the process is ending
            _, tail = done
            if error is not None:
                _send_error(conn, raw, error, self.spec["version"], tail, close=False, h=h)
                return
            assert response is not None
            status, out_headers, data = response
            out_headers = [*out_headers, ("x-amz-executed-version", self.spec["version"])]
            if raw:
                out_headers.append((LOG_TAIL_HEADER, base64.b64encode(tail.encode()).decode()))
            _respond(h, conn, status, out_headers, data)

    def run(self, path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self.watchdog, name="watchdog", daemon=True).start()
        self.report("ready", initMs=round(self.init_ms, 3), pid=os.getpid(),
                    initError=self.init_error["errorType"] if self.init_error else None)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()


def _error(message: str, error_type: str, exc: BaseException | None) -> dict[str, Any]:
    trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)) if exc else []
    return {"errorMessage": message, "errorType": error_type, "stackTrace": trace}


def _read_request(conn: socket.socket, h: h11.Connection) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            data = conn.recv(65536)
            h.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return request, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
        else:
            return None, b""


def _respond(h: h11.Connection, conn: socket.socket, status: int,
             headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
    out = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding",
                                                           "connection")]
    out.append(("content-length", str(len(body))))
    if close:
        out.append(("connection", "close"))
    data = h.send(h11.Response(status_code=status, headers=out))
    data += h.send(h11.Data(data=body)) if body else b""
    data += h.send(h11.EndOfMessage())
    conn.sendall(data)


def _send_error(conn: socket.socket, raw: bool, payload: dict[str, Any], version: str,
                tail: str, *, close: bool, h: h11.Connection | None = None) -> None:
    """A function error: 200 + X-Amz-Function-Error to a raw invoke, 502 through the mesh."""
    headers = [("content-type", "application/json"), ("x-amz-function-error", "Unhandled"),
               ("x-amz-executed-version", version)]
    if raw:
        headers.append((LOG_TAIL_HEADER, base64.b64encode(tail.encode()).decode()))
    body = json.dumps(payload).encode()
    status = 200 if raw else 502
    if h is not None:
        _respond(h, conn, status, headers, body, close=close)
        return
    # From the watchdog: the connection's h11 state belongs to the blocked thread; write the
    # response by hand (HTTP/1.1, closing the connection).
    lines = [f"HTTP/1.1 {status} {'OK' if raw else 'Bad Gateway'}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"content-length: {len(body)}", "connection: close", "", ""]
    conn.sendall("\r\n".join(lines).encode("latin-1") + body)


def serve_instance(spec: dict[str, Any], socket_path: str, control_fd: int) -> None:
    """Init, then serve on `socket_path` forever (a spawned or a forked instance)."""
    spec["socket"] = socket_path
    control = os.fdopen(control_fd, "w", buffering=1)
    worker = Worker(spec, control)
    sys.stdout = _Tee(sys.__stdout__, worker)
    sys.stderr = _Tee(sys.__stderr__, worker)
    worker.init()
    worker.run(socket_path)


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: python worker.py SOCKET CONTROL_FD")
    serve_instance(json.loads(os.environ.pop(SPEC_ENV)), argv[1], int(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
