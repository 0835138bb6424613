"""``python -m sloserve.launch_server --backend sglang --ray-address ADDR --dp-size N ...``.

The SGLang backend across nodes: N replicas, each one SGLang + sloserve-plugin server (dp 1) in a
Ray actor on whatever node Ray places it (``ray_pool.py``), behind one HTTP ingress here that
routes with a sloserve policy (``ray_ingress.py``). The ingress consumes ``--dp-size`` (the replica
count), ``--host``, ``--port`` and ``--api-key``; every other argument (the model, SGLang's own
arguments, ``--policy``...) goes to each replica's server unchanged, and the routing arguments
(``--router``, ``--router-opt``, ``--perf-model``, SLO defaults) are read here as well.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from typing import Sequence

from sloserve.sglang.launch import split_args, validate

log = logging.getLogger("sloserve.sglang.ray")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sloserve.launch_server --backend sglang --ray-address ADDR",
        add_help=False,
        allow_abbrev=False,  # a prefix of one of SGLang's arguments must reach the replicas, not match ours
        description="The SGLang backend's replicas as Ray actors behind one SLO-aware ingress.",
    )
    p.add_argument("--backend", default="sglang")
    p.add_argument("--ray-address", required=True, help="Ray cluster (host:port, 'auto', or 'local')")
    p.add_argument(
        "--dp-size",
        "--data-parallel-size",
        type=int,
        default=1,
        help="replicas: one SGLang server (dp 1) per Ray actor",
    )
    p.add_argument("--ray-replica-cpus", type=float, default=1.0, help="CPUs Ray reserves for each replica")
    p.add_argument(
        "--ray-replica-gpus",
        type=float,
        default=None,
        help="GPUs per replica (default: 0 on --device cpu, else --tp-size)",
    )
    p.add_argument("--host", default="127.0.0.1", help="where the ingress listens")
    p.add_argument("--port", type=int, default=30000, help="where the ingress listens")
    p.add_argument(
        "--api-key", default="", help="clients must send it (the replicas get a per-launch key of their own)"
    )
    p.add_argument("--max-restarts", type=int, default=8, help="replacement replicas started in all")
    p.add_argument("--ray-startup-s", type=float, default=600.0, help="how long a replica's server may take to start")
    return p


def server_facts(rest: Sequence[str]) -> argparse.Namespace:
    """What the ingress reads from SGLang's own arguments (they still go to the replicas)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--model-path", "--model")
    p.add_argument("--tokenizer-path")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tp-size", "--tensor-parallel-size", type=int, default=1)
    return p.parse_known_args(list(rest))[0]


def main(argv: Sequence[str]) -> int:
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        print(
            "\nEvery other argument goes to each replica's server: python -m sloserve.launch_server --backend sglang --help"
        )
        return 0
    ns, rest = parser().parse_known_args(list(argv))
    if ns.dp_size < 1 or ns.max_restarts < 0:
        print("error: --dp-size must be at least 1 and --max-restarts at least 0", file=sys.stderr)
        return 2
    try:
        cfg, _, _ = split_args(rest)
        validate(cfg)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    facts = server_facts(rest)
    gpus = ns.ray_replica_gpus
    if gpus is None:
        gpus = 0.0 if facts.device == "cpu" else float(facts.tp_size)

    try:
        import ray
    except ImportError:
        print("error: --ray-address needs Ray: pip install -e '.[ray]'", file=sys.stderr)
        return 2
    from aiohttp import web

    from sloserve.sglang.ray_ingress import RayIngress
    from sloserve.sglang.ray_pool import RayPoolConfig, RayReplicaPool
    from sloserve.sglang.ray_prompt import PromptCounter

    # Each replica's server logs to a file on its node (its path is logged when it is up); errors
    # come back as exceptions, so the workers' output is not copied here.
    ray.init(address=None if ns.ray_address == "local" else ns.ray_address, log_to_driver=False)
    pool_cfg = RayPoolConfig(ns.dp_size, ns.ray_replica_cpus, gpus, ns.ray_startup_s, ns.max_restarts)
    # A fresh key per launch, known only to this ingress and (through actor arguments) its replicas:
    # a host that can reach a replica's port but was not launched here cannot use the server.
    pool = RayReplicaPool(pool_cfg, rest, secrets.token_urlsafe(24))
    counter = PromptCounter(facts.tokenizer_path or facts.model_path)
    ingress = RayIngress(pool, cfg, counter, ns.api_key)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log.info("SGLang backend on Ray (%d node(s)): %d replica(s), router %s", nodes, ns.dp_size, cfg.router)
    try:
        web.run_app(ingress.app(), host=ns.host, port=ns.port, print=None, access_log=None)
    finally:
        ray.shutdown()
    return 0
