"""Bounded soak of the embedded server: N minutes at K x capacity with SLO-tagged traffic.

Starts ``python -m sloserve.launch_server`` with default limits (real-time engine, ``--policy
slos-serve`` unless told otherwise), replays a built-in workload (Poisson arrivals at
``--load x --capacity-rps``, each request tagged with its SLO class, TTFT slowdown and TPOT),
and samples once a second: the RSS of every server process, the requests in flight, and the
latency of ``GET /health``. Reports admitted-request attainment (SLO met among requests the
policy admitted to the SLO tier), 429s, other errors, and whether memory stayed flat.

    python benchmark/soak.py --minutes 3 --load 3 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sloserve.runtime.transport import free_port

# python -m sloserve.sim capacity --scenario chatbot --policy slos-serve --num-requests 300 (90% attainment)
CHATBOT_CAPACITY_RPS = 1.41


def start_server(port: int, extra: list[str], log_path: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sloserve.launch_server", "--port", str(port), "--log-level", "warning", *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited during start-up (log: {log_path})") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def group_rss_kb(pgid: int, roles: dict[int, str] | None = None) -> dict[str, int]:
    """RSS (kB) of every live process in the server's process group, by role."""
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) != pgid:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration, ValueError):
            continue
        role = (roles or {}).get(int(entry)) or (
            "front" if int(entry) == pgid else "resource_tracker" if "resource_tracker" in cmd else f"other-{entry}"
        )
        out[role] = rss
    return out


def sample_loop(url: str, pgid: int, period_s: float, path: str, stop) -> None:
    """In its own process (not sharing the client's GIL): /health latency, in-flight, RSS."""
    info = json.loads(urllib.request.urlopen(url + "/server_info", timeout=10).read())
    roles = {
        info["router_pid"]: "router",
        **{st["pid"]: f"scheduler-{st['replica']}" for st in info["internal_states"]},
    }
    t0 = time.monotonic()
    with open(path, "w") as out:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                code = urllib.request.urlopen(url + "/health", timeout=10).status
            except OSError as exc:
                code = getattr(exc, "code", -1)
            health_ms = (time.perf_counter() - t) * 1e3
            try:
                in_flight = json.loads(urllib.request.urlopen(url + "/server_info", timeout=10).read())[
                    "requests_in_flight"
                ]
            except OSError:
                in_flight = -1
            out.write(
                json.dumps(
                    {
                        "t_s": time.monotonic() - t0,
                        "health_ms": health_ms,
                        "health_status": code,
                        "in_flight": in_flight,
                        "rss_kb": group_rss_kb(pgid, roles),
                    }
                )
                + "\n"
            )
            out.flush()
            stop.wait(period_s)


async def replay(url: str, programs, timeout_s: float) -> list[dict]:
    import aiohttp

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
        try:
            async with session.post(url + "/generate", json=body) as resp:
                out = await resp.json(content_type=None)
                if resp.status != 200:
                    return {"status": resp.status, "tier": "refused"}
                meta = out["meta_info"]
                return {
                    "status": 200,
                    "tier": meta["tier"],
                    "slo_met": meta["slo_met"],
                    "finish": meta["finish_reason"]["type"],
                }
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return {"status": -1, "tier": "error", "error": type(exc).__name__}

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:
        t0 = time.perf_counter() + 0.5
        return await asyncio.gather(*(one(session, p, t0) for p in programs))


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(int(q * len(s)), len(s) - 1)]


def summarize(results: list[dict], samples: list[dict], warmup_frac: float, args) -> dict:
    admitted = [r for r in results if r["status"] == 200 and r["tier"] == "slo"]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    health = [s["health_ms"] for s in samples]
    steady = [s for s in samples if s["t_s"] >= warmup_frac * samples[-1]["t_s"]] if samples else []
    rss: dict[str, dict] = {}
    for key in sorted({k for s in steady for k in s["rss_kb"]}):
        series = [s["rss_kb"][key] for s in steady if key in s["rss_kb"]]
        rss[key] = {
            "after_warmup_mb": series[0] / 1024,
            "end_mb": series[-1] / 1024,
            "max_mb": max(series) / 1024,
            "growth_pct": 100.0 * (series[-1] - series[0]) / series[0],
        }
    return {
        "minutes": args.minutes,
        "load": args.load,
        "capacity_rps": args.capacity_rps,
        "rate_rps": args.load * args.capacity_rps,
        "policy": args.policy,
        "requests": len(results),
        "statuses": statuses,
        "n_429": statuses.get("429", 0),
        "admitted": len(admitted),
        "admitted_attainment": (sum(bool(r["slo_met"]) for r in admitted) / len(admitted) if admitted else math.nan),
        "best_effort_served": sum(r["status"] == 200 and r["tier"] == "best_effort" for r in results),
        "in_flight_max": max((s["in_flight"] for s in samples), default=-1),
        "in_flight_last_steady": [s["in_flight"] for s in steady][-5:],
        "health_ms_p50": pct(health, 0.5),
        "health_ms_p99": pct(health, 0.99),
        "health_ms_max": max(health, default=0),
        "health_non_200": sum(s["health_status"] != 200 for s in samples),
        "rss": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the arrival stream (default: 3)")
    ap.add_argument("--load", type=float, default=3.0, help="offered load as a multiple of --capacity-rps (default: 3)")
    ap.add_argument(
        "--capacity-rps",
        type=float,
        default=CHATBOT_CAPACITY_RPS,
        help="requests/s one replica serves at 90%% attainment (default: %(default)s, the simulator's "
        "capacity of the built-in chatbot scenario with slos-serve; see docs/runtime.md)",
    )
    ap.add_argument("--scenario", default="chatbot")
    ap.add_argument("--policy", default="slos-serve")
    ap.add_argument("--model", default="opt-13b-tp2-a100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seq-len", type=int, default=97648, help="server context length (default: the KV pool)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag (repeatable)")
    ap.add_argument("--warmup-frac", type=float, default=0.2, help="fraction of the run before memory is compared")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from sloserve.workloads import WorkloadConfig, build_workload

    rate = args.load * args.capacity_rps
    n = max(int(rate * args.minutes * 60), 1)
    work = build_workload(WorkloadConfig(scenario=args.scenario, rate_rps=rate, num_requests=n, seed=args.seed))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = f"/tmp/soak-server-{port}.log"
    # --max-seq-len: as in the simulator, a request may use the whole KV pool (the capacity's premise)
    proc = start_server(
        port,
        ["--policy", args.policy, "--model", args.model, "--max-seq-len", str(args.max_seq_len), *args.server_arg],
        log_path,
    )
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    samples_path = f"/tmp/soak-samples-{port}.jsonl"
    sampler = ctx.Process(target=sample_loop, args=(url, proc.pid, 1.0, samples_path, stop), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        results = asyncio.run(replay(url, work.programs, timeout_s=args.minutes * 60 + 300))
        time.sleep(2.0)  # a couple of samples after the last answer
    finally:
        stop.set()
        sampler.join(15)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    samples = [json.loads(line) for line in Path(samples_path).read_text().splitlines() if line.strip()]
    out = summarize(results, samples, args.warmup_frac, args)
    out.update(
        {
            "workload": work.description,
            "wall_s": time.monotonic() - t0,
            "server_exit_code": code,
            "server_log": log_path,
        }
    )
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
