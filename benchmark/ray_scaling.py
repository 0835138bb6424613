"""Scaling across Ray nodes, measured: live capacity per GPU with N replicas on one host against
the same N replicas as Ray actors on a local two-worker-node cluster, and the latency Ray adds.

For each N in ``--replicas`` the script starts two embedded servers, one host
(``--dp-size N``) and Ray (``--dp-size N --ray-address ...`` on a ``ray.cluster_utils.Cluster``
it starts: a head with no CPUs, two worker nodes with ``--node-cpus`` each, torn down at the
end), and runs the project's live capacity search (``sloserve.bench.capacity``, each probe a
fresh ``bench_serving`` run, same seed so the same programs) against both, one probe each in
turn, so that the other processes' load on a shared machine falls on both alike. The Ray
cluster's daemons run during both searches. Programs per probe grow with N
(``--per-replica``), so every N sees runs of the same length; the rate bracket is per replica.

The simulated engine sleeps for the modelled step time and the planner's CPU time is real, so
on a small machine ``--time-scale`` (step times multiplied, SLOs with them via
``--slo-scale``) keeps N replicas' schedulers, the router, the front and the client from
saturating the CPUs: then capacity measures scheduling, not the host's cores.

The routing overhead: ``--overhead-requests`` tiny requests (8 prompt tokens, 1 output token,
streamed), one at a time, alternating between a one-host and a Ray server with two replicas and
a zero-time engine (``--overhead-time-scale 0``): time to first token and to completion.

    python benchmark/ray_scaling.py --replicas 1,2,4,8 --json ray_scaling.json --plot docs/img/ray_scaling.png
    python benchmark/ray_scaling.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack

import aiohttp
import httpx
from tqdm import tqdm

from sloserve.bench.capacity import capacity_search
from sloserve.bench.config import BenchConfig
from sloserve.bench.runner import run_benchmark
from sloserve.bench.servers import embedded_server
from sloserve.bench.turns import run_interleaved
from sloserve.sim.config import SimConfig

SETUPS = ("host", "ray")


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (0, 0 where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def busy_fraction(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    return (b[0] - a[0]) / (b[1] - a[1]) if b[1] > a[1] else None


def own_cpu_s() -> float | None:
    """CPU seconds of this process and every descendant (servers, Ray daemons and actors)."""
    try:
        import psutil  # noqa: PLC0415 (optional: only for the CPU-share column)
    except ImportError:
        return None
    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class CpuMeter:
    """Machine-wide busy fraction and this benchmark's own share of all CPUs over a span."""

    def __init__(self) -> None:
        self.t0, self.c0, self.own0 = time.monotonic(), cpu_times(), own_cpu_s()

    def read(self) -> dict:
        wall = time.monotonic() - self.t0
        own = own_cpu_s()
        share = (own - self.own0) / (wall * (os.cpu_count() or 1)) if own is not None and wall > 0 else None
        return {"cpu_busy": busy_fraction(self.c0, cpu_times()), "own_cpu_share": share, "wall_s": wall}


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def server_args(args, n: int, time_scale: float, ray_address: str | None) -> str:
    a = [
        "--backend embedded",
        f"--dp-size {n}",
        f"--time-scale {time_scale:g}",
        f"--router {args.router}",
        f"--max-seq-len {args.max_seq_len}",
        "--log-level warning --log-interval-s 0",
    ]
    if ray_address:
        a.append(f"--ray-address {ray_address} --ray-replica-cpus {args.replica_cpus:g}")
    return " ".join(a + [args.server_args]).strip()


def placement(url: str) -> dict[str, int]:
    """Replicas per Ray node (node ids shortened), from /health; {} on one host."""
    reps = httpx.get(url + "/health", timeout=30).json().get("replicas", [])
    return dict(Counter(r["node"][:8] for r in reps if r.get("node")))


def open_servers(stack: ExitStack, args, n: int, time_scale: float, address: str) -> dict[str, str]:
    urls = {}
    for setup in SETUPS:
        extra = server_args(args, n, time_scale, address if setup == "ray" else None)
        urls[setup] = stack.enter_context(embedded_server(args.policy, extra, args.model, timeout_s=240))
    return urls


