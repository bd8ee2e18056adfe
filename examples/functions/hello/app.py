"""The handler of examples/functions.yaml: `curl 'localhost:18080/hello?name=mesh'`."""

import json
import os

# Module-level code runs once per instance (Lambda's Init); state persists while it is warm.
GREETING = os.environ.get("GREETING", "hello")
CALLS = 0


def handler(event, context):
    global CALLS
    CALLS += 1
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    print(f"greeting {name} (call {CALLS} of this instance)")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": f"{GREETING}, {name}",
            "version": context.function_version,
            "requestId": context.aws_request_id,
            "remainingMs": context.get_remaining_time_in_millis(),
        }),
    }
