"""``python -m sloserve.launch_server``: the sloserve server.

``--backend embedded`` (the default) runs the embedded runtime: an SGLang-compatible HTTP front,
a ZMQ router and ``--dp-size`` scheduler processes against a *simulated* GPU. ``--backend
sglang`` hands the same arguments to the SGLang integration; ``auto`` picks SGLang when it is
importable and CUDA is available.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Sequence

from sloserve.runtime.config import config_from_args

log = logging.getLogger("sloserve.launch")


def cuda_available() -> bool:
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
    choice = "sglang" if has_sglang and cuda_available() else "embedded"
    log.info("--backend auto: sglang importable=%s, chose %s", has_sglang, choice)
    return choice


def run_sglang(argv: Sequence[str]) -> int:
    try:
        from sloserve.sglang.launch import main as sglang_main
    except ImportError as exc:
        print(f"error: --backend sglang needs sloserve.sglang.launch and the sglang package ({exc})", file=sys.stderr)
        return 2
    return int(sglang_main(list(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config_from_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), format="[%(asctime)s %(name)s] %(levelname)s %(message)s")
    backend = choose_backend(cfg.backend)
    if backend == "sglang":
        return run_sglang(argv)
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
