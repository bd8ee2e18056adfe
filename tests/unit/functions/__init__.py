"""Tests of meshplane.functions: the Invoke request model, the async queue and its policy."""
