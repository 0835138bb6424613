"""Overhead of the embedded runtime: HTTP front -> ZMQ router -> scheduler process -> back.

Starts ``python -m sloserve.launch_server --time-scale 0`` (a zero-time engine: every step
takes no simulated GPU time), so whatever time a request takes is the runtime's own cost.
Measures, with streaming clients on loopback (aiohttp, in this process, sharing the CPU):
requests/s, streamed tokens/s, and the added latency per token (client-observed gap between
tokens, and TTFT) at concurrency 1 and at higher concurrency.

    python benchmark/runtime_overhead.py [--requests 400 --concurrency 64 --tokens 64 --json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import aiohttp

from sloserve.runtime.transport import free_port


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "sloserve.launch_server",
        "--port",
        str(port),
        "--time-scale",
        "0",
        "--log-level",
        "warning",
        *extra,
    ]  # a later --time-scale in extra wins
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def one_stream(session, url: str, tokens: int, i: int) -> dict:
    body = {
        "input_ids": [1 + (i % 200)] * 16,
        "stream": True,
        "sampling_params": {"max_new_tokens": tokens, "ignore_eos": True},
    }
    t0 = time.perf_counter()
    times: list[float] = []
    seen = 0
    async with session.post(url + "/generate", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            if raw.startswith(b"data: {"):
                n = raw.count(b",", raw.index(b'"output_ids":['), raw.index(b"]", raw.index(b'"output_ids":['))) + 1
                now = time.perf_counter()
                times.extend([now] * (n - seen))
                seen = n
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {
        "ttft_s": times[0] - t0,
        "tokens": len(times),
        "e2e_s": times[-1] - t0,
        "gap_s": statistics.fmean(gaps) if gaps else 0.0,
        "chunks_gap_s": (times[-1] - times[0]) / max(len(times) - 1, 1),
    }


async def run_load(url: str, requests: int, concurrency: int, tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def guarded(i):
            async with sem:
                return await one_stream(session, url, tokens, i)

        await asyncio.gather(*(guarded(i) for i in range(min(concurrency, 8))))  # warm-up
        t0 = time.perf_counter()
        results = await asyncio.gather(*(guarded(i) for i in range(requests)))
        wall = time.perf_counter() - t0
    total_tokens = sum(r["tokens"] for r in results)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "tokens_per_request": tokens,
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "tokens_per_s": total_tokens / wall,
        "mean_ttft_ms": 1e3 * statistics.fmean(r["ttft_s"] for r in results),
        "p99_ttft_ms": 1e3 * sorted(r["ttft_s"] for r in results)[int(0.99 * (len(results) - 1))],
        "mean_time_per_token_ms": 1e3 * statistics.fmean(r["chunks_gap_s"] for r in results),
    }


async def paced(url: str, model: str, streams: int, tokens: int) -> dict:
    """Real-time simulated engine, one stream at a time: client-observed time per token minus
    the batch-time model's step time is what the runtime adds to every token."""
    from sloserve.perf import get_model

    perf = get_model(model)
    async with aiohttp.ClientSession() as session:
        await one_stream(session, url, 8, 0)  # warm-up
        runs = [await one_stream(session, url, tokens, i) for i in range(streams)]
    step_s = statistics.fmean(perf.batch_time_s(1, 0, 16 + j) for j in range(tokens))
    prefill_s = perf.zero_load_prefill_s(16)
    tpot = statistics.fmean(r["chunks_gap_s"] for r in runs)
    ttft = statistics.fmean(r["ttft_s"] for r in runs)
    return {
        "model": model,
        "streams": streams,
        "tokens": tokens,
        "observed_tpot_ms": 1e3 * tpot,
        "model_step_ms": 1e3 * step_s,
        "added_per_token_ms": 1e3 * (tpot - step_s),
        "observed_ttft_ms": 1e3 * ttft,
        "model_prefill_ms": 1e3 * prefill_s,
        "added_ttft_ms": 1e3 * (ttft - prefill_s),
    }


