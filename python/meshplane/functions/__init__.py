"""meshplane.functions: Python functions hosted as mesh targets, in Lambda's manner.

This branch's part: the Invoke API's request model (`invocation`), the asynchronous queue
(`event_queue`) and its consumer (`async_invoke`, over `policy.async_retry` and
`config.event_invoke`). Layer: beside `drivers`; imports trio, never the admin server or the CLI.
"""
