"""Things chosen by name in the config (methods, tasks, model kinds, loggers), each kind in one `Registry`.

A registry reads like a mapping from name to entry (`name in registry`, iteration in the order of
registration, `sorted(registry)`, `registry[name]`, `.items()`); an unknown name is a one-line error
naming it and the available ones. Entries join when the registry is made (a mapping), with the
`register` decorator or with `add`; a name taken twice is an error, so two modules cannot silently
shadow each other.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind (`kind` names it in errors: "unknown method 'x'; available: ...")."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self.entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T) -> T:
        if name in self.entries:
            raise HarnessError(f"{self.kind} '{name}' is registered twice")
        self.entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds what it decorates under `name`."""
        return lambda entry: self.add(name, entry)

    def __getitem__(self, name: str) -> T:
        if name not in self.entries:
            raise HarnessError(f"unknown {self.kind} '{name}'; available: {', '.join(sorted(self.entries))}")
        return self.entries[name]

    def get(self, name: str, default=None):
        return self.entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