# ---- capacity -------------------------------------------------------------------------------


def bench_config(args, n: int) -> BenchConfig:
    return BenchConfig(
        scenario=args.scenario,
        num_prompts=args.per_replica * n,
        seed=args.seed,
        slo_scale=args.time_scale,  # SLOs stretch with the steps: the same tightness at any scale
        model=args.model,
        warmup_requests=2,
        disable_tqdm=True,
        request_timeout_s=300.0,
    )


def search(args, n: int, setup: str, url: str, bar: tqdm):
    """The live capacity search against one server; each probe waits for its turn."""
    cfg = bench_config(args, n)

    def job(turn):
        def run_at(rate: float) -> dict:
            with turn():
                bar.set_description(f"N={n} {setup} @ {rate:.3g} rps")
                meter = CpuMeter()
                with tqdm(total=cfg.num_prompts, desc=f"  {setup} programs", leave=False, file=sys.stderr) as inner:
                    res = run_benchmark(cfg, url, rate, progress=lambda: inner.update(1))
                res.update(meter.read(), load1=os.getloadavg()[0])
                bar.update(1)
                bar.set_postfix(last=f"{setup} {rate:.3g}->{res['attainment']:.2f}")
                return res

        lo, hi = args.lo * n / args.time_scale, args.hi * n / args.time_scale
        return capacity_search(run_at, lo, hi, args.target, args.iters)

    return job


def point_row(p) -> dict:
    r = p.result
    keep = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "admitted_fraction", "num_errors")
    extra = {k: r.get(k) for k in keep} | {k: r.get(k) for k in ("cpu_busy", "own_cpu_share", "load1", "wall_s")}
    return {"rate_rps": p.rate_rps, "attainment": p.attainment, **extra}


def capacity_rows(args, gpus_per_replica: int, address: str, rows: list[dict], saved) -> None:
    """Appends one row per (N, setup) to ``rows``; calls ``saved()`` after each N."""
    probes = 2 + args.iters
    for n in args.replicas:
        with ExitStack() as stack:
            urls = open_servers(stack, args, n, args.time_scale, address)
            where = placement(urls["ray"])
            with tqdm(total=2 * probes, desc=f"N={n}", file=sys.stderr) as bar:
                t0 = time.monotonic()
                found = run_interleaved({s: search(args, n, s, urls[s], bar) for s in SETUPS})
        for setup in SETUPS:
            res = found[setup]
            busy = [p.result["cpu_busy"] for p in res.points if p.result.get("cpu_busy") is not None]
            own = [p.result["own_cpu_share"] for p in res.points if p.result.get("own_cpu_share") is not None]
            rows.append(
                {
                    "replicas": n,
                    "setup": setup,
                    "capacity_rps": res.capacity_rps,
                    "censored": res.capacity_rps >= args.hi * n / args.time_scale,  # the bracket's top passed
                    "per_replica_rps": res.capacity_rps / n,
                    "per_gpu_rps": res.capacity_rps / (n * gpus_per_replica),
                    "num_gpus": n * gpus_per_replica,
                    "placement": where if setup == "ray" else {"host": n},
                    "mean_cpu_busy": statistics.fmean(busy) if busy else None,
                    "max_cpu_busy": max(busy) if busy else None,
                    "mean_own_cpu_share": statistics.fmean(own) if own else None,
                    "max_own_cpu_share": max(own) if own else None,
                    "points": [point_row(p) for p in sorted(res.points, key=lambda p: p.rate_rps)],
                    "search_wall_s": time.monotonic() - t0,
                }
            )
        host, ray_ = rows[-2], rows[-1]
        ratio = ray_["capacity_rps"] / host["capacity_rps"] if host["capacity_rps"] else None
        tqdm.write(
            f"N={n}: one host {host['per_gpu_rps']:.3f}, Ray {ray_['per_gpu_rps']:.3f} req/s per GPU"
            + (f" (ray/host {ratio:.3f})" if ratio else "")
            + f"; Ray placement {where}",
            file=sys.stderr,
        )
        saved()


# ---- routing overhead -----------------------------------------------------------------------


