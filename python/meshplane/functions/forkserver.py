"""The instance template: `python -S forkserver.py FD` forks warm-runtime instances on request.

A cold start is an interpreter start plus the runtime's imports (h11, json, threading ...)
before the handler's own Init: 100-200 ms on a busy machine. This process pays that once and
forks one child per instance (as Lambda's SnapStart restores a prepared environment): the
child starts with the runtime imported, sets its own environment and runs the worker's Init
and serving (`worker.serve_instance`). It is single-threaded (fork is safe) and does nothing
else.

Protocol on FD, a SOCK_SEQPACKET socket: the supervisor sends one message per instance, the
JSON `{"spec", "socket", "env"}` with two file descriptors attached (the instance's control
pipe and its stdout); the reply is `{"pid": N}`. EOF ends the server; its children notice (their
parent changes) and end too. Exited children are reaped here.

Imports only the standard library and `worker` (run by path, like the worker).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

import worker  # type: ignore[import-not-found]  # this directory, when run by path


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(request: dict, control_fd: int, stdout_fd: int, server: socket.socket) -> None:
    server.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    os.dup2(stdout_fd, 1)
    os.dup2(stdout_fd, 2)
    os.close(stdout_fd)
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        worker.serve_instance(request["spec"], request["socket"], control_fd)
    finally:
        os._exit(1)


def main(argv: list[str]) -> None:
    server = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(server, 1 << 20, 2)
        except InterruptedError:
            continue
        if not message:
            return
        request = json.loads(message)
        control_fd, stdout_fd = fds
        pid = os.fork()
        if pid == 0:
            _child(request, control_fd, stdout_fd, server)
        os.close(control_fd)
        os.close(stdout_fd)
        server.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    main(sys.argv)
