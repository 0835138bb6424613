"""Name -> class registries. Adding a policy is one file plus one decorator."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of classes by name; ``plugins`` are modules imported on first lookup."""

    def __init__(self, kind: str, plugins: Iterable[str] = ()) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._plugins = tuple(plugins)
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._classes[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._plugins:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}") from None


def build_config(config_cls: type, options: Mapping[str, Any] | None, what: str) -> Any:
    """Build a frozen config dataclass from a mapping, rejecting unknown keys with a clear error."""
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) for {what}: {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return config_cls(**options)