async def tiny(session: aiohttp.ClientSession, url: str, i: int) -> tuple[float, float]:
    """(TTFT, end-to-end) seconds of one streamed request: 8 prompt tokens, 1 output token."""
    body = {
        "input_ids": [11 + (i % 97)] * 8,
        "stream": True,
        "sampling_params": {"max_new_tokens": 1, "ignore_eos": True},
    }
    t0 = time.perf_counter()
    first = None
    async with session.post(url + "/generate", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.text())[:200]}")
        async for raw in resp.content:
            if first is None and raw.startswith(b"data: {"):
                first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - t0, end - t0


async def overhead_async(urls: dict[str, str], requests: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    out = {s: {"ttft_s": [], "e2e_s": []} for s in urls}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(warmup):
            for url in urls.values():
                await tiny(session, url, i)
        with tqdm(total=requests * len(urls), desc="overhead", file=sys.stderr) as bar:
            for i in range(requests):
                order = list(urls) if i % 2 == 0 else list(urls)[::-1]  # neither always goes first
                for setup in order:
                    ttft, e2e = await tiny(session, urls[setup], i)
                    out[setup]["ttft_s"].append(ttft)
                    out[setup]["e2e_s"].append(e2e)
                    bar.update(1)
    return out


def overhead(args, address: str) -> dict:
    with ExitStack() as stack:
        urls = open_servers(stack, args, args.overhead_replicas, args.overhead_time_scale, address)
        meter = CpuMeter()
        raw = asyncio.run(overhead_async(urls, args.overhead_requests, warmup=20))
        cpu = meter.read()
    summary: dict = {
        "replicas": args.overhead_replicas,
        "time_scale": args.overhead_time_scale,
        "requests_each": args.overhead_requests,
        **cpu,
    }
    for metric in ("ttft_s", "e2e_s"):
        for setup in SETUPS:
            xs = raw[setup][metric]
            summary[f"{setup}_{metric[:-2]}_median_ms"] = 1e3 * statistics.median(xs)
            summary[f"{setup}_{metric[:-2]}_p99_ms"] = 1e3 * quantile(xs, 0.99)
        for q in ("median", "p99"):
            m = metric[:-2]
            summary[f"added_{m}_{q}_ms"] = summary[f"ray_{m}_{q}_ms"] - summary[f"host_{m}_{q}_ms"]
    summary["raw_ms"] = {s: {k: [round(1e3 * x, 3) for x in v] for k, v in raw[s].items()} for s in SETUPS}
    return summary


# ---- output ---------------------------------------------------------------------------------


def loaded_ttft(h: dict, r: dict, target: float) -> dict | None:
    """TTFT of both setups at one rate both probed: the highest where both met the target, else
    the lowest common one (the searches probe the same rates until their outcomes differ)."""
    hp, rp = ({p["rate_rps"]: p for p in x["points"]} for x in (h, r))
    common = sorted(set(hp) & set(rp))
    if not common:
        return None
    ok = [x for x in common if hp[x]["attainment"] >= target and rp[x]["attainment"] >= target]
    rate = ok[-1] if ok else common[0]
    out = {"replicas": h["replicas"], "rate_rps": rate}
    for setup, pts in (("host", hp), ("ray", rp)):
        for k in ("attainment", "median_ttft_ms", "p99_ttft_ms"):
            out[f"{setup}_{k}"] = pts[rate][k]
    return out


def pct(h: dict, r: dict, key: str) -> str:
    return "/".join(f"{x[key]:.0%}" if x[key] is not None else "-" for x in (h, r))


def table(rows: list[dict], ov: dict | None, loaded: list[dict]) -> str:
    out = []
    if rows:
        head = (
            f"{'N':>3} {'one host rps':>13} {'Ray rps':>9} {'host /GPU':>10} {'Ray /GPU':>9} {'Ray/host':>9}"
            f" {'busy h/r':>9} {'ours h/r':>9}  Ray placement"
        )
        out += [head, "-" * len(head)]
        for n in sorted({r["replicas"] for r in rows}):
            h = next(r for r in rows if r["replicas"] == n and r["setup"] == "host")
            r = next(r for r in rows if r["replicas"] == n and r["setup"] == "ray")
            ratio = f"{r['capacity_rps'] / h['capacity_rps']:.3f}" if h["capacity_rps"] else "-"
            if h["censored"] or r["censored"]:
                ratio += "*"
            out.append(
                f"{n:>3} {h['capacity_rps']:>13.3f} {r['capacity_rps']:>9.3f} {h['per_gpu_rps']:>10.3f} "
                f"{r['per_gpu_rps']:>9.3f} {ratio:>9} {pct(h, r, 'mean_cpu_busy'):>9} {pct(h, r, 'mean_own_cpu_share'):>9}  {r['placement']}"
            )
    if any(r["censored"] for r in rows):
        out.append("* the top of the rate bracket met the target: capacity is at least that (raise --hi)")
    if loaded:
        out.append("\nTTFT under load, ms, at a rate both setups probed (the highest where both met the target):")
        out.append(f"{'N':>3} {'rate':>7} {'host p50':>9} {'Ray p50':>9} {'host p99':>9} {'Ray p99':>9}")
        for x in loaded:
            out.append(
                f"{x['replicas']:>3} {x['rate_rps']:>7.3g} {x['host_median_ttft_ms']:>9.1f} {x['ray_median_ttft_ms']:>9.1f} "
                f"{x['host_p99_ttft_ms']:>9.1f} {x['ray_p99_ttft_ms']:>9.1f}"
            )
    if ov:
        out.append(
            f"\nRouting overhead ({ov['requests_each']} tiny streamed requests each, {ov['replicas']} replicas, "
            f"time scale {ov['time_scale']:g}), ms:"
        )
        out.append(f"{'':>8} {'host p50':>9} {'Ray p50':>9} {'added':>7} {'host p99':>9} {'Ray p99':>9} {'added':>7}")
        for m in ("ttft", "e2e"):
            out.append(
                f"{m.upper():>8} {ov[f'host_{m}_median_ms']:>9.2f} {ov[f'ray_{m}_median_ms']:>9.2f} "
                f"{ov[f'added_{m}_median_ms']:>7.2f} {ov[f'host_{m}_p99_ms']:>9.2f} {ov[f'ray_{m}_p99_ms']:>9.2f} "
                f"{ov[f'added_{m}_p99_ms']:>7.2f}"
            )
    return "\n".join(out)


def time_scale_note(args, rows: list[dict]) -> str:
    own = [r["max_own_cpu_share"] for r in rows if r.get("max_own_cpu_share") is not None]
    used = (
        f"; this benchmark's processes used at most {max(own):.0%} of the {os.cpu_count()} CPUs in any probe"
        if own
        else ""
    )
    return (
        f"time scale {args.time_scale:g}: simulated step times and SLOs x{args.time_scale:g} (rates /{args.time_scale:g}), "
        f"so that the planners' real CPU time, the router, the front and the client stay a small part of each step "
        f"on this machine and capacity measures scheduling, not CPU starvation{used}"
    )


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for setup, label in (("host", "one host"), ("ray", "Ray, two worker nodes")):
        pts = sorted((r["replicas"], r["per_gpu_rps"]) for r in rows if r["setup"] == setup)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ns = sorted({r["replicas"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("replicas")
    ax.set_ylabel("capacity per GPU (req/s)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", default="1,2,4,8")
    ap.add_argument("--scenario", default="coder", help="bench_serving scenario (coder: short outputs, little CPU)")
    ap.add_argument("--model", default="opt-13b-tp2-a100", help="batch-time preset (per GPU uses its -tpN)")
    ap.add_argument("--policy", default="slos-serve")
    ap.add_argument("--router", default="slo-proactive")
    ap.add_argument(
        "--time-scale",
        type=float,
        default=2.0,
        help="simulated step times x this, SLOs too (2: eight replicas at capacity leave the 2 shared CPUs half free)",
    )
    ap.add_argument("--per-replica", type=int, default=60, help="programs per replica in each probe")
    ap.add_argument("--lo", type=float, default=1.0, help="capacity bracket, req/s per replica at time scale 1")
    ap.add_argument("--hi", type=float, default=6.0, help="capacity bracket, req/s per replica at time scale 1")
    ap.add_argument("--iters", type=int, default=7, help="bisection steps after the two bracket probes")
    ap.add_argument("--target", type=float, default=0.9, help="attainment that defines capacity")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--node-cpus", type=int, default=4, help="logical CPUs of each simulated worker node")
    ap.add_argument("--replica-cpus", type=float, default=1.0, help="--ray-replica-cpus")
    ap.add_argument(
        "--max-seq-len", type=int, default=16384, help="servers' context: every program fits (coder prompts reach 7.4k)"
    )
    ap.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=0,
        help="nice value of Ray's worker processes, the replicas' actors (Ray's own default is 15)",
    )
    ap.add_argument("--server-args", default="", help="more launch_server flags for every server")
    ap.add_argument("--overhead-requests", type=int, default=300)
    ap.add_argument("--overhead-replicas", type=int, default=2)
    ap.add_argument("--overhead-time-scale", type=float, default=0.0)
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--quick", action="store_true", help="N=1,4, 15 programs per replica, 2 steps, 100 requests")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. the commit measured)")
    ap.add_argument("--plot", help="PNG of capacity per GPU against replicas")
    args = ap.parse_args(argv)
    if args.quick:
        args.replicas, args.per_replica, args.iters, args.overhead_requests = "1,4", 15, 2, 100
    args.replicas = [int(x) for x in args.replicas.split(",")]
    if max(args.replicas) * args.replica_cpus > 2 * args.node_cpus:
        ap.error(f"{max(args.replicas)} replicas x {args.replica_cpus} CPUs do not fit 2 nodes x {args.node_cpus}")
    return args


def pair(rows: list[dict], n: int) -> tuple[dict, dict]:
    return tuple(next(r for r in rows if r["replicas"] == n and r["setup"] == s) for s in SETUPS)  # type: ignore[return-value]


def finish(doc: dict, args) -> None:
    """Fill in the derived figures and write the JSON (also after each N, so a crash keeps them)."""
    rows = doc["rows"]
    doc["loaded_ttft"] = [
        x for n in sorted({r["replicas"] for r in rows}) if (x := loaded_ttft(*pair(rows, n), args.target))
    ]
    doc["ratios"] = {
        str(n): (r["capacity_rps"] / h["capacity_rps"] if h["capacity_rps"] else None)
        for n in sorted({r["replicas"] for r in rows})
        for h, r in [pair(rows, n)]
    }
    doc["time_scale_note"] = time_scale_note(args, rows)
    doc["load_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=float)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from ray.cluster_utils import Cluster  # noqa: PLC0415 (optional: pip install -e .[ray])

    started = datetime.datetime.now().astimezone()
    doc: dict = {
        "command": "python benchmark/ray_scaling.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": os.getloadavg()},
        "args": vars(args),
        "gpus_per_replica": SimConfig(model=args.model).gpus_per_replica,
        "overhead": None,
        "rows": [],
    }
    print(f"starting a local Ray cluster: head (0 CPUs) + 2 worker nodes x {args.node_cpus} CPUs", file=sys.stderr)
    # The raylets start worker processes (the replicas' actors) at this nice value; Ray's default
    # of 15 would let every other process on this shared machine, the one-host servers included,
    # preempt the Ray replicas.
    os.environ["RAY_worker_niceness"] = str(args.ray_worker_niceness)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=args.node_cpus)
        cluster.wait_for_nodes()
        if not args.skip_overhead:
            doc["overhead"] = overhead(args, cluster.address)
            finish(doc, args)
        if not args.skip_capacity:
            capacity_rows(args, doc["gpus_per_replica"], cluster.address, doc["rows"], lambda: finish(doc, args))
    finally:
        cluster.shutdown()
    doc["wall_s"] = (datetime.datetime.now().astimezone() - started).total_seconds()
    finish(doc, args)
    print(doc["time_scale_note"])
    print(table(doc["rows"], doc["overhead"], doc["loaded_ttft"]))
    load0, load1 = doc["machine"]["load_start"][0], doc["load_end"][0]
    print(f"load average start {load0:.2f}, end {load1:.2f} ({os.cpu_count()} CPUs)")
    if args.plot and doc["rows"]:
        plot(doc["rows"], args.plot, f"{args.scenario}, {args.model}, time scale {args.time_scale:g}")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
