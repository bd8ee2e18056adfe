"""Tests of meshplane.config (pure: no sockets, no compiled core)."""
