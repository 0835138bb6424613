"""Command-line options shared by ``sim run`` and ``sim capacity`` (and reused by benchmarks)."""

from __future__ import annotations

import argparse

from sloserve.core.options import parse_kv
from sloserve.datadir import resolve_data_path
from sloserve.sim.config import SimConfig


def parse_window(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        window = (float(start), float(end))
    except ValueError:
        raise ValueError(f"--trace-window expects START:END in seconds, got {text!r}") from None
    if not sep or window[1] <= window[0] or window[0] < 0:
        raise ValueError(f"--trace-window expects 0 <= START < END, got {text!r}")
    return window


def _names() -> dict[str, str]:
    """Valid names for --help, from the registries (all pure modules)."""
    from sloserve.core.scheduler import SCHEDULERS  # noqa: PLC0415
    from sloserve.perf.presets import preset_names  # noqa: PLC0415
    from sloserve.routing.base import ROUTERS  # noqa: PLC0415
    from sloserve.workloads import SCENARIOS  # noqa: PLC0415

    try:
        from sloserve.policies.distserve import DISAGGREGATED  # noqa: PLC0415
    except ImportError:
        DISAGGREGATED = {}  # noqa: N806
    return {
        "scenario": ", ".join(SCENARIOS),
        "policy": ", ".join(sorted({*SCHEDULERS.names(), *DISAGGREGATED})),
        "model": ", ".join(preset_names()),
        "router": ", ".join(ROUTERS.names()),
    }


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    names = _names()
    p.add_argument("--scenario", default="chatbot", help=f"workload scenario [{names['scenario']}]")
    p.add_argument("--policy", default="slos-serve", help=f"scheduling policy [{names['policy']}]")
    p.add_argument("--policy-opt", action="append", metavar="KEY=VALUE", help="policy option (repeatable)")
    p.add_argument(
        "--model", default="opt-13b-tp2-a100", help=f"batch-time model: a fitted .json or a preset [{names['model']}]"
    )
    p.add_argument("--kv-tokens", type=int, default=97648, help="KV capacity per replica, tokens")
    p.add_argument("--max-seq-len", type=int, default=None, help="drop requests longer than this")
    p.add_argument(
        "--trace",
        help="Azure LLM inference CSV (arrivals and lengths); a bare name is also looked up "
        "in $SLOSERVE_DATA_DIR or ../shared/data (and their folders)",
    )
    p.add_argument("--trace-window", help="START:END seconds from the trace's first request")
    p.add_argument("--lengths", help="length CSV (num_prefill_tokens, num_decode_tokens); bare names as --trace")
    p.add_argument("--arrival", default="poisson", choices=["poisson", "gamma"], help="synthetic arrival process")
    p.add_argument("--burstiness", type=float, default=1.0, help="Gamma inter-arrival CV")
    p.add_argument("--replicas", type=int, default=1, help="data-parallel replicas")
    p.add_argument("--router", default="round-robin", help=f"routing policy across --replicas [{names['router']}]")
    p.add_argument("--router-opt", action="append", metavar="KEY=VALUE", help="router option (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--num-requests", type=int, default=None, help="programs (default 1000; all in a trace window)")
    p.add_argument("--slo-scale", type=float, default=1.0, help="multiply every SLO by this")
    p.add_argument("--unknown-output-len", action="store_true", help="hide output lengths from the scheduler")
    p.add_argument(
        "--oracle-output-len",
        action="store_true",
        help="show every true output length to the scheduler (the paper's assumption; overrides --realistic)",
    )
    p.add_argument(
        "--step-time-noise",
        type=float,
        default=None,
        metavar="CV",
        help="lognormal per-step noise on the engine's step time, this coefficient of variation (seeded; --realistic: 0.1)",
    )
    p.add_argument(
        "--step-time-bias",
        type=float,
        default=None,
        metavar="B",
        help="the engine's steps take (1 + B) x the batch-time model's time (default 0)",
    )
    p.add_argument(
        "--client-timeout",
        action="store_true",
        help="clients abort a request without a first token past its TTFT deadline (a miss; every policy)",
    )
    p.add_argument(
        "--charge-scheduler-time",
        action="store_true",
        help="charge the scheduler's CPU time (deterministic cost model, sloserve/sim/overhead.py) to the engine",
    )
    p.add_argument(
        "--realistic",
        action="store_true",
        help="preset: hidden output lengths, --step-time-noise 0.1, --client-timeout, --charge-scheduler-time",
    )
    p.add_argument("--tolerance", type=float, default=0.05, help="deadline tolerance for attainment")
    p.add_argument("--json", help="also write the JSON result to this file")
    p.add_argument("--plot", help="write a PNG plot to this file")
    from sloserve.spec.config import add_spec_arguments  # noqa: PLC0415 (issue 4: --spec flags)

    add_spec_arguments(p)  # sets args.build_spec, which build_sim_config calls


def build_sim_config(args) -> SimConfig:
    """SimConfig from parsed arguments; validates the policy, router and model names."""
    from sloserve.core.scheduler import SCHEDULERS  # noqa: PLC0415
    from sloserve.perf.presets import get_model  # noqa: PLC0415
    from sloserve.routing.base import ROUTERS  # noqa: PLC0415

    if not _is_disaggregated(args.policy):
        SCHEDULERS.get(args.policy)  # KeyError naming the choices
    ROUTERS.get(args.router)
    get_model(args.model)
    extra = {}
    spec_builder = getattr(args, "build_spec", None)
    if spec_builder is not None:
        extra = spec_builder(args)
    real = getattr(args, "realistic", False)
    noise = getattr(args, "step_time_noise", None)
    return SimConfig(
        model=args.model,
        policy=args.policy,
        policy_options=parse_kv(args.policy_opt, "--policy-opt"),
        kv_tokens=args.kv_tokens,
        max_seq_len=args.max_seq_len,
        replicas=args.replicas,
        router=args.router,
        router_options=parse_kv(args.router_opt, "--router-opt"),
        seed=args.seed,
        tolerance=args.tolerance,
        step_time_noise=(REALISTIC_NOISE_CV if real else 0.0) if noise is None else noise,
        step_time_bias=getattr(args, "step_time_bias", None) or 0.0,
        client_timeout=real or getattr(args, "client_timeout", False),
        charge_scheduler_time=real or getattr(args, "charge_scheduler_time", False),
        **extra,
    )


REALISTIC_NOISE_CV = 0.1  # --realistic: per-step noise of the engine against the model


def output_len_known(args) -> bool:
    """Whether the scheduler sees true output lengths: yes unless --unknown-output-len or
    --realistic hides them; --oracle-output-len always shows them."""
    if getattr(args, "oracle_output_len", False):
        return True
    return not (getattr(args, "unknown_output_len", False) or getattr(args, "realistic", False))


def _is_disaggregated(policy: str) -> bool:
    try:
        from sloserve.policies.distserve import DISAGGREGATED  # noqa: PLC0415
    except ImportError:
        return False
    return policy in DISAGGREGATED


def workload_config(args, rate: float):
    from sloserve.workloads import WorkloadConfig  # noqa: PLC0415

    num = args.num_requests
    if num is None and not args.trace:
        num = 1000
    window = getattr(args, "trace_window_s", None)
    if window is None and getattr(args, "trace_window", None):
        # callers other than the sim CLI (benchmarks) pass only the raw --trace-window text
        window = parse_window(args.trace_window)
    return WorkloadConfig(
        scenario=args.scenario,
        rate_rps=rate,
        num_requests=num,
        arrival=args.arrival,
        burstiness_cv=args.burstiness,
        trace_path=resolve_data_path(args.trace),
        trace_window_s=window,
        lengths_path=resolve_data_path(args.lengths),
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        slo_scale=args.slo_scale,
        output_len_known=output_len_known(args),
    )