async def replay(url: str, programs) -> list[dict]:
    """Send single-stage programs at their arrival times; collect each response's SLO report."""

    async def one(session, prog, t0):
        await asyncio.sleep(max(t0 + prog.arrival_s - time.perf_counter(), 0))
        st = prog.stages[0]
        custom = {
            "slo_class": prog.slo_class,
            "slo_ttft_slowdown": st.ttft.slowdown,
            "slo_tpot_ms": st.segments[-1].tpot_ms,
        }
        body = {
            "input_ids": [7] * st.prompt_tokens,
            "rid": prog.program_id,
            "sampling_params": {"max_new_tokens": st.output_tokens, "ignore_eos": True, "custom_params": custom},
        }
        async with session.post(url + "/generate", json=body) as resp:
            out = await resp.json()
            if resp.status != 200:
                return {"status": resp.status, "slo_met": False, "tier": "rejected"}
            meta = out["meta_info"]
            return {"status": 200, "slo_met": bool(meta["slo_met"]), "tier": meta["tier"], "ttft_ms": meta["ttft_ms"]}

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        t0 = time.perf_counter() + 0.5
        return await asyncio.gather(*(one(session, p, t0) for p in programs))


def compare_with_sim(args) -> dict:
    """Live attainment of a trace on the real-time server vs the simulator's prediction."""
    from sloserve.sim import SimConfig, simulate
    from sloserve.workloads import WorkloadConfig, build_workload

    # programs that fit the model's context (OPT-13B: 2048 tokens; a longer one is a 400 live)
    wc = WorkloadConfig(
        scenario=args.scenario, rate_rps=args.rate, num_requests=args.num_requests, seed=args.seed, max_seq_len=2038
    )
    work = build_workload(wc)
    # the server's default --best-effort-expiry, mirrored (docs/runtime.md)
    cfg = SimConfig(model=args.model, policy=args.policy, seed=args.seed, max_seq_len=2038, best_effort_expiry=True)
    sim = simulate(work.programs, cfg).summary
    port = free_port()
    proc = start_server(port, ["--policy", args.policy, "--model", args.model, "--time-scale", "1"])
    try:
        live = asyncio.run(replay(f"http://127.0.0.1:{port}", work.programs))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    n = len(live)
    out = {
        "workload": work.description,
        "policy": args.policy,
        "requests": n,
        "live_attainment": sum(r["slo_met"] for r in live) / n,
        "sim_attainment": sim["attainment"],
        "live_admitted_fraction": sum(r["tier"] == "slo" for r in live) / n,
        "sim_admitted_fraction": sim["admitted_fraction"],
        "live_rejected": sum(r["status"] != 200 for r in live),
        "sim_rejected": sim.get("num_rejected"),
    }
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--policy", default="fcfs")
    ap.add_argument("--dp-size", type=int, default=1)
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument(
        "--paced-streams", type=int, default=5, help="streams for the real-time added-latency run (0: skip)"
    )
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--compare-sim", action="store_true", help="instead: live attainment vs the simulator on a trace")
    ap.add_argument("--scenario", default="chatbot")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.compare_sim:
        result = compare_with_sim(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return
    port = free_port()
    proc = start_server(port, ["--policy", args.policy, "--dp-size", str(args.dp_size)])
    rows = []
    try:
        for c in args.concurrency:
            n = max(args.requests // (8 if c == 1 else 1), 20)
            rows.append(asyncio.run(run_load(f"http://127.0.0.1:{port}", n, c, args.tokens)))
            r = rows[-1]
            print(
                f"concurrency {c:4d}: {r['requests_per_s']:8.1f} req/s  {r['tokens_per_s']:9.0f} tok/s  "
                f"TTFT mean {r['mean_ttft_ms']:6.2f} ms p99 {r['p99_ttft_ms']:6.2f} ms  "
                f"per-token {r['mean_time_per_token_ms']:6.3f} ms",
                flush=True,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    meta = {"policy": args.policy, "dp_size": args.dp_size, "cpus": os.cpu_count(), "rows": rows}
    if args.paced_streams:
        port = free_port()
        proc = start_server(port, ["--policy", args.policy, "--model", args.model, "--time-scale", "1"])
        try:
            meta["paced"] = p = asyncio.run(paced(f"http://127.0.0.1:{port}", args.model, args.paced_streams, 128))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        print(
            f"real-time engine, 1 stream: per token {p['observed_tpot_ms']:.3f} ms observed vs "
            f"{p['model_step_ms']:.3f} ms model step -> +{p['added_per_token_ms']:.3f} ms/token; TTFT "
            f"{p['observed_ttft_ms']:.2f} ms vs {p['model_prefill_ms']:.2f} ms prefill -> +{p['added_ttft_ms']:.2f} ms"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
