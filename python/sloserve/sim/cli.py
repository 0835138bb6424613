"""``python -m sloserve.sim run|capacity``: simulate a scenario under a policy.

Bad arguments (unknown scenario, policy or preset, a window outside the trace, a missing
file) fail with one clear line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from sloserve.cli_dataclass import (
    DefaultsHelpFormatter,
    OneLineParser,
    add_dataclass_arguments,
    dataclass_from_namespace,
)
from sloserve.sim.options import SimOptions, add_sim_arguments, parse_window, sim_config, workload_config
from sloserve.spec.config import SpecOptions

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


@dataclass(frozen=True)
class RunOptions:
    """``sim run``'s own flags."""

    rate_rps: float = field(default=1.0, metadata={"help": "mean arrival rate, programs per second", "flag": "--rate"})
    chrome_trace: str | None = field(default=None, metadata={"help": "write a Chrome trace of the run to this file"})


@dataclass(frozen=True)
class CapacityOptions:
    """``sim capacity``'s own flags."""

    attainment: float = field(default=0.9, metadata={"help": "target SLO attainment (0-1]"})
    start_rate_rps: float = field(
        default=1.0, metadata={"help": "first rate tried, programs/s", "flag": "--start-rate"}
    )
    resolution: float = field(default=0.025, metadata={"help": "relative bracket width to stop at"})


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m sloserve.sim", description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "run": ("simulate one arrival rate", RunOptions),
        "capacity": ("search the highest rate meeting the attainment target", CapacityOptions),
    }
    for name, (text, options) in commands.items():
        cmd = sub.add_parser(name, help=text, formatter_class=DefaultsHelpFormatter)
        add_sim_arguments(cmd)
        add_dataclass_arguments(cmd, options)
    return parser


def _workload(opts: SimOptions, rate: float):
    from sloserve.workloads import build_workload  # noqa: PLC0415

    return build_workload(workload_config(opts, rate))


def cmd_run(opts: SimOptions, spec: SpecOptions, run: RunOptions) -> dict:
    from sloserve.sim.simulator import Simulator  # noqa: PLC0415

    config = sim_config(opts, spec)
    if run.chrome_trace:
        config = replace(config, chrome_trace=True)
    wl = _workload(opts, run.rate_rps)
    result = Simulator(wl.programs, config).run()
    out = {
        "command": "run",
        "scenario": opts.scenario,
        "rate_rps": run.rate_rps,
        "num_dropped_too_long": wl.num_dropped_too_long,
        **result.summary,
    }
    if run.chrome_trace:
        from sloserve.sim.chrome_trace import write_chrome_trace  # noqa: PLC0415

        write_chrome_trace(result, run.chrome_trace)
    if opts.plot:
        from sloserve.plotting import plot_run  # noqa: PLC0415

        plot_run(result, opts.plot, title=f"{opts.scenario} / {config.policy} @ {run.rate_rps} rps")
    return out


def cmd_capacity(opts: SimOptions, spec: SpecOptions, cap: CapacityOptions) -> dict:
    from sloserve.sim.capacity import capacity_search  # noqa: PLC0415

    config = sim_config(opts, spec)
    _workload(opts, cap.start_rate_rps)  # fail fast on bad workload arguments
    bar = _progress_bar()
    try:
        res = capacity_search(
            lambda r: _workload(opts, r).programs,
            config,
            cap.attainment,
            cap.start_rate_rps,
            cap.resolution,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    out = {
        "command": "capacity",
        "scenario": opts.scenario,
        "policy": config.policy,
        "model": config.model,
        **res.to_dict(),
    }
    if opts.plot:
        from sloserve.plotting import plot_capacity  # noqa: PLC0415

        plot_capacity({config.policy: res}, opts.plot, title=f"{opts.scenario}: attainment vs rate")
    return out


class _Bar:
    def __init__(self) -> None:
        from tqdm import tqdm  # noqa: PLC0415

        self._bar = tqdm(desc="capacity search", unit="rate", file=sys.stderr)

    def update(self, point) -> None:
        self._bar.set_postfix(rate=f"{point.rate_rps:.3f}", attainment=f"{point.attainment:.3f}")
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar() -> _Bar | None:
    return _Bar() if sys.stderr.isatty() else None


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        opts = dataclass_from_namespace(args, SimOptions)
        spec = dataclass_from_namespace(args, SpecOptions)
        if opts.trace_window and not opts.trace:
            raise CliError("--trace-window needs --trace")
        if opts.trace_window:
            parse_window(opts.trace_window)  # a bad window fails before any work
        if args.command == "run":
            out = cmd_run(opts, spec, dataclass_from_namespace(args, RunOptions))
        else:
            out = cmd_capacity(opts, spec, dataclass_from_namespace(args, CapacityOptions))
    except (CliError, ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(out, indent=2, sort_keys=True)
    if opts.json:
        Path(opts.json).write_text(text + "\n")
    print(text)
    return 0
