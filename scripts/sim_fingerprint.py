"""Fingerprint the simulator's decisions, to show a refactor changed none of them.

Runs the six scenarios x {default, speculation, 4 replicas, realistic mode} with slos-serve,
plus each baseline once, and prints one SHA-256 per run over everything the run reports except
its wall time, and over its Chrome trace (every step's plan). Save the output before a change,
run again after, and compare::

    python scripts/sim_fingerprint.py --out before.json
    ... change ...
    python scripts/sim_fingerprint.py --compare before.json     # exit 1 on any difference

Each run is small (``--num-requests``, default 150), so the whole set takes a minute or two.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

SCENARIOS = ("chatbot", "coder", "summarizer", "reasoning", "tool-calling", "mixed")
ORACLE = "--oracle-output-len"  # the paper's setting (output lengths are hidden by default)
VARIANTS = {
    "default": ["--policy", "slos-serve", ORACLE, "--rate", "3"],
    "spec": ["--policy", "slos-serve+spec", ORACLE, "--spec", "adaptive", "--alpha", "0.7", "--rate", "3"],
    "4-replicas": ["--policy", "slos-serve", ORACLE, "--replicas", "4", "--router", "slo-proactive", "--rate", "12"],
    "realistic": ["--policy", "slos-serve", "--realistic", "--rate", "3"],
}
BASELINES = ("vllm", "vllm-v0", "sarathi", "sglang", "edf", "fcfs", "distserve")
UNSTABLE_KEYS = ("sim_wall_s",)  # wall time of the simulation itself


def runs(num_requests: int) -> dict[str, list[str]]:
    common = ["--num-requests", str(num_requests), "--seed", "7"]
    out = {f"{s}/{v}": ["--scenario", s, *args, *common] for s in SCENARIOS for v, args in VARIANTS.items()}
    for policy in BASELINES:
        out[f"chatbot/{policy}"] = ["--scenario", "chatbot", "--policy", policy, ORACLE, "--rate", "3", *common]
    return out


def fingerprint(args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        summary, trace = Path(tmp) / "run.json", Path(tmp) / "trace.json"
        cmd = [sys.executable, "-m", "sloserve.sim", "run", *args, "--json", str(summary), "--chrome-trace", str(trace)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return f"error: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
        report = {k: v for k, v in json.loads(summary.read_text()).items() if k not in UNSTABLE_KEYS}
        digest = hashlib.sha256(json.dumps(report, sort_keys=True).encode())
        digest.update(trace.read_bytes())
        return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-requests", type=int, default=150)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each is one process)")
    ap.add_argument("--out", help="write the fingerprints here (JSON)")
    ap.add_argument("--compare", help="fingerprints from an earlier run: exit 1 if any differs")
    opts = ap.parse_args(argv)
    todo = runs(opts.num_requests)
    with ThreadPoolExecutor(opts.jobs) as pool:
        results = dict(zip(todo, tqdm(pool.map(fingerprint, todo.values()), total=len(todo), desc="simulations")))
    if opts.out:
        Path(opts.out).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    errors = [name for name, fp in results.items() if fp.startswith("error")]
    for name in errors:
        print(f"{name}: {results[name]}")
    if not opts.compare:
        print(f"{len(results)} runs fingerprinted, {len(errors)} failed")
        return 1 if errors else 0
    before = json.loads(Path(opts.compare).read_text())
    changed = sorted(n for n in set(before) | set(results) if before.get(n) != results.get(n))
    for name in changed:
        print(f"differs: {name}")
    print(f"{len(results)} runs, {len(changed)} differ from {opts.compare}")
    return 1 if changed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
