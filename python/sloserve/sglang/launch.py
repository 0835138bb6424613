"""Run SGLang's server with the sloserve plugin enabled.

``main(argv)`` splits sloserve's arguments (``--policy``, ``--policy-opt k=v``, ``--router``,
``--router-opt``, ``--perf-model``...) from SGLang's, exports the adapter config into the
environment (inherited by every process SGLang spawns), and runs ``python -m
sglang.launch_server`` with the rest. ``--backend`` is accepted and ignored, so the runtime's
``python -m sloserve.launch_server --backend sglang ...`` can hand over its argv unchanged.
With ``--device cpu`` the CPU mode (``cpu_mode.py``) is activated for SGLang's processes.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from sloserve.core.options import parse_kv
from sloserve.sglang import cpu_mode
from sloserve.sglang.config import SglangAdapterConfig, export_env
from sloserve.sglang.summaries import ENV_SUMMARY_DIR

log = logging.getLogger("sloserve.sglang.launch")


def sglang_backend_available() -> bool:
    """True when SGLang is importable and a CUDA device is present (``--backend auto``'s test;
    without a GPU SGLang serves only when asked with ``--device cpu``)."""
    if importlib.util.find_spec("sglang") is None or importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch install means no usable GPU
        return False


def _options(pairs: Sequence[str], flag: str) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(parse_kv(pairs, flag).items()))


def parser() -> argparse.ArgumentParser:
    d = SglangAdapterConfig
    p = argparse.ArgumentParser(
        prog="python -m sloserve.sglang.launch",
        add_help=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="SGLang's server with the sloserve plugin. sloserve's arguments are "
        "below; every other argument goes to python -m sglang.launch_server.",
    )
    p.add_argument("--backend", default="sglang", help="accepted for launch_server compatibility")
    p.add_argument("--policy", default=d.policy, help="sloserve scheduling policy (see python -m sloserve.sim --help)")
    p.add_argument("--policy-opt", action="append", default=[], metavar="K=V", help="policy option (repeatable)")
    p.add_argument("--router", default=d.router, help="sloserve router across --dp-size ranks")
    p.add_argument("--router-opt", action="append", default=[], metavar="K=V", help="router option (repeatable)")
    p.add_argument("--perf-model", default=d.perf_model, help="batch-time preset name or fitted .json")
    p.add_argument("--slo-kv-tokens", type=int, default=0, help="KV tokens the planner assumes (0: SGLang's pool)")
    p.add_argument("--default-tpot-ms", type=float, default=d.default_tpot_ms, help="TPOT SLO of untagged requests")
    p.add_argument(
        "--default-ttft-slowdown",
        type=float,
        default=d.default_ttft_slowdown,
        help="TTFT slowdown SLO of untagged requests",
    )
    p.add_argument("--no-slo-spec", action="store_true", help="keep SGLang's adaptive speculative step selector")
    p.add_argument("--no-mixed-chunk", action="store_true", help="do not add --enable-mixed-chunk")
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="do not add --enable-metrics (SGLang's Prometheus /metrics, with sloserve's per-tier series)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the router's randomness")
    p.add_argument(
        "--no-best-effort-expiry",
        action="store_true",
        help="keep serving a request the plan did not admit after its TTFT deadline passed without a first "
        "token (default: it ends with 429, and overload sheds work)",
    )
    return p


def split_args(argv: Sequence[str]) -> tuple[SglangAdapterConfig, list[str], argparse.Namespace]:
    """(adapter config, SGLang's arguments, parsed sloserve namespace)."""
    ns, rest = parser().parse_known_args(list(argv))
    if ns.backend not in ("sglang", "auto"):
        raise ValueError(f"sloserve.sglang.launch serves --backend sglang, not {ns.backend!r}")
    cfg = SglangAdapterConfig(
        policy=ns.policy,
        policy_options=_options(ns.policy_opt, "--policy-opt"),
        router=ns.router,
        router_options=_options(ns.router_opt, "--router-opt"),
        perf_model=ns.perf_model,
        kv_capacity_tokens=ns.slo_kv_tokens,
        default_tpot_ms=ns.default_tpot_ms,
        default_ttft_slowdown=ns.default_ttft_slowdown,
        spec_slo_aware=not ns.no_slo_spec,
        seed=ns.seed,
        best_effort_expiry=not ns.no_best_effort_expiry,
    )
    if not ns.no_mixed_chunk and "--enable-mixed-chunk" not in rest:
        rest.append("--enable-mixed-chunk")  # decodes ride along in prefill batches, as the plan assumes
    if not ns.no_metrics and "--enable-metrics" not in rest:
        rest.append("--enable-metrics")  # gateways scrape SGLang's series; sloserve's per-tier ones ride along
    if cpu_mode.is_cpu(rest):
        rest = cpu_mode.with_cpu_defaults(rest)
    return cfg, rest, ns


def validate(cfg: SglangAdapterConfig) -> None:
    """Fail before SGLang starts when the policy, router or perf model name is wrong."""
    from sloserve.core.registry import build_config
    from sloserve.core.scheduler import SCHEDULERS
    from sloserve.perf import get_model
    from sloserve.routing.base import ROUTERS

    build_config(SCHEDULERS.get(cfg.policy).Config, dict(cfg.policy_options), f"policy {cfg.policy!r}")
    build_config(ROUTERS.get(cfg.router).Config, dict(cfg.router_options), f"router {cfg.router!r}")
    get_model(cfg.perf_model)


def build_command(argv: Sequence[str], environ: dict | None = None) -> tuple[list[str], dict]:
    """The SGLang server command and the environment that enables the plugin everywhere."""
    cfg, rest, _ = split_args(argv)
    validate(cfg)
    env = dict(os.environ if environ is None else environ)
    export_env(cfg, env)
    allowed = env.get("SGLANG_PLUGINS")
    if allowed and "sloserve" not in {x.strip() for x in allowed.split(",")}:
        env["SGLANG_PLUGINS"] = allowed + ",sloserve"  # a whitelist would otherwise skip us
    if cpu_mode.is_cpu(rest):
        cpu_mode.activate(env, rest)
    return [sys.executable, "-m", "sglang.launch_server", *rest], env


def print_help() -> int:
    """sloserve's arguments, then SGLang's own (importable here even without triton)."""
    parser().print_help()
    print("\nSGLang's arguments (python -m sglang.launch_server --help):\n", flush=True)
    env = cpu_mode.help_environment(dict(os.environ))
    return subprocess.call([sys.executable, "-m", "sglang.launch_server", "--help"], env=env)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        return print_help()
    try:
        cmd, env = build_command(argv)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    own_dir = None
    if ENV_SUMMARY_DIR not in env:  # where replicas publish plan summaries for the DP controller
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        own_dir = env[ENV_SUMMARY_DIR] = tempfile.mkdtemp(prefix="sloserve-summaries-", dir=base)
    log.info("starting SGLang with the sloserve plugin: %s", " ".join(cmd[1:]))
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
