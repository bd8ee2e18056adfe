"""A compliance policy as a Python function (see examples/policies/policies.yaml, docs/policies.md).

It receives the version document ({"mesh", "resources": [native entries]}) and yields
(resource label, field path, message) for each violation.
"""


def static_endpoints_are_loopback(doc):
    """static endpoints of the example mesh stay on 127.0.0.1"""
    for entry in doc["resources"]:
        if entry["kind"] != "VirtualNode":
            continue
        static = (entry["spec"].get("serviceDiscovery") or {}).get("static") or {}
        for i, endpoint in enumerate(static.get("endpoints") or []):
            address = endpoint if isinstance(endpoint, str) else endpoint.get("address", "")
            if not str(address).startswith("127.0.0.1"):
                yield (f'VirtualNode "{entry["name"]}"', f"spec.serviceDiscovery.static.endpoints[{i}]",
                       f"{address} is not a loopback address")
