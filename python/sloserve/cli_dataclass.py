"""Command lines generated from frozen config dataclasses (help text from field metadata).

Field metadata understood: ``help``, ``choices``, ``repeat`` (a repeatable flag collected
into a tuple), ``aliases`` (more flag names, e.g. SGLang's) and ``names`` (a callable listing
the valid names, shown in ``--help``; the config validates them, with a clearer error than
argparse's). ``bool`` fields become ``store_true`` flags; every other help line ends with its
default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line on stderr (no usage block) and exits 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless it already names its default or has
    none worth showing (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _help(f: dataclasses.Field, meta: dict) -> str:
    text = meta.get("help", "").replace("%", "%%")
    if "names" in meta:
        text += f" [{', '.join(meta['names']())}]"
    if f.default not in (None, False, ()) and "default" not in text:
        text += " (default: %(default)s)"
    return text


_CONVERTERS = {"int": int, "float": float, "int | None": int, "float | None": float, "str": str, "str | None": str}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """One ``--field-name`` flag per field of ``cls``."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f, meta)}
        if meta.get("repeat"):
            kwargs.update(action="append", default=[])
        elif f.type in ("bool", bool):
            kwargs.update(action="store_true", default=f.default)
        else:
            kwargs.update(type=_CONVERTERS.get(str(f.type), str), default=f.default)
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        parser.add_argument("--" + f.name.replace("_", "-"), *meta.get("aliases", ()), **kwargs)
    return parser


def dataclass_values(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values as constructor keywords (repeatable flags as tuples)."""
    values = vars(namespace)
    for f in dataclasses.fields(cls):
        if f.metadata.get("repeat"):
            values[f.name] = tuple(values[f.name])
    return values
