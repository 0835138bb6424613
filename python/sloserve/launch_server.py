"""``python -m sloserve.launch_server``: the sloserve server.

``--backend auto`` (the default) picks SGLang when it is importable and a CUDA device is
present, else the embedded runtime; the choice is logged. ``--backend sglang --device cpu``
serves the real SGLang engine on this CPU (docs/sglang.md, "CPU mode"). ``--backend embedded`` runs the
embedded runtime: an SGLang-compatible HTTP front,
a ZMQ router and ``--dp-size`` scheduler processes against a *simulated* GPU. ``--backend
sglang`` hands every argument to the SGLang integration (SGLang's own server arguments
included), so ``--backend`` is read before anything else is parsed. With ``--ray-address`` either
backend runs its replicas as Ray actors across nodes (docs/routing.md, "Multi-node (Ray)").
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from typing import Sequence

from sloserve.runtime.config import config_from_args

log = logging.getLogger("sloserve.launch")


def cuda_available() -> bool:
    # No NVIDIA device node means no CUDA: answer without paying for a torch import.
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")):
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch  # only probed for --backend auto

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch install means no usable GPU here
        return False


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    has_sglang = importlib.util.find_spec("sglang") is not None
    return "sglang" if has_sglang and cuda_available() else "embedded"


def run_sglang(argv: Sequence[str]) -> int:
    from sloserve.sglang.cpu_mode import is_cpu

    wants_help = "-h" in argv or "--help" in argv
    if not wants_help and not cuda_available() and not is_cpu(argv):
        print(
            "error: --backend sglang found no CUDA GPU; add --device cpu to serve on this CPU "
            "(scripts/install_sglang_cpu.sh installs what it needs), or use --backend embedded "
            "for the simulated engine",
            file=sys.stderr,
        )
        return 2
    try:
        from sloserve.sglang.launch import main as sglang_main
    except ImportError as exc:
        print(f"error: --backend sglang needs sloserve.sglang.launch and the sglang package ({exc})", file=sys.stderr)
        return 2
    return int(sglang_main(list(argv)) or 0)


def requested_backend(argv: Sequence[str]) -> str:
    """Only ``--backend``: SGLang's own arguments must not be parsed by the embedded CLI."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", default="auto")
    known, _ = pre.parse_known_args(list(argv))
    return known.backend


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = requested_backend(argv)
    if requested not in ("embedded", "sglang", "auto"):
        print("error: --backend must be embedded, sglang or auto", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(levelname)s %(message)s")
    wants_help = "-h" in argv or "--help" in argv
    chosen = requested if requested != "auto" or wants_help else choose_backend("auto")
    if chosen == "sglang" and any(a == "--ray-address" or a.startswith("--ray-address=") for a in argv):
        # Replicas as Ray actors behind an SLO-aware ingress here; the ingress node needs no GPU.
        from sloserve.sglang.ray_launch import main as ray_main

        return ray_main(argv)
    if chosen == "sglang":
        if requested == "auto":
            log.info("--backend auto: SGLang and a CUDA GPU found, serving with SGLang")
        return run_sglang(argv)
    try:
        cfg = config_from_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line: the choice below is logged only once valid
        return 2
    logging.getLogger().setLevel(cfg.log_level.upper())
    if requested == "auto":
        log.info("--backend auto: no SGLang with a CUDA GPU here, serving the embedded runtime")
    from sloserve.runtime.server import ConfigError, StartupError, serve

    try:
        serve(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
