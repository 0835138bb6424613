"""Plain SGLang vs SGLang + sloserve, side by side on the same machine and workload.

Starts both servers (SGLang's CPU engine by default, on a tiny random Llama built in a temp
dir; ``--model-path`` and ``--device cuda`` for a real model on a GPU), then runs the same
closed-loop workload against each, alternating servers round by round so that machine noise
hits both alike. Reports per server the median output throughput and request latency over
rounds and their ratio, and the plugin's own time per scheduler iteration (observe + plan,
from the replica's published ``PlanTimer``). An idle server sleeps (``--sleep-on-idle``).

    python benchmark/sglang_plugin_overhead.py [--rounds 3 --requests 32 --concurrency 8 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tqdm import tqdm

from sloserve.sglang.process import start


def run_round(url: str, requests: int, concurrency: int, input_words: int, output_tokens: int, slo: bool) -> dict:
    def one(i: int) -> float:
        params = {"max_new_tokens": output_tokens, "temperature": 0, "ignore_eos": True}
        if slo:
            params["custom_params"] = {"slo_tpot_ms": 1000.0, "slo_ttft_ms": 60000.0}
        t0 = time.perf_counter()
        resp = httpx.post(
            url + "/generate",
            json={"text": f"round request {i} " + "word " * input_words, "sampling_params": params},
            timeout=600,
        )
        resp.raise_for_status()
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "output_tok_per_s": requests * output_tokens / wall,
        "median_latency_s": statistics.median(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model-path", default=None, help="model directory (default: a tiny random Llama)")
    p.add_argument("--device", default="cpu", help="cpu (SGLang's CPU engine) or cuda")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    p.add_argument("--requests", type=int, default=32, help="requests per round")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--input-words", type=int, default=48, help="prompt length in words")
    p.add_argument("--output-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--policy", default="slos-serve", help="sloserve policy on the plugin server")
    p.add_argument("--startup-s", type=float, default=600, help="server start-up limit")
    p.add_argument("--json", default=None, help="write the figures here")
    ns = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sloserve-plugin-bench-"))
    model = ns.model_path
    if model is None:
        from sloserve.sglang.tiny_model import build

        model = str(build(work / "tiny-llama"))
    common = ["--max-total-tokens", "32768"] if ns.device == "cpu" else []
    servers = {
        "plain": start("plain", model, work, common, plugin=False, device=ns.device),
        "sloserve": start("sloserve", model, work, [*common, "--policy", ns.policy], device=ns.device),
    }
    results: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for handle in servers.values():
            handle.wait_ready(ns.startup_s)
        for name, handle in servers.items():  # warm-up round, not counted
            run_round(handle.url, ns.concurrency, ns.concurrency, ns.input_words, 8, name == "sloserve")
        for _ in tqdm(range(ns.rounds), desc="rounds", file=sys.stderr):
            for name, handle in servers.items():
                results[name].append(
                    run_round(
                        handle.url, ns.requests, ns.concurrency, ns.input_words, ns.output_tokens, name == "sloserve"
                    )
                )
        plan = servers["sloserve"].plan_stats()
    finally:
        for handle in servers.values():
            handle.stop()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    out = {
        "device": ns.device,
        "rounds": ns.rounds,
        "requests": ns.requests,
        "concurrency": ns.concurrency,
        "output_tokens": ns.output_tokens,
        "policy": ns.policy,
        "plain_tok_per_s": med("plain", "output_tok_per_s"),
        "sloserve_tok_per_s": med("sloserve", "output_tok_per_s"),
        "plain_latency_s": med("plain", "median_latency_s"),
        "sloserve_latency_s": med("sloserve", "median_latency_s"),
        "plan_per_iteration": plan.get(0, {}),
        "rounds_detail": results,
    }
    out["throughput_ratio"] = out["sloserve_tok_per_s"] / out["plain_tok_per_s"]
    it = out["plan_per_iteration"]
    print(
        f"plain SGLang      {out['plain_tok_per_s']:8.1f} output tok/s   median latency {out['plain_latency_s']:.2f} s"
    )
    print(
        f"SGLang + sloserve {out['sloserve_tok_per_s']:8.1f} output tok/s   median latency {out['sloserve_latency_s']:.2f} s"
    )
    print(f"ratio (sloserve / plain) {out['throughput_ratio']:.3f}")
    if it.get("iterations"):
        print(
            f"plugin time per scheduler iteration: mean {it['mean_ms']:.3f} ms, p50 {it['p50_ms']:.3f} ms, "
            f"p99 {it['p99_ms']:.3f} ms over {it['iterations']} iterations"
        )
    if ns.json:
        Path(ns.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
