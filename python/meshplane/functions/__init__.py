"""meshplane.functions: Python functions hosted as mesh targets, in Lambda's manner.

This branch's part: the Invoke API's request model (`invocation`), the asynchronous queue
(`event_queue`), its retry policy and destination records (`async_policy`) and the consumer
(`async_invoke`). Layer: beside `drivers`; imports trio, never the admin server or the CLI.
"""
