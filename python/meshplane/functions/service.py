"""`FunctionService`: the functions of a running proxy, and `invoke` for Lambda's Invoke path.

An invocation is sent THROUGH the core, not to an instance directly: `invoke` makes one
HTTP/1.1 request to the proxy's internal listener `functions/invoke` (127.0.0.1, an ephemeral
port, compiled in whenever the config has a Function), whose route for
`x-meshplane-function: NAME:QUALIFIER` leads to the qualifier's function clusters (an alias's
weighted split included). So mesh traffic and direct invocations share the instances, the
concurrency limit (429 throttles), the waiting for cold starts, and the stats. The request
carries `x-meshplane-invoke: <secret>`, a per-proxy secret the instances were started with:
only then does an instance treat the body as the raw event (else it is an HTTP request turned
into an API Gateway event), so a mesh client cannot forge a raw invocation.

Layer: a driver (trio, h11, config); no compiled core (the proxy passes the listener address).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio

from meshplane.config.functions import LATEST, TARGET_HEADER, FunctionTarget
from meshplane.errors import MeshplaneError
from meshplane.functions.supervisor import Supervisor

__all__ = ["FunctionNotFound", "FunctionService", "Invocation", "split_name"]

INVOCATION_TYPES = ("RequestResponse", "DryRun")
# Beyond the function's own timeout: waiting for an instance to start, and the proxy's margin.
_MARGIN_S = 30.0


class FunctionNotFound(MeshplaneError):
    """No such function, version or alias (Lambda's ResourceNotFoundException, 404)."""


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation through the proxy.

    `status`: 200 when the function ran (`function_error` is then "Unhandled" if it failed,
    and `payload` is Lambda's error payload); 204 for a DryRun; otherwise the proxy's own
    answer: 429 throttled (reserved concurrency reached; `payload` is Lambda's
    TooManyRequestsException body), 503 no instance became ready in time, 504 the route timed
    out. `executed_version` is the version that ran (an alias may pick either of two);
    `log_tail` the last 4 KB of the invocation's log lines (START ... REPORT), base64, as
    `X-Amz-Log-Result` wants it.
    """

    status: int
    payload: bytes
    function_error: str | None
    executed_version: str | None
    log_tail: str | None
    request_id: str
    headers: Mapping[str, str]


def split_name(name: str, qualifier: str | None) -> tuple[str, str]:
    """(function, qualifier) from "NAME", "NAME:QUALIFIER" or an ARN
    `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`; an explicit `qualifier` wins
    over none in the name, and must agree with one in it."""
    parts = name.split(":")
    if name.startswith("arn:") and len(parts) >= 7 and parts[5] == "function":
        parts = parts[6:]
    if len(parts) > 2 or not parts[0]:
        raise FunctionNotFound(f"function name {name!r}: expected NAME, NAME:QUALIFIER or an ARN")
    inline = parts[1] if len(parts) == 2 else None
    if inline is not None and qualifier is not None and inline != qualifier:
        raise FunctionNotFound(f"the qualifier in {name!r} and Qualifier={qualifier!r} differ")
    return parts[0], qualifier or inline or LATEST


class FunctionService:
    """The functions a running proxy serves; built by `meshplane.Proxy` (`proxy.functions`)."""

    def __init__(self, supervisor: Supervisor,
                 invoke_address: Callable[[], tuple[str, int] | None]) -> None:
        self.supervisor = supervisor
        self._invoke_address = invoke_address

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.supervisor.targets})

    def qualifiers(self, name: str) -> list[str]:
        return sorted(q for n, q in self.supervisor.targets if n == name)

    def targets(self, name: str, qualifier: str = LATEST) -> list[FunctionTarget]:
        """The clusters serving `name:qualifier`; FunctionNotFound if there is none."""
        targets = self.supervisor.targets.get((name, qualifier))
        if targets:
            return targets
        if name not in self.names():
            raise FunctionNotFound(f"Function not found: {name}")
        raise FunctionNotFound(f"Function not found: {name}:{qualifier} (qualifiers: "
                               f"{', '.join(self.qualifiers(name))})")

    def stats(self, core_stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.supervisor.stats(core_stats)

    async def invoke(
        self,
        name: str,
        qualifier: str | None = None,
        payload: bytes = b"{}",
        *,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        request_id: str | None = None,
    ) -> Invocation:
        """Invoke `name` (NAME, NAME:QUALIFIER or an ARN) with the event `payload` (JSON bytes).

        `invocation_type` "RequestResponse" runs it and waits; "DryRun" only checks that the
        function and qualifier exist (204). Asynchronous ("Event") invocation is the Invoke
        API's queue, which calls this with RequestResponse. `client_context` is the base64
        JSON of `X-Amz-Client-Context`. Raises FunctionNotFound for an unknown function or
        qualifier, ValueError for an unknown invocation type, and OSError if the proxy's
        invoke listener cannot be reached. Cancellation abandons the request (the instance
        finishes the invocation; its result is dropped).
        """
        from meshplane.functions.worker import INVOKE_HEADER, LOG_TAIL_HEADER, REQUEST_ID_HEADER

        if invocation_type not in INVOCATION_TYPES:
            raise ValueError(f"invocation_type: expected one of {', '.join(INVOCATION_TYPES)}, "
                             f"got {invocation_type!r}")
        function, qualifier = split_name(name, qualifier)
        targets = self.targets(function, qualifier)
        request_id = request_id or str(uuid.uuid4())
        if invocation_type == "DryRun":
            return Invocation(204, b"", None, None, None, request_id, {})
        address = self._invoke_address()
        if address is None:
            raise OSError("the proxy has no functions/invoke listener")
        headers = [
            ("host", "functions.invoke"),
            (TARGET_HEADER, f"{function}:{qualifier}"),
            (INVOKE_HEADER, self.supervisor.secret),
            (REQUEST_ID_HEADER, request_id),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
        ]
        if client_context:
            headers.append(("x-amz-client-context", client_context))
        timeout = max(int(t.settings["timeoutMs"]) for t in targets) / 1000 + _MARGIN_S
        with trio.fail_after(timeout):
            status, got, body = await _post(address, headers, payload)
        return Invocation(
            status=status,
            payload=body,
            function_error=got.get("x-amz-function-error"),
            executed_version=got.get("x-amz-executed-version"),
            log_tail=got.get(LOG_TAIL_HEADER),
            request_id=request_id,
            headers=got,
        )


async def _post(address: tuple[str, int], headers: list[tuple[str, str]],
                body: bytes) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method="POST", target="/", headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        status, got, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return status, got, b"".join(chunks)
