"""Independent benchmark jobs run in a process pool or, with one worker, in this process."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from tqdm import tqdm


def run_jobs(fn: Callable, jobs: Sequence, workers: int, desc: str) -> list:
    """``[fn(job) for job in jobs]`` in order, with a progress bar: in a pool of ``workers``
    processes when more than one (``fn`` and the jobs must pickle), else in this process (which is
    also what lets a test load a benchmark script by path and call its ``main``)."""
    progress = {"total": len(jobs), "desc": desc}
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(tqdm(pool.map(fn, jobs), **progress))
    return [fn(job) for job in tqdm(jobs, **progress)]
