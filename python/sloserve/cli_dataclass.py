"""Command lines generated from frozen config dataclasses (help text from field metadata).

Field metadata understood: ``help``, ``choices``, and ``repeat`` (a repeatable flag collected
into a tuple). ``bool`` fields become ``store_true`` flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

_CONVERTERS = {"int": int, "float": float, "int | None": int, "float | None": float, "str": str, "str | None": str}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """One ``--field-name`` flag per field of ``cls``."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "")}
        if meta.get("repeat"):
            kwargs.update(action="append", default=[])
        elif f.type in ("bool", bool):
            kwargs.update(action="store_true", default=f.default)
        else:
            kwargs.update(type=_CONVERTERS.get(str(f.type), str), default=f.default)
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def dataclass_values(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values as constructor keywords (repeatable flags as tuples)."""
    values = vars(namespace)
    for f in dataclasses.fields(cls):
        if f.metadata.get("repeat"):
            values[f.name] = tuple(values[f.name])
    return values
