"""The registry over HTTP in Cloud Map's API shapes (AWS JSON 1.1), so scripts written against
Cloud Map adapt by changing the endpoint.

    POST /   X-Amz-Target: Route53AutoNaming_v20170314.<Operation>   body: the request JSON

Operations: RegisterInstance, DeregisterInstance, DiscoverInstances, DiscoverInstancesRevision,
UpdateInstanceCustomHealthStatus, ListNamespaces, ListServices, ListInstances. A service's `Id`
is `<namespace>/<service>` (ListServices returns it; Cloud Map's are `srv-...`); requests that
take a `ServiceId` also accept `NamespaceName` + `ServiceName`. Errors are HTTP 400 with
`{"__type": <Cloud Map error code>, "message": ...}` (InvalidInput, NamespaceNotFound,
ServiceNotFound, InstanceNotFound), 503 `ServiceUnavailable` when the store cannot be reached.
DiscoverInstances shuffles its result, as Cloud Map does. No authentication, no SigV4.
Imports trio, the admin HTTP server and `meshplane.registry`.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import trio

from meshplane._bridge import TaskStatus
from meshplane.admin.server import Request, Response, serve_http
from meshplane.registry import Registry, RegistryError
from meshplane.store import StoreError, StoreUnavailable

__all__ = ["CloudMapAPI", "TARGET_PREFIX", "serve_registry_api"]

TARGET_PREFIX = "Route53AutoNaming_v20170314."
CONTENT_TYPE = "application/x-amz-json-1.1"


def _answer(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc).encode(), CONTENT_TYPE)


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, json.dumps({"__type": code, "message": message}).encode(), CONTENT_TYPE,
                    headers=[("x-amzn-errortype", code)])


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise RegistryError("InvalidInput", f"{key}: required string")
    return value


def _service(body: dict[str, Any]) -> tuple[str, str]:
    if "ServiceId" in body:
        ns, sep, svc = _str(body, "ServiceId").rpartition("/")
        if not sep or not ns or not svc:
            raise RegistryError("InvalidInput", "ServiceId: expected NAMESPACE/SERVICE (from ListServices)")
        return ns, svc
    return _str(body, "NamespaceName"), _str(body, "ServiceName")


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RegistryError("InvalidInput", f"{key}: expected an object of strings")
    return value


class CloudMapAPI:
    """The request handler; see the module docstring."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "InvalidInput", "use POST / with X-Amz-Target")
        target = request.header("x-amz-target") or ""
        op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        handler = getattr(self, f"op_{op}", None) if op else None
        if handler is None:
            return _error(400, "UnknownOperationException", f"unknown operation {target!r}")
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return _error(400, "SerializationException", f"request body: {exc}")
        try:
            return _answer(200, await handler(body))
        except RegistryError as exc:
            return _error(400, exc.code, str(exc))
        except StoreUnavailable as exc:
            return _error(503, "ServiceUnavailable", str(exc))
        except StoreError as exc:
            return _error(500, "InternalServiceError", str(exc))

    async def op_RegisterInstance(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, svc = _service(body)
        await self.registry.register(ns, svc, _str(body, "InstanceId"), _string_map(body, "Attributes"))
        return {"OperationId": uuid.uuid4().hex}

    async def op_DeregisterInstance(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, svc = _service(body)
        await self.registry.deregister(ns, svc, _str(body, "InstanceId"))
        return {"OperationId": uuid.uuid4().hex}

    async def op_UpdateInstanceCustomHealthStatus(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, svc = _service(body)
        await self.registry.set_health(ns, svc, _str(body, "InstanceId"), _str(body, "Status"))
        return {}

    async def op_DiscoverInstances(self, body: dict[str, Any]) -> dict[str, Any]:
        max_results = body.get("MaxResults", 100)
        if not isinstance(max_results, int) or not 1 <= max_results <= 1000:
            raise RegistryError("InvalidInput", "MaxResults: expected 1-1000")
        found, revision = await self.registry.discover(
            _str(body, "NamespaceName"), _str(body, "ServiceName"),
            query=_string_map(body, "QueryParameters"),
            optional=_string_map(body, "OptionalParameters"),
            health_status=body.get("HealthStatus") or "HEALTHY",
            max_results=None,
        )
        random.shuffle(found)
        return {"Instances": [i.to_cloud_map() for i in found[:max_results]],
                "InstancesRevision": revision}

    async def op_DiscoverInstancesRevision(self, body: dict[str, Any]) -> dict[str, Any]:
        _, revision = await self.registry.discover(_str(body, "NamespaceName"),
                                                   _str(body, "ServiceName"), max_results=0)
        return {"InstancesRevision": revision}

    async def op_ListNamespaces(self, body: dict[str, Any]) -> dict[str, Any]:
        names = await self.registry.namespaces()
        return {"Namespaces": [{"Id": n, "Name": n, "Type": "HTTP",
                                "Properties": {"HttpProperties": {"HttpName": n}}} for n in names]}

    async def op_ListServices(self, body: dict[str, Any]) -> dict[str, Any]:
        services = await self.registry.services()
        return {"Services": [{"Id": f"{ns}/{s}", "Name": s, "NamespaceId": ns, "Type": "HTTP"}
                             for ns, s in services]}

    async def op_ListInstances(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, svc = _service(body)
        instances, _ = await self.registry.instances(ns, svc)
        return {"Instances": [{"Id": i.id, "Attributes": dict(i.attributes)} for i in instances]}


async def serve_registry_api(
    registry: Registry, host: str, port: int, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `CloudMapAPI` on host:port until cancelled; reports the bound (host, port)."""
    await serve_http(CloudMapAPI(registry), host, port, task_status=task_status)
