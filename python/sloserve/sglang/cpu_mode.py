"""CPU mode of the SGLang backend: what SGLang 0.5.23 needs to serve without a GPU.

A supported development and CI mode (a GPU only changes the speed). Activated by ``--device
cpu`` and only for the processes the sloserve launcher starts; a GPU run is never touched:

* ``SGLANG_USE_CPU_ENGINE=1`` (without it SGLang's scheduler imports ``vllm._custom_ops``);
* ``cpu_shim/`` first on ``PYTHONPATH``: its ``sitecustomize`` stubs ``triton`` and
  ``torchvision`` (imported at module level, absent on CPU) in every process SGLang spawns,
  and its ``sgl_kernel`` placeholder satisfies eight module-level imports;
* ``SGLANG_CPU_OMP_THREADS_BIND`` splits the cores between ranks when there is more than one
  (SGLang binds one NUMA node per rank otherwise, and refuses more ranks than nodes);
* defaults for flags that matter on a CPU: ``--max-total-tokens`` (else the KV pool is sized
  from host RAM) and ``--sleep-on-idle`` (else an idle scheduler spins a core).

No sglang import here: the launcher uses it before any SGLang process exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

SHIM_DIR = Path(__file__).resolve().parent / "cpu_shim"
DEFAULT_MAX_TOTAL_TOKENS = 32768


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def is_cpu(args: Sequence[str]) -> bool:
    return (flag_value(args, "--device") or "").lower() == "cpu"


def with_cpu_defaults(args: Sequence[str]) -> list[str]:
    """SGLang arguments with the CPU defaults added where the user gave none."""
    out = list(args)
    if flag_value(out, "--max-total-tokens") is None:
        out += ["--max-total-tokens", str(DEFAULT_MAX_TOTAL_TOKENS)]
    if "--sleep-on-idle" not in out:
        out.append("--sleep-on-idle")
    return out


def num_ranks(args: Sequence[str]) -> int:
    """Scheduler processes SGLang starts: DP size times TP size."""

    def size(*flags: str) -> int:
        for flag in flags:
            value = flag_value(args, flag)
            if value is not None:
                return max(int(value), 1)
        return 1

    return size("--dp-size", "--dp") * size("--tp-size", "--tp")


def thread_binding(ranks: int, cores: Sequence[int]) -> str:
    """``SGLANG_CPU_OMP_THREADS_BIND``: contiguous core groups, one per rank ("0|1", "0-1|2-3").

    With fewer cores than ranks, ranks share cores round-robin (slower, but it serves)."""
    cores = sorted(cores)
    if ranks <= len(cores):
        per = len(cores) // ranks
        groups = [cores[i * per : (i + 1) * per] for i in range(ranks)]
    else:
        groups = [[cores[i % len(cores)]] for i in range(ranks)]
    return "|".join(str(g[0]) if len(g) == 1 else f"{g[0]}-{g[-1]}" for g in groups)


def _prepend_path(env: dict, path: str) -> None:
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != path]
    env["PYTHONPATH"] = os.pathsep.join([path, *parts])


def activate(env: dict, args: Sequence[str]) -> dict:
    """Make ``env`` (inherited by every SGLang process) serve on a CPU."""
    env["SGLANG_USE_CPU_ENGINE"] = "1"
    _prepend_path(env, str(SHIM_DIR))
    ranks = num_ranks(args)
    if ranks > 1 and not env.get("SGLANG_CPU_OMP_THREADS_BIND"):
        cores = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        )
        env["SGLANG_CPU_OMP_THREADS_BIND"] = thread_binding(ranks, cores)
    return env


def import_stubs_needed() -> bool:
    """True where SGLang cannot even be imported without the stubs (no real triton installed;
    the stubs' own finder, when installed in this process, does not count)."""
    from sloserve.sglang.gpu_stubs import really_installed

    return not really_installed("triton")


def help_environment(env: dict) -> dict:
    """Environment for ``sglang.launch_server --help`` on a machine without triton."""
    if import_stubs_needed():
        _prepend_path(env, str(SHIM_DIR))
    return env
