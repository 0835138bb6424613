"""Close the loop on a real engine: profile, fit, predict capacity in the simulator, measure it live.

    python benchmark/real_vs_sim.py --json real_vs_sim.json [--plot real_vs_sim.png]

On SGLang's CPU engine with the tiny model (``python -m sloserve.sglang.tiny_model``, built if
missing), with the sloserve plugin (issue 16; method and results in docs/perf_model.md, "Closing
the loop"):

(a) profile: SGLang + plugin (``--policy sglang``) serves the workload at a few rates while the
    plugin logs every step (sglang/step_log.py); the steps, binned by shape, are the profile
    (cached in --work-dir; ``--profile-csv`` reuses any profile, e.g. scripts/profile_sglang.py's);
(b) fit: ``scripts/fit_perf_model.py`` with a held-out split (a refused fit is forced, and says so);
(b') served profile: SGLang + plugin (``--policy slos-serve`` on the fit, calibration on) serves
    the workload at ``--served-profile`` fractions of the noise-free simulated capacity, logging
    its steps (cached; '' skips it): the engine as the plugin serves with it;
(c) predict: the simulator's capacity search (sim/capacity.py), its planner on the fitted model,
    the workload's SLOs scaled to the unloaded server (bench/loop.py) and the engine the served
    profile showed (the closed-loop profile without one): by default (``--sim-noise steps``) the
    engine's own step cost with a per-request term fitted to those steps
    (``SimConfig.engine_model``) with its residuals replayed in order
    (``SimConfig.step_time_trace``), slow runs and stalls included; ``trace`` replays the ratios
    to the fit instead;
(d) measure: SGLang + plugin (``--policy slos-serve --perf-model fit.json``) and bench_serving's
    capacity search (bench/capacity.py) on the same workload, around the prediction; then one
    run at the measured capacity with the planner's calibration off;
(e) write the JSON and one plot of attainment against rate, simulated and live.

``--cpu-hogs N`` (default 1) keeps N busy-loop processes running through (a) to (d): the
acceptance condition of issue 16 is a machine with another CPU-bound process beside the server.
``--policy-opt KEY=VALUE`` reaches the planner in the simulator and in the live server alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from sloserve.bench import loop
from sloserve.bench.capacity import capacity_search as live_capacity_search
from sloserve.bench.config import BenchConfig
from sloserve.bench.plots import plot_attainment_vs_rate
from sloserve.bench.runner import run_benchmark
from sloserve.core.options import parse_kv
from sloserve.perf import get_model
from sloserve.runtime.step_timing import live_policy_options
from sloserve.sglang import process
from sloserve.sim.capacity import capacity_search as sim_capacity_search
from sloserve.sim.config import SimConfig
from sloserve.sim.engine import write_ratio_trace

ROOT = Path(__file__).resolve().parents[1]
KV_TOKENS = 32768  # the CPU mode's --max-total-tokens: the live replica's KV pool
CONTEXT_TOKENS = 4096  # the tiny model's context length
PROFILE_RATE_RPS = 1000.0  # arrivals while profiling: at once, gated by the concurrency limit
WARMUP_STEPS = 16  # the profile's first steps (cold caches, the client's warm-up) left out of the trace


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--plot", help="attainment-vs-rate figure (default: the JSON path with .png)")
    ap.add_argument("--work-dir", default=str(Path.home() / ".cache" / "sloserve" / "real_vs_sim"))
    ap.add_argument("--model-dir", help="tiny model directory (default: WORK_DIR/tiny, built if missing)")
    ap.add_argument("--profile-csv", help="reuse this profile CSV instead of WORK_DIR/profile.csv")
    ap.add_argument("--reprofile", action="store_true", help="profile again even when a cached profile exists")
    ap.add_argument(
        "--profile-concurrency", default="1,4,12,24", help="requests in flight at each profiling level (closed loop)"
    )
    ap.add_argument("--profile-rounds", type=int, default=5, help="requests per profiling level, per request in flight")
    ap.add_argument(
        "--served-profile",
        default="0.4,0.8",
        help="after the fit, the plugin (as measured, calibration on) serves the workload at these fractions of the "
        "noise-free simulated capacity; its steps make the simulated engine ('' skips: the closed-loop "
        "profile's steps do)",
    )
    ap.add_argument("--fit-lines", type=int, default=1)
    ap.add_argument("--time-column", default="time_ms", help="profile column the fit is made on (the median)")
    ap.add_argument("--max-mape-pct", type=float, default=25.0, help="the fitter's refusal threshold")
    ap.add_argument("--ttft-slowdown", type=float, default=8.0, help="TTFT SLO in zero-load TTFTs (--slo-unit)")
    ap.add_argument("--tpot-steps", type=float, default=5.0, help="TPOT SLO in zero-load token gaps (--slo-unit)")
    ap.add_argument(
        "--slo-unit",
        choices=("zero-load", "fit"),
        default="zero-load",
        help="zero-load: the unloaded server's TTFT and token gap as the client sees them (measured by the "
        "profile); fit: the fit's prefill and one-request decode step (the engine alone)",
    )
    ap.add_argument("--duration-s", type=float, default=20.0, help="seconds of arrivals per run")
    ap.add_argument("--target", type=float, default=0.9, help="attainment that defines capacity")
    ap.add_argument("--iters", type=int, default=4, help="live bisection steps after the bracket ends")
    ap.add_argument(
        "--widen",
        type=int,
        default=2,
        help="times the live bracket may move (by its width) when it missed the capacity",
    )
    ap.add_argument("--bracket", default="0.4,1.6", help="live search bracket, as fractions of the prediction")
    ap.add_argument(
        "--sim-noise",
        choices=("steps", "trace", "lognormal", "none"),
        default="steps",
        help="the simulated engine: the profile's steps as a step cost with a per-request term and its "
        "residuals replayed in order (steps), the fit with the profile's ratios to it replayed (trace), a "
        "lognormal matched to those ratios, or the fit alone (none); the planner uses the fit in every case",
    )
    ap.add_argument("--cpu-hogs", type=int, default=1, help="busy-loop processes running beside the server")
    ap.add_argument(
        "--engine-threads",
        type=int,
        default=1,
        help="the engine's torch threads (OMP_NUM_THREADS): with more threads than free cores every "
        "parallel region waits on a thread the other process preempted",
    )
    ap.add_argument(
        "--policy-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="planner option (repeatable), simulator and live alike",
    )
    ap.add_argument("--skip-calibration-off", action="store_true")
    ap.add_argument("--startup-timeout-s", type=float, default=400.0)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args(argv)


def log(msg: str) -> None:
    print(f"[real_vs_sim {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_model(args, work: Path) -> Path:
    model = Path(args.model_dir) if args.model_dir else work / "tiny"
    if not (model / "sloserve-tiny-model.json").exists():
        log(f"building the tiny model in {model}")
        subprocess.run([sys.executable, "-m", "sloserve.sglang.tiny_model", str(model)], check=True)
    return model


def start_server(name: str, model: Path, work: Path, extra: list[str], steps_dir: Path, args):
    timeout_s, threads = args.startup_timeout_s, args.engine_threads
    shutil.rmtree(steps_dir, ignore_errors=True)
    steps_dir.mkdir(parents=True)
    t0 = time.monotonic()
    srv = process.start(
        name,
        model,
        work / "logs",
        extra,
        plugin=True,
        device="cpu",
        env_overrides={"SLOSERVE_SGLANG_STEP_LOG": str(steps_dir), "OMP_NUM_THREADS": str(threads)},
    )
    try:
        srv.wait_ready(timeout_s)
    except Exception:
        srv.stop()
        raise
    log(f"{name} server ready in {time.monotonic() - t0:.0f} s ({srv.url})")
    return srv


def bench_config(url: str, model: str) -> BenchConfig:
    return BenchConfig(
        base_url=(url,), model=model, warmup_requests=2, disable_tqdm=True, request_timeout_s=120.0, output_details=True
    )


def zero_load_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".zero_load.json")


def live_point(cfg: BenchConfig, url: str, workload: loop.LoopWorkload, rate: float, tag: str = "live") -> dict:
    res = run_benchmark(cfg, url, rate, workload=workload.bench_workload)
    n = workload.num_requests(rate)
    point = {
        "rate_rps": rate,
        "attainment": res["attainment"],
        "admitted_fraction": res["admitted_fraction"],
        "admitted_attainment": loop.admitted_attainment(n, res["admitted_fraction"], res["num_admitted_slo_misses"]),
        "num_requests": n,
        "num_admitted": round((res["admitted_fraction"] or 0) * n),
        "num_admitted_slo_misses": res["num_admitted_slo_misses"],
        # of those, the server met its deadlines where its tokens left the scheduler: late on the
        # way out (detokenizer, HTTP, the client's own loop), where the planner cannot see
        "num_admitted_misses_server_met": sum(
            1 for d in res["details"] if d["tier"] == "slo" and not d["attained"] and d["server_slo_met"]
        ),
        "num_errors": res["num_errors"],
        "median_ttft_ms": res["median_ttft_ms"],
        "p99_ttft_ms": res["p99_ttft_ms"],
        "median_tpot_ms": res["median_tpot_ms"],
        "p99_tpot_ms": res["p99_tpot_ms"],
        "loadavg": loadavg(),
    }
    log(
        f"  {tag} {rate:.2f} rps: attainment {point['attainment']:.3f}, admitted {point['admitted_fraction']}, "
        f"admitted attainment {point['admitted_attainment']}"
    )
    return point


def profile(args, work: Path, model: Path) -> tuple[Path, Path | None, dict | None]:
    """(profile CSV, directory of raw steps or None, the steps read from it or None)."""
    if args.profile_csv:
        return Path(args.profile_csv), None, None
    tag = f"-hogs{args.cpu_hogs}-threads{args.engine_threads}"
    csv_path, steps_dir = work / f"profile{tag}.csv", work / f"profile{tag}-steps"
    zero_path = zero_load_path(csv_path)
    if csv_path.exists() and steps_dir.is_dir() and zero_path.exists() and not args.reprofile:
        log(f"reusing the cached profile's steps {steps_dir}")  # the rows are binned anew below
    else:
        serve_profile(args, work, model, steps_dir, zero_path)
    steps = loop.read_steps(steps_dir)
    rows = loop.profile_rows(steps)
    if not rows:
        raise SystemExit("profiling logged no steps")
    loop.write_profile(rows, csv_path)
    log(f"profile: {len(rows)} rows from {len(steps['time_ms'])} steps -> {csv_path}")
    return csv_path, steps_dir, steps


def serve_profile(args, work: Path, model: Path, steps_dir: Path, zero_path: Path) -> None:
    """Serve closed loops at each profile concurrency with SGLang's own scheduler, logging its
    steps; the one-request level also measures the zero-load TTFT line and token gap."""
    srv = start_server("profile", model, work, ["--policy", "sglang"], steps_dir, args)
    try:
        for c in (int(x) for x in args.profile_concurrency.split(",")):
            # closed loop: c requests in flight, the shapes of a steady load without a growing queue
            shape = loop.LoopWorkload(duration_s=0.0, min_requests=args.profile_rounds * c + 4, seed=args.seed + c)
            cfg = replace(bench_config(srv.url, "opt-13b-tp2-a100"), max_concurrency=c)  # SLOs play no part here
            res = run_benchmark(cfg, srv.url, PROFILE_RATE_RPS, workload=shape.bench_workload)
            log(f"  profiled at {c} requests in flight")
            if c == 1:
                ok = [d for d in res["details"] if d["status"] == 200 and d["ttft_ms"] is not None and d["tpot_ms"]]
                zero = loop.ZeroLoad.from_requests(
                    *zip(*((d["prompt_tokens"], d["ttft_ms"], d["tpot_ms"]) for d in ok))
                )
                zero_path.write_text(json.dumps(zero.to_dict(), indent=2) + "\n")
                log(f"  zero load, as the client sees it: {zero}")
    finally:
        srv.stop()


def fit(args, csv_path: Path, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "fit_perf_model.py"), str(csv_path), "--lines", str(args.fit_lines)]
    cmd += ["--holdout-frac", "0.25", "--seed", "0", "--max-mape-pct", str(args.max_mape_pct), "--out", str(out)]
    cmd += ["--time-column", args.time_column] if args.time_column != "time_ms" else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    refused = None
    if proc.returncode == 2 and "--force" in proc.stderr:
        refused = proc.stderr.strip().splitlines()[-1]
        proc = subprocess.run([*cmd, "--force"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fit failed: {proc.stderr.strip()}")
    text = proc.stdout
    log("fit:\n" + text.strip())

    def scores(tag: str) -> dict:
        m = re.search(r"R\^2 (\S+)\s+MAPE (\S+)%.*\[" + tag, text)
        return {"r2": float(m.group(1)), "mape_pct": float(m.group(2))} if m else {}

    doc = json.loads(out.read_text())
    return {
        "json": str(out),
        "lines": doc["lines"],
        "fitted_rows": scores("fitted"),
        "held_out_rows": scores("held-out"),
        "refused": refused,
    }


def policy_options(args) -> dict:
    """The planner options of the live server (the SGLang plugin's live defaults included), for
    the simulator's prediction too."""
    return live_policy_options("slos-serve", parse_kv(args.policy_opt, "--policy-opt"))


def sim_config(args, fit_path: Path) -> SimConfig:
    """The simulated replica: the live server's planner options, KV pool and context, on the fit."""
    return SimConfig(
        model=str(fit_path),
        policy="slos-serve",
        policy_options=policy_options(args),
        kv_tokens=KV_TOKENS,
        max_seq_len=CONTEXT_TOKENS,
        seed=args.seed,
        best_effort_expiry=True,  # the live plugin's default (docs/sglang.md, "Overload")
    )


def server_policy_args(args, fit_path: Path, calibrate: bool) -> list[str]:
    """The live server's planner flags (``--policy-opt`` as given; calibration off when asked)."""
    extra = ["--policy", "slos-serve", "--perf-model", str(fit_path)]
    for opt in args.policy_opt:
        extra += ["--policy-opt", opt]
    return extra + ([] if calibrate else ["--policy-opt", "calibrate=false"])


def served_profile(args, work: Path, model: Path, csv_path: Path, fit_path: Path, workload) -> dict | None:
    """(b') The engine as the plugin serves with it: SGLang + plugin (slos-serve on the fit, the
    planner options of the measurement, calibration on) serves the workload open loop at
    ``--served-profile`` fractions of the noise-free simulated capacity, logging its steps. Those
    steps, not the closed-loop profile's, make the simulated engine: live steps pay the plugin's
    own CPU time (the calibration's among it) and run the shapes the planner makes (a chunk beside a few decodes),
    which SGLang's scheduler at fixed concurrency does not; a one- or two-request decode step
    took 5.4 ms with calibration on against 4.1-4.7 ms off in the same run (docs/perf_model.md,
    "Planning at the p80"). Cached beside the profile, keyed by the fit, the fractions, the
    planner options and the workload."""
    fractions = [float(x) for x in args.served_profile.split(",") if x.strip()]
    if not fractions:
        return None
    steps_dir = work / f"{csv_path.stem}-served-steps"
    marker = steps_dir / "served.json"
    key = {
        "fit_sha256": hashlib.sha256(fit_path.read_bytes()).hexdigest(),
        "fractions": fractions,
        "policy_options": policy_options(args),
        "workload": workload.describe(1.0),
        "calibrate": True,
    }
    meta = json.loads(marker.read_text()) if marker.exists() and not args.reprofile else {}
    if meta.get("key") == key:
        log(f"reusing the served profile's steps {steps_dir}")
    else:
        perf = get_model(str(fit_path))
        ideal = sim_capacity_search(workload.programs, sim_config(args, fit_path), args.target, 2.0, perf=perf)
        rates = [max(f * ideal.capacity_rps, 0.1) for f in fractions]
        log(f"served profile at {[round(r, 2) for r in rates]} rps ({fractions} x {ideal.capacity_rps:g} rps)")
        srv = start_server("served-profile", model, work, server_policy_args(args, fit_path, True), steps_dir, args)
        try:
            cfg = bench_config(srv.url, str(fit_path))
            points = [live_point(cfg, srv.url, workload, r, "served profile") for r in rates]
        finally:
            srv.stop()
        meta = {"key": key, "noise_free_capacity_rps": ideal.capacity_rps, "rates_rps": rates, "points": points}
        marker.write_text(json.dumps(meta, indent=2, default=float) + "\n")
    steps = loop.read_steps(steps_dir)
    if steps["time_ms"].size <= WARMUP_STEPS + 8:
        log(f"the served profile logged {steps['time_ms'].size} steps: the closed-loop profile's are used")
        return None
    return {**meta, "steps_dir": str(steps_dir), "num_steps": int(steps["time_ms"].size), "steps": steps}


def predict(args, fit_path: Path, workload: loop.LoopWorkload, noise: dict, trace: Path | None, engine: dict | None):
    perf = get_model(str(fit_path))
    cfg = sim_config(args, fit_path)
    engines = {
        "none": cfg,
        "lognormal": replace(cfg, step_time_noise=noise["step_time_noise"], step_time_bias=noise["step_time_bias"]),
    }
    if trace is not None:
        engines["trace"] = replace(cfg, step_time_trace=str(trace))
    if engine is not None:  # the engine's own step cost, its residuals replayed; the planner keeps the fit
        engines["steps"] = replace(cfg, engine_model=engine["json"], step_time_trace=engine["trace"])
    chosen = args.sim_noise if args.sim_noise in engines else "none"
    capacities, res = {}, None
    for name, c in engines.items():
        r = sim_capacity_search(workload.programs, c, args.target, 2.0, perf=perf)
        capacities[name] = r.capacity_rps
        res = r if name == chosen else res
    log(f"simulator capacity {res.capacity_rps:.2f} rps (engine: {chosen}); every engine: {capacities}")
    return {
        "capacity_rps": res.capacity_rps,
        "engine": chosen,
        "by_engine": capacities,
        "search": res.to_dict(),
    }, engines[chosen]


def sim_ablation(args, workload: loop.LoopWorkload, sim_cfg: SimConfig, perf, given_capacity_rps: float) -> dict:
    """The chosen simulated engine under the planner options given and under the same options
    with each calibration and best-effort guard switched back: capacity, and admitted attainment
    at 0.5, 1, 1.5 and 2 x that capacity (the planner's promise holds past capacity too). The
    options as given are the prediction's own run: its capacity is not searched again."""
    base = dict(sim_cfg.policy_options)
    variants = {
        "as given": base,
        "best_effort_step_frac=0": {**base, "best_effort_step_frac": 0.0},
        "calibrate_form=scale": {**base, "calibrate_form": "scale"},
        "calibrate=false": {**base, "calibrate": False},
    }
    out = {}
    for name, opts in variants.items():
        cfg = replace(sim_cfg, policy_options=opts)
        if name == "as given":
            cap = given_capacity_rps
        else:
            cap = sim_capacity_search(workload.programs, cfg, args.target, 2.0, perf=perf).capacity_rps
        points = [loop.simulate(workload, f * cap, cfg, perf) for f in (0.5, 1.0, 1.5, 2.0)] if cap else []
        out[name] = {"capacity_rps": cap, "points": points, "admitted_attainment": pooled_admitted(points)}
        log(
            f"  simulated, {name}: capacity {cap:.2f} rps, admitted attainment to 2x {out[name]['admitted_attainment']}"
        )
    return out


def measure(args, model: Path, work: Path, fit_path: Path, workload, lo: float, hi: float, calibrate: bool):
    extra = server_policy_args(args, fit_path, calibrate)
    name = "live" if calibrate else "live-calibration-off"
    steps_dir = work / f"{name}-steps"
    srv = start_server(name, model, work, extra, steps_dir, args)
    cfg = bench_config(srv.url, str(fit_path))
    try:
        if calibrate:
            res = live_capacity_search(
                lambda r: live_point(cfg, srv.url, workload, r), lo, hi, args.target, args.iters, widen=args.widen
            )
            points = [p.result for p in res.points]
            capacity = res.capacity_rps
        else:
            points, capacity = [live_point(cfg, srv.url, workload, lo)], None
    finally:
        srv.stop()
    return capacity, points, loop.step_error(loop.read_steps(steps_dir))


def pooled_admitted(points: list[dict]) -> float | None:
    """Admitted requests that met their SLO, over every live run (the planner's promise holds at
    any rate, not only at capacity)."""
    admitted = sum(p["num_admitted"] for p in points)
    return 1.0 - sum(p["num_admitted_slo_misses"] for p in points) / admitted if admitted else None


def write_plot(path: str, sim_points: list[dict], live_points: list[dict], off_points: list[dict], out: dict) -> None:
    series = {
        "simulated": [(p["rate_rps"], p["attainment"]) for p in sim_points],
        "live SGLang + sloserve": [(p["rate_rps"], p["attainment"]) for p in live_points],
        "live, admitted requests": [(p["rate_rps"], p["admitted_attainment"] or 0.0) for p in live_points],
    }
    if off_points:
        series["live, calibration off"] = [(p["rate_rps"], p["attainment"]) for p in off_points]
        series["live, calibration off, admitted"] = [
            (p["rate_rps"], p["admitted_attainment"] or 0.0) for p in off_points
        ]
    capacity = {"simulated": out["predicted_capacity_rps"], "live SGLang + sloserve": out["measured_capacity_rps"]}
    plot_attainment_vs_rate(
        series, path, capacity, out["target_attainment"], "CPU SGLang, tiny model: simulated vs live"
    )


def start_cpu_hogs(count: int) -> list[subprocess.Popen]:
    """Busy-loop processes, the 'other CPU-bound process' beside the server."""
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def main(argv=None) -> int:
    args = parse_args(argv)
    policy_options(args)  # a bad --policy-opt fails here, before minutes of profiling
    hogs = start_cpu_hogs(args.cpu_hogs)
    try:
        return run(args, argv)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def run(args, argv) -> int:
    started, load_start = time.monotonic(), loadavg()
    work = Path(args.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    model = ensure_model(args, work)
    csv_path, profile_steps, steps = profile(args, work, model)
    fitted = fit(args, csv_path, work / csv_path.with_suffix(".fit.json").name)
    fit_path = Path(fitted["json"])
    perf = get_model(str(fit_path))
    base = loop.LoopWorkload(duration_s=args.duration_s, ttft_slowdown=args.ttft_slowdown, seed=args.seed)
    zero = None
    if args.slo_unit == "zero-load" and zero_load_path(csv_path).exists():
        zero = loop.ZeroLoad(**json.loads(zero_load_path(csv_path).read_text()))
        workload = zero.apply(base, args.tpot_steps)
    else:  # the fit's forward pass (--slo-unit fit, or a --profile-csv without the measurement)
        workload = replace(base, tpot_ms=loop.scaled_tpot_ms(perf, base, args.tpot_steps))
    served = served_profile(args, work, model, csv_path, fit_path, workload)
    if served is not None:
        steps = served["steps"]  # the simulated engine is the one the plugin serves with
    ratios = loop.step_ratios(steps, perf) if steps is not None else None
    noise = loop.noise_model(ratios) if ratios is not None else loop.noise_model(loop.np.zeros(0))
    trace = None
    if ratios is not None and ratios.size > WARMUP_STEPS:
        trace = work / "profile-ratios.trace"
        write_ratio_trace(ratios[WARMUP_STEPS:], str(trace), f"profile {csv_path.name} against {fit_path.name}")
    engine = None
    if steps is not None and ratios.size > WARMUP_STEPS + 8:
        cost, cost_ratios, quality = loop.engine_cost(steps, WARMUP_STEPS, args.seed)
        cost_path, cost_trace = work / "profile-engine.json", work / "profile-engine-ratios.trace"
        cost.save(cost_path)
        write_ratio_trace(cost_ratios, str(cost_trace), f"profile {csv_path.name} against {cost_path.name}")
        engine = {"json": str(cost_path), "trace": str(cost_trace), "cost": cost.__dict__, **quality}
        log(
            f"engine step cost (per request, per request in an extend batch, token, KV token; for the simulated engine): {engine}"
        )
    log(f"workload: {workload.describe(1.0)}; simulator noise {noise}")
    prediction, sim_cfg = predict(args, fit_path, workload, noise, trace, engine)
    ablation = sim_ablation(args, workload, sim_cfg, perf, prediction["capacity_rps"])
    predicted = prediction["capacity_rps"]
    lo_frac, hi_frac = (float(x) for x in args.bracket.split(","))
    capacity, live_points, live_error = measure(
        args, model, work, fit_path, workload, max(predicted * lo_frac, 0.1), max(predicted * hi_frac, 0.2), True
    )
    log(f"measured capacity {capacity:.2f} rps (predicted {predicted:.2f})")
    off_points, off_error = [], None
    if not args.skip_calibration_off:
        off_rate = capacity or live_points[0]["rate_rps"]
        _, off_points, off_error = measure(args, model, work, fit_path, workload, off_rate, off_rate, False)
    rates = sorted({p["rate_rps"] for p in live_points} | {predicted * f for f in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)})
    sim_points = [loop.simulate(workload, r, sim_cfg, perf) for r in rates if r > 0]
    at_capacity = next((p for p in live_points if p["rate_rps"] == capacity), None)
    elapsed = time.monotonic() - started
    out = {
        "command": "python benchmark/real_vs_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "elapsed_s": round(elapsed, 1),
        "target_attainment": args.target,
        "predicted_capacity_rps": predicted,
        "measured_capacity_rps": capacity,
        "prediction_error_pct": (predicted / capacity - 1) * 100 if capacity else None,
        "admitted_attainment": pooled_admitted(live_points),
        "admitted_fraction": at_capacity["admitted_fraction"] if at_capacity else None,
        "admitted_attainment_at_capacity": at_capacity["admitted_attainment"] if at_capacity else None,
        "calibration_off": {
            "points": off_points,
            "admitted_attainment": pooled_admitted(off_points) if off_points else None,
            "step_error": off_error,
        },
        "step_error": live_error,
        "workload": {**workload.__dict__, "tpot_steps": args.tpot_steps, "description": workload.describe(1.0)},
        "slo_unit": args.slo_unit if zero is not None or args.slo_unit == "fit" else "fit (no zero-load measurement)",
        "zero_load": zero.to_dict() if zero is not None else None,
        "profile": {"csv": str(csv_path), "steps_dir": str(profile_steps) if profile_steps else None},
        "served_profile": {k: v for k, v in served.items() if k != "steps"} if served is not None else None,
        "fit": fitted,
        "sim_noise": noise,
        "sim_engine": prediction["engine"],
        "engine_step_cost": engine,
        "predicted_capacity_by_engine_rps": prediction["by_engine"],
        "cpu_hogs": args.cpu_hogs,
        "policy_options": policy_options(args),
        "simulated": {"search": prediction["search"], "points": sim_points, "planner_options": ablation},
        "live": {"points": live_points},
    }
    out["targets"] = {
        "under_20_min": elapsed < 1200,
        "prediction_within_15pct": out["prediction_error_pct"] is not None and abs(out["prediction_error_pct"]) <= 15,
        "admitted_attainment_ge_99pct": (out["admitted_attainment"] or 0) >= 0.99,
    }
    Path(args.json).write_text(json.dumps(out, indent=2, default=float) + "\n")
    plot = args.plot or str(Path(args.json).with_suffix(".png"))
    write_plot(plot, sim_points, live_points, off_points, out)
    log(f"wrote {args.json} and {plot}; targets {out['targets']}; {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
