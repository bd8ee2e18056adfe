"""Exceptions of meshplane. The lowest layer: imports nothing from the package."""

from __future__ import annotations

from dataclasses import dataclass


class MeshplaneError(Exception):
    """Base class of every error meshplane raises."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (file, resource, field path) and what was expected."""

    file: str
    resource: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.resource, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(MeshplaneError):
    """A config was rejected. `problems` lists every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in config:\n{lines}")
