"""The App Mesh resource specs as declarative shapes (spec/appmesh.md; botocore appmesh 2019-01-25).

Field names, enums, ranges and required flags (`*`) follow the API model. meshplane's extension
keys are marked `# extension` and documented in docs/config.md. Imports only `schema`.
"""

from __future__ import annotations

from meshplane.config.schema import (
    LONG_MAX,
    U32_MAX,
    Bool,
    Either,
    Enum,
    Int,
    ListOf,
    NameMap,
    Num,
    Obj,
    Shape,
    Str,
)

NAME = Str(1, 255)
PORT = Int(1, 65535)
PROTOCOL = Enum("http", "http2", "grpc", "tcp")
GATEWAY_PROTOCOL = Enum("http", "http2", "grpc")
DURATION = Obj({"unit*": Enum("s", "ms"), "value*": Int(0, LONG_MAX)})
IP_PREFERENCE = Enum("IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY")
METHOD = Enum("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ENABLED = Enum("ENABLED", "DISABLED")
# Circuit-breaker limits are u32 in the snapshot; App Mesh's own "unlimited" is 2147483647.
LIMIT = Int(1, 2_147_483_647)

# --- listeners ------------------------------------------------------------------------------


def _health_check(protocol: Shape) -> Obj:
    return Obj(
        {
            "protocol*": protocol,
            "intervalMillis*": Int(5000, 300000),
            "timeoutMillis*": Int(2000, 60000),
            "healthyThreshold*": Int(2, 10),
            "unhealthyThreshold*": Int(2, 10),
            "path": Str(1, None),
            "port": PORT,
        }
    )


OUTLIER_DETECTION = Obj(
    {
        "maxServerErrors*": Int(1, LONG_MAX),
        "interval*": DURATION,
        "baseEjectionDuration*": DURATION,
        "maxEjectionPercent*": Int(0, 100),
    }
)
_HTTP_POOL = Obj({"maxConnections*": LIMIT, "maxPendingRequests": LIMIT})
_H2_POOL = Obj({"maxRequests*": LIMIT})
CONNECTION_POOL = Obj(
    {
        "http": _HTTP_POOL,
        "http2": _H2_POOL,
        "grpc": _H2_POOL,
        "tcp": Obj({"maxConnections*": LIMIT}),
    },
    one_of=("http", "http2", "grpc", "tcp"),
)
GATEWAY_CONNECTION_POOL = Obj(
    {"http": _HTTP_POOL, "http2": _H2_POOL, "grpc": _H2_POOL}, one_of=("http", "http2", "grpc")
)
HTTP_TIMEOUT = Obj({"idle": DURATION, "perRequest": DURATION})
TCP_TIMEOUT = Obj({"idle": DURATION})
LISTENER_TIMEOUT = Obj(
    {"http": HTTP_TIMEOUT, "http2": HTTP_TIMEOUT, "grpc": HTTP_TIMEOUT, "tcp": TCP_TIMEOUT},
    one_of=("http", "http2", "grpc", "tcp"),
)

# --- TLS ------------------------------------------------------------------------------------

_SDS = Obj({"secretName*": Str(1, None)})
_FILE_CERT = Obj({"certificateChain*": Str(1, 255), "privateKey*": Str(1, 255)})
_FILE_TRUST = Obj({"certificateChain*": Str(1, 255)})
_SANS = Obj({"match*": Obj({"exact*": ListOf(Str(1, 254), 1)})})
_LISTENER_TLS_FIELDS: dict[str, Shape] = {
    "mode*": Enum("STRICT", "PERMISSIVE", "DISABLED"),
    "certificate*": Obj(
        {"acm": Obj({"certificateArn*": Str(1, None)}), "file": _FILE_CERT, "sds": _SDS},
        one_of=("acm", "file", "sds"),
    ),
    "validation": Obj(
        {
            "trust*": Obj({"file": _FILE_TRUST, "sds": _SDS}, one_of=("file", "sds")),
            "subjectAlternativeNames": _SANS,
        }
    ),
}
LISTENER_TLS = Obj(_LISTENER_TLS_FIELDS)
# App Mesh serves one certificate per gateway listener; meshplane may add certificates chosen by
# the client's SNI (`certificate` stays the default).
GATEWAY_LISTENER_TLS = Obj(
    {
        **_LISTENER_TLS_FIELDS,
        "sniCertificates": ListOf(  # extension
            Obj(
                {
                    "serverNames*": ListOf(Str(1, 253), 1),
                    "certificate*": Obj({"file": _FILE_CERT, "sds": _SDS}, one_of=("file", "sds")),
                }
            ),
            1,
        ),
    }
)
CLIENT_POLICY = Obj(
    {
        "tls": Obj(
            {
                "enforce": Bool(),
                "ports": ListOf(PORT),
                "certificate": Obj({"file": _FILE_CERT, "sds": _SDS}, one_of=("file", "sds")),
                "validation*": Obj(
                    {
                        "trust*": Obj(
                            {
                                "acm": Obj(
                                    {"certificateAuthorityArns*": ListOf(Str(1, None), 1, 3)}
                                ),
                                "file": _FILE_TRUST,
                                "sds": _SDS,
                            },
                            one_of=("acm", "file", "sds"),
                        ),
                        "subjectAlternativeNames": _SANS,
                    }
                ),
            }
        )
    }
)
BACKEND_DEFAULTS = Obj({"clientPolicy": CLIENT_POLICY})
LOGGING = Obj(
    {
        "accessLog": Obj(
            {
                "file*": Obj(
                    {
                        "path*": Str(1, 255),
                        "format": Obj(
                            {
                                "json": ListOf(
                                    Obj({"key*": Str(1, 100), "value*": Str(1, 100)}), 1
                                ),
                                "text": Str(1, 1000),
                            },
                            one_of=("json", "text"),
                        ),
                    }
                )
            }
        )
    }
)

# --- VirtualNode ----------------------------------------------------------------------------

STATIC_ENDPOINT = Either(
    (str, Str(1, None)),
    (dict, Obj({"address*": Str(1, None), "port": PORT, "weight": Int(1, U32_MAX)})),
)
SERVICE_DISCOVERY = Obj(
    {
        "dns": Obj(
            {
                "hostname*": Str(1, None),
                "responseType": Enum("LOADBALANCER", "ENDPOINTS"),
                "ipPreference": IP_PREFERENCE,
            }
        ),
        "awsCloudMap": Obj(
            {
                "namespaceName*": Str(1, 1024),
                "serviceName*": Str(1, 1024),
                "attributes": ListOf(Obj({"key*": Str(1, 255), "value*": Str(1, 1024)})),
                "ipPreference": IP_PREFERENCE,
            }
        ),
        "static": Obj({"endpoints*": ListOf(STATIC_ENDPOINT, 1)}),  # extension
        # extension: a function's instances are the endpoints (docs/functions.md)
        "function": Obj({"functionName*": Str(1, 64), "qualifier": Str(1, 128)}),
    },
    one_of=("dns", "awsCloudMap", "static", "function"),
)
# meshplane extension on a node listener: what App Mesh's resilience fields cannot say
# (docs/resilience.md). Keys mirror `HealthCheckPolicy.from_appmesh` and
# `OutlierPolicy.from_appmesh` extension keys (a unit test holds them equal).
_PERCENT = Int(0, 100)
_COUNT = Int(0, U32_MAX)
_STATUS_RANGE = Obj({"start*": Int(100, 599), "end*": Int(101, 600)})
RESILIENCE = Obj(
    {
        "healthCheck": Obj(
            {
                "intervalMillis": Int(1, 300000),  # overrides App Mesh's 5000 minimum
                "timeoutMillis": Int(1, 60000),  # overrides App Mesh's 2000 minimum
                "port": PORT,
                "host": Str(1, 255),
                "intervalJitterPercent": _PERCENT,
                "intervalJitterMillis": Int(0, 300000),
                "initialJitterMillis": Int(0, 300000),
                "unhealthyIntervalMillis": Int(1, 300000),
                "unhealthyEdgeIntervalMillis": Int(1, 300000),
                "healthyEdgeIntervalMillis": Int(1, 300000),
                "expectedStatuses": ListOf(
                    Either((int, Int(100, 599)), (dict, _STATUS_RANGE)), 1, 32
                ),
            }
        ),
        "outlierDetection": Obj(
            {
                "maxEjectionDuration": DURATION,
                "maxEjectionJitter": DURATION,
                "alwaysEjectOneHost": Bool(),
                "splitExternalLocalOriginErrors": Bool(),
                "successfulActiveHealthCheckUnejectHost": Bool(),
                "consecutiveGatewayFailure": Int(1, U32_MAX),
                "consecutiveLocalOriginFailure": Int(1, U32_MAX),
                "successRateMinimumHosts": _COUNT,
                "successRateRequestVolume": _COUNT,
                "successRateStdevFactor": _COUNT,
                "failurePercentageThreshold": _PERCENT,
                "failurePercentageMinimumHosts": _COUNT,
                "failurePercentageRequestVolume": _COUNT,
                "enforcingConsecutive5xx": _PERCENT,
                "enforcingConsecutiveGatewayFailure": _PERCENT,
                "enforcingConsecutiveLocalOriginFailure": _PERCENT,
                "enforcingSuccessRate": _PERCENT,
                "enforcingLocalOriginSuccessRate": _PERCENT,
                "enforcingFailurePercentage": _PERCENT,
                "enforcingFailurePercentageLocalOrigin": _PERCENT,
            }
        ),
        "retryBudget": Obj({"budgetPercent": Num(0.0, 100.0), "minRetryConcurrency": _COUNT}),
        "circuitBreakers": Obj({"maxRetries": LIMIT}),
    }
)
NODE_LISTENER = Obj(
    {
        "portMapping*": Obj({"port*": PORT, "protocol*": PROTOCOL}),
        "healthCheck": _health_check(PROTOCOL),
        "outlierDetection": OUTLIER_DETECTION,
        "connectionPool": CONNECTION_POOL,
        "timeout": LISTENER_TIMEOUT,
        "tls": LISTENER_TLS,
        "resilience": RESILIENCE,  # extension
    }
)
VIRTUAL_NODE = Obj(
    {
        "listeners": ListOf(NODE_LISTENER),
        "serviceDiscovery": SERVICE_DISCOVERY,
        "backends": ListOf(
            Obj(
                {
                    "virtualService*": Obj(
                        {"virtualServiceName*": NAME, "clientPolicy": CLIENT_POLICY}
                    )
                }
            ),
            0,
            50,
        ),
        "backendDefaults": BACKEND_DEFAULTS,
        "logging": LOGGING,
        "loadBalancing": Obj(
            {  # extension
                "policy": Enum("least_request", "round_robin", "random"),
                "activeRequestBias": Num(0.0, 1000.0),
            }
        ),
    }
)

# --- VirtualService, VirtualRouter, Mesh ----------------------------------------------------

VIRTUAL_SERVICE = Obj(
    {
        "provider": Obj(
            {
                "virtualNode": Obj({"virtualNodeName*": NAME}),
                "virtualRouter": Obj({"virtualRouterName*": NAME}),
            },
            one_of=("virtualNode", "virtualRouter"),
        )
    }
)
VIRTUAL_ROUTER = Obj(
    {"listeners": ListOf(Obj({"portMapping*": Obj({"port*": PORT, "protocol*": PROTOCOL})}), 1)}
)
# The trace-context formats the core reads and writes (docs/config.md, "Tracing").
PROPAGATION = Enum("w3c", "b3", "b3multi", "xray")
MESH = Obj(
    {
        "egressFilter": Obj({"type*": Enum("DROP_ALL", "ALLOW_ALL")}),
        "serviceDiscovery": Obj({"ipPreference": IP_PREFERENCE}),
        # One trace-context format for every proxy of the mesh; `proxy.tracing.propagation`
        # overrides it for one proxy.
        "tracing": Obj({"propagation": PROPAGATION}),  # extension
    }
)

# --- Route ----------------------------------------------------------------------------------

_MATCH_RANGE = Obj({"start*": Int(-LONG_MAX - 1, LONG_MAX), "end*": Int(-LONG_MAX - 1, LONG_MAX)})
HEADER_MATCH = Obj(
    {
        "exact": Str(1, 255),
        "prefix": Str(1, 255),
        "suffix": Str(1, 255),
        "regex": Str(1, 255),
        "range": _MATCH_RANGE,
    },
    one_of=("exact", "prefix", "suffix", "regex", "range"),
)
HEADER = Obj({"name*": Str(1, 50), "invert": Bool(), "match": HEADER_MATCH})
QUERY_PARAMETER = Obj({"name*": Str(1, None), "match": Obj({"exact": Str(0, None)})})
PATH_MATCH = Obj({"exact": Str(1, 255), "regex": Str(1, 255)}, one_of=("exact", "regex"))
HTTP_ROUTE_MATCH = Obj(
    {
        "prefix": Str(1, None),
        "path": PATH_MATCH,
        "headers": ListOf(HEADER, 1, 10),
        "method": METHOD,
        "scheme": Enum("http", "https"),
        "queryParameters": ListOf(QUERY_PARAMETER, 1, 10),
        "port": PORT,
    },
    exclusive=("prefix", "path"),
)
ROUTE_ACTION = Obj(
    {
        "weightedTargets*": ListOf(
            Obj({"virtualNode*": NAME, "weight*": Int(0, 100), "port": PORT}), 1, 10
        )
    }
)
HTTP_RETRY_EVENTS = ("server-error", "gateway-error", "client-error", "stream-error")
GRPC_RETRY_EVENTS = (
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
_RETRY_FIELDS: dict[str, Shape] = {
    "maxRetries*": Int(0, U32_MAX),
    "perRetryTimeout*": DURATION,
    "httpRetryEvents": ListOf(Enum(*HTTP_RETRY_EVENTS), 1, 25),
    "tcpRetryEvents": ListOf(Enum("connection-error"), 1, 1),
}
HTTP_RETRY = Obj(_RETRY_FIELDS)
GRPC_RETRY = Obj({**_RETRY_FIELDS, "grpcRetryEvents": ListOf(Enum(*GRPC_RETRY_EVENTS), 1, 5)})
HTTP_ROUTE = Obj(
    {
        "match*": HTTP_ROUTE_MATCH,
        "action*": ROUTE_ACTION,
        "retryPolicy": HTTP_RETRY,
        "timeout": HTTP_TIMEOUT,
    }
)
GRPC_ROUTE = Obj(
    {
        "match*": Obj(
            {
                "serviceName": Str(1, None),
                "methodName": Str(1, 50),
                "metadata": ListOf(HEADER, 1, 10),
                "port": PORT,
            }
        ),
        "action*": ROUTE_ACTION,
        "retryPolicy": GRPC_RETRY,
        "timeout": HTTP_TIMEOUT,
    }
)
TCP_ROUTE = Obj({"match": Obj({"port": PORT}), "action*": ROUTE_ACTION, "timeout": TCP_TIMEOUT})
ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")
ROUTE = Obj(
    {
        "priority": Int(0, 1000),
        "httpRoute": HTTP_ROUTE,
        "http2Route": HTTP_ROUTE,
        "grpcRoute": GRPC_ROUTE,
        "tcpRoute": TCP_ROUTE,
    },
    one_of=ROUTE_TYPES,
)

# --- VirtualGateway, GatewayRoute -----------------------------------------------------------

VIRTUAL_GATEWAY = Obj(
    {
        "listeners*": ListOf(
            Obj(
                {
                    "portMapping*": Obj({"port*": PORT, "protocol*": GATEWAY_PROTOCOL}),
                    "healthCheck": _health_check(GATEWAY_PROTOCOL),
                    "connectionPool": GATEWAY_CONNECTION_POOL,
                    "tls": GATEWAY_LISTENER_TLS,
                }
            ),
            1,
        ),
        "backendDefaults": BACKEND_DEFAULTS,
        "logging": LOGGING,
    }
)
_HOSTNAME_MATCH = Obj({"exact": Str(1, 253), "suffix": Str(1, 253)}, one_of=("exact", "suffix"))
_TARGET = Obj({"virtualService*": Obj({"virtualServiceName*": NAME}), "port": PORT})
_HOSTNAME_REWRITE = Obj({"defaultTargetHostname": ENABLED})
HTTP_GATEWAY_ROUTE = Obj(
    {
        "match*": Obj(
            {
                "prefix": Str(1, None),
                "path": PATH_MATCH,
                "hostname": _HOSTNAME_MATCH,
                "method": METHOD,
                "headers": ListOf(HEADER, 1, 10),
                "queryParameters": ListOf(QUERY_PARAMETER, 1, 10),
                "port": PORT,
            },
            exclusive=("prefix", "path"),
        ),
        "action*": Obj(
            {
                "target*": _TARGET,
                "rewrite": Obj(
                    {
                        "prefix": Obj(
                            {"defaultPrefix": ENABLED, "value": Str(1, 255)},
                            exclusive=("defaultPrefix", "value"),
                        ),
                        "path": Obj({"exact": Str(1, 255)}),
                        "hostname": _HOSTNAME_REWRITE,
                    }
                ),
            }
        ),
    }
)
GRPC_GATEWAY_ROUTE = Obj(
    {
        "match*": Obj(
            {
                "serviceName": Str(1, None),
                "hostname": _HOSTNAME_MATCH,
                "metadata": ListOf(HEADER, 1, 10),
                "port": PORT,
            }
        ),
        "action*": Obj({"target*": _TARGET, "rewrite": Obj({"hostname": _HOSTNAME_REWRITE})}),
    }
)
GATEWAY_ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute")
GATEWAY_ROUTE = Obj(
    {
        "priority": Int(0, 1000),
        "httpRoute": HTTP_GATEWAY_ROUTE,
        "http2Route": HTTP_GATEWAY_ROUTE,
        "grpcRoute": GRPC_GATEWAY_ROUTE,
    },
    one_of=GATEWAY_ROUTE_TYPES,
)

# --- Function (extension; Lambda's settings and limits, spec/lambda.md §1) ----------------------

_CODE = Either((str, Str(1, None)), (dict, Obj({"path*": Str(1, None)})))
FUNCTION = Obj(
    {
        "handler*": Str(1, 128),
        "runtime": Enum("python3"),
        "description": Str(0, 256),
        "code*": _CODE,
        "layers": ListOf(_CODE, 0, 5),
        "environment": Obj({"variables": NameMap(Str(0, None))}),
        "timeout": DURATION,
        "memorySize": Int(128, 10240),
        "reservedConcurrency": Int(0, 1000),
        "provisionedConcurrency": ListOf(
            Obj({"qualifier*": Str(1, 128), "count*": Int(1, 1000)}), 0, 50
        ),
        # How long an instance may stay idle before it is stopped, and how long a request
        # waits for an instance to start before the proxy answers 503.
        "idleTimeout": DURATION,
        "instanceWait": DURATION,
    }
)

SPEC_OF_KIND: dict[str, Shape] = {
    "Mesh": MESH,
    "VirtualService": VIRTUAL_SERVICE,
    "VirtualRouter": VIRTUAL_ROUTER,
    "Route": ROUTE,
    "VirtualNode": VIRTUAL_NODE,
    "VirtualGateway": VIRTUAL_GATEWAY,
    "GatewayRoute": GATEWAY_ROUTE,
    "Function": FUNCTION,
}
# Route type key -> the listener protocol it serves (route type must equal listener protocol).
ROUTE_PROTOCOL = {
    "httpRoute": "http",
    "http2Route": "http2",
    "grpcRoute": "grpc",
    "tcpRoute": "tcp",
}
