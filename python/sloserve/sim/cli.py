"""``python -m sloserve.sim run|capacity``: simulate a scenario under a policy.

Bad arguments (unknown scenario, policy or preset, a window outside the trace, a missing
file) fail with one clear line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from sloserve.cli_dataclass import DefaultsHelpFormatter, OneLineParser
from sloserve.sim.options import add_sim_arguments, build_sim_config, parse_window, workload_config

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m sloserve.sim", description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate one arrival rate", formatter_class=DefaultsHelpFormatter)
    add_sim_arguments(run)
    run.add_argument("--rate", type=float, default=1.0, help="mean arrival rate, programs per second")
    run.add_argument("--chrome-trace", help="write a Chrome trace of the run to this file")
    cap = sub.add_parser(
        "capacity", help="search the highest rate meeting the attainment target", formatter_class=DefaultsHelpFormatter
    )
    add_sim_arguments(cap)
    cap.add_argument("--attainment", type=float, default=0.9, help="target SLO attainment (0-1]")
    cap.add_argument("--start-rate", type=float, default=1.0, help="first rate tried, programs/s")
    cap.add_argument("--resolution", type=float, default=0.025, help="relative bracket width to stop at")
    return parser


def _workload(args, rate: float):
    from sloserve.workloads import build_workload  # noqa: PLC0415

    return build_workload(workload_config(args, rate))


def cmd_run(args) -> dict:
    from sloserve.sim.simulator import Simulator  # noqa: PLC0415

    config = build_sim_config(args)
    if args.chrome_trace:
        config = replace(config, chrome_trace=True)
    wl = _workload(args, args.rate)
    result = Simulator(wl.programs, config).run()
    out = {
        "command": "run",
        "scenario": args.scenario,
        "rate_rps": args.rate,
        "num_dropped_too_long": wl.num_dropped_too_long,
        **result.summary,
    }
    if args.chrome_trace:
        from sloserve.sim.chrome_trace import write_chrome_trace  # noqa: PLC0415

        write_chrome_trace(result, args.chrome_trace)
    if args.plot:
        from sloserve.plotting import plot_run  # noqa: PLC0415

        plot_run(result, args.plot, title=f"{args.scenario} / {config.policy} @ {args.rate} rps")
    return out


def cmd_capacity(args) -> dict:
    from sloserve.sim.capacity import capacity_search  # noqa: PLC0415

    config = build_sim_config(args)
    _workload(args, args.start_rate)  # fail fast on bad workload arguments
    bar = _progress_bar()
    try:
        res = capacity_search(
            lambda r: _workload(args, r).programs,
            config,
            args.attainment,
            args.start_rate,
            args.resolution,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    out = {
        "command": "capacity",
        "scenario": args.scenario,
        "policy": config.policy,
        "model": config.model,
        **res.to_dict(),
    }
    if args.plot:
        from sloserve.plotting import plot_capacity  # noqa: PLC0415

        plot_capacity({config.policy: res}, args.plot, title=f"{args.scenario}: attainment vs rate")
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
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.trace_window and not args.trace:
            raise CliError("--trace-window needs --trace")
        args.trace_window_s = parse_window(args.trace_window) if args.trace_window else None
        out = cmd_run(args) if args.command == "run" else cmd_capacity(args)
    except (CliError, ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0
