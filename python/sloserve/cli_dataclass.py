"""Command lines generated from frozen config dataclasses (help text from field metadata).

One generator serves the simulator, the server and the benchmark. Field metadata understood:

- ``help``; every help line ends with its default unless the text already speaks of one.
- ``choices``: the values argparse accepts.
- ``repeat``: a repeatable flag collected into a tuple (``--policy-opt a=1 --policy-opt b=2``).
- ``aliases``: more flag names, e.g. SGLang's.
- ``flag``: the flag's name when it is not the field's: a field named with its unit keeps a
  short flag (``rate_rps`` is ``--rate``).
- ``metavar``: the value's placeholder in ``--help`` (``CV``, ``KEY=VALUE``).
- ``names``: a callable listing the valid names, shown in ``--help``; the config validates them,
  with a clearer error than argparse's.
- ``negatable``: a ``bool`` field becomes ``--x/--no-x`` (for one that defaults to True).

Other ``bool`` fields become ``store_true`` flags.
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
    none worth showing (None, False, an empty repeatable flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, False, argparse.SUPPRESS) or action.default == []  # [] repeatable
        if "default" in text.lower() or unset or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _help(f: dataclasses.Field, meta: dict) -> str:
    text = meta.get("help", "").replace("%", "%%")
    if "names" in meta:
        text += f" [{', '.join(meta['names']())}]"
    default = _default(f)
    # identity, not ==: a 0 or 0.0 default is worth showing, an unset one (None, False, ()) is not
    if not (default is None or default is False or default == ()) and "default" not in text:
        text += " (default: %(default)s)"
    return text


_CONVERTERS = {"int": int, "float": float, "int | None": int, "float | None": float, "str": str, "str | None": str}


def _flag(f: dataclasses.Field, meta: dict) -> str:
    return meta.get("flag", "--" + f.name.replace("_", "-"))


def _kwargs(f: dataclasses.Field, meta: dict) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dest": f.name, "help": _help(f, meta)}
    if "metavar" in meta or "flag" in meta:  # a renamed flag's placeholder follows the flag, not the field
        kwargs["metavar"] = meta.get("metavar", _flag(f, meta)[2:].replace("-", "_").upper())
    if meta.get("repeat"):
        kwargs.update(action="append", default=[])
    elif f.type in ("bool", bool):
        action = argparse.BooleanOptionalAction if meta.get("negatable") else "store_true"
        kwargs.update(action=action, default=f.default)
    else:
        kwargs.update(type=_CONVERTERS.get(str(f.type), str), default=_default(f))
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
    return kwargs


def add_dataclass_arguments(parser: Any, cls: type) -> Any:
    """One ``--field-name`` flag per field of ``cls`` on ``parser`` (or an argument group)."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        parser.add_argument(_flag(f, meta), *meta.get("aliases", ()), **_kwargs(f, meta))
    return parser


def dataclass_values(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values as constructor keywords (repeatable flags as tuples)."""
    values = vars(namespace)
    for f in dataclasses.fields(cls):
        if f.metadata.get("repeat"):
            values[f.name] = tuple(values[f.name])
    return values


def dataclass_from_namespace(namespace: Any, cls: type) -> Any:
    """``cls`` built from the attributes of ``namespace`` that are its fields, others ignored.

    For parsers that mix several dataclasses' flags, and for callers (benchmarks) that edit a
    parsed namespace before building: a missing attribute takes the field's default, and a
    repeatable flag given as a list (or None) becomes a tuple."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(namespace, f.name, _default(f))
        if f.metadata.get("repeat"):
            value = tuple(value or ())
        values[f.name] = value
    return cls(**values)
