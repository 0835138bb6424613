"""The CLI generator shared by the simulator, the server and the benchmark (sloserve/cli_dataclass.py)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from sloserve.cli_dataclass import OneLineParser, add_dataclass_arguments, dataclass_from_namespace


@dataclass(frozen=True)
class Opts:
    rate_rps: float = field(default=1.0, metadata={"help": "arrival rate", "flag": "--rate"})
    mode: str = field(default="a", metadata={"help": "mode", "choices": ("a", "b")})
    opt: tuple[str, ...] = field(default=(), metadata={"help": "option", "repeat": True, "metavar": "KEY=VALUE"})
    noise: float | None = field(default=None, metadata={"help": "noise", "metavar": "CV"})
    online: bool = field(default=True, metadata={"help": "learn online", "negatable": True})
    quiet: bool = field(default=False, metadata={"help": "say less"})
    seed: int = field(default=0, metadata={"help": "seed"})
    name: str = field(default="x", metadata={"help": "a name", "names": lambda: ["x", "y"]})


def parser() -> argparse.ArgumentParser:
    return add_dataclass_arguments(OneLineParser(prog="t"), Opts)


def test_flags_values_and_types():
    args = parser().parse_args(
        ["--rate", "2.5", "--mode", "b", "--opt", "a=1", "--opt", "b=2", "--noise", "0.1", "--no-online", "--quiet"]
    )
    opts = dataclass_from_namespace(args, Opts)
    assert opts == Opts(rate_rps=2.5, mode="b", opt=("a=1", "b=2"), noise=0.1, online=False, quiet=True)
    assert dataclass_from_namespace(parser().parse_args(["--online"]), Opts) == Opts()
    assert dataclass_from_namespace(parser().parse_args([]), Opts) == Opts()


def test_bad_choice_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["--mode", "c"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        parser().parse_args(["--rate-rps", "1"])  # the field's name is no flag when "flag" renames it


def test_help_shows_metavars_names_and_set_defaults_only():
    text = " ".join(parser().format_help().split())
    for needle in (
        "--rate RATE",
        "--opt KEY=VALUE",
        "--noise CV",
        "--online, --no-online",
        "a name [x, y] (default: x)",
        "seed (default: 0)",  # a zero default is shown
        "arrival rate (default: 1.0)",
    ):
        assert needle in text, needle
    for unset in ("noise (default", "say less (default", "option (default"):
        assert unset not in text, unset


def test_namespace_edits_and_missing_attributes():
    """Benchmarks edit a parsed namespace (lists, None) or pass one without some flags."""
    ns = argparse.Namespace(rate_rps=3.0, opt=["k=v"], unrelated=1)
    assert dataclass_from_namespace(ns, Opts) == Opts(rate_rps=3.0, opt=("k=v",))
    assert dataclass_from_namespace(argparse.Namespace(opt=None), Opts).opt == ()


def test_flags_go_into_an_argument_group():
    p = OneLineParser(prog="t")
    add_dataclass_arguments(p.add_argument_group("grouped"), Opts)
    assert "grouped:" in p.format_help()
    assert p.parse_args(["--rate", "4"]).rate_rps == 4.0
