"""Smooth goodput: user idle latency and a benefit per request instead of a pass/fail per request.

After Wang et al., "Revisiting Service Level Objectives and System Level Metrics in Large
Language Model Serving" (arXiv 2410.14257; v1 "Revisiting SLO and Goodput Metrics in LLM
Serving"). The paper finds that per-request pass/fail metrics reward two things users do not
want: delaying tokens (e.g. a stall split into small gaps passes a time-between-tokens SLO)
and abandoning a request once it has missed (it is worth nothing either way, so finishing it
only costs capacity). Its remedy, as implemented here:

* **Token deadlines paced by the user**, ``d_i = V x i``: token i is needed when a reader who
  consumes one token per ``V`` seconds reaches it. Tokens delivered ahead of their deadline are
  banked, so a stall the bank covers costs the user nothing.
* **User idle latency** ``l_r``: the time the reader of request r sits waiting for a token it
  is ready to read. A token late by ``x`` makes the reader wait ``x`` and pushes every later
  need back by ``x``, so the waits telescope into the reader's lateness at the end::

      s_1 = max(t_1, d_1),   s_i = max(t_i, s_(i-1) + V_i)   (when token i is read)
      l_r = s_n - d_n = max(0, max_i (t_i - d_i))

  ``l_r`` never decreases when any token is delayed, so delaying tokens never pays.
* **A benefit function** ``f(l_r)``, 1 for a request the user never waited on and decreasing
  with the wait; **smooth goodput** = ``sum_r f(l_r) / T`` (requests/s, ``T`` the run's
  duration as for goodput). A late request that finishes still counts, an abandoned one does
  not, so abandoning is no longer free.

Where the paper leaves parameters to the user, each request's own SLO sets them, so the numbers
sit next to our attainment (docs/slo-api.md):

* ``V_i`` is the TPOT SLO of token i's decode segment (so a reasoning request's thinking
  segment has its own pace), and the first deadline is the TTFT SLO:
  ``d_1 = arrival + TTFT``, ``d_i = d_1 + sum_(k=2..i) TPOT_k``, each stretched by the metric's
  ``tolerance`` (``(1 + tolerance)``, 5% by default, as in attainment.py); with one segment that
  is ``V x i`` counted from ``d_1 - V``. Every request that attains therefore has ``l_r = 0``; at
  tolerance 0 the converse holds too.
* ``f(l) = S / (S + l)`` with ``S = d_n - arrival``, the time the SLO allows the whole response:
  the ratio of the promised reading time to the time the user actually spent. It needs no
  constant of its own, is 1 at ``l = 0``, 1/2 when the user idled as long again as the response
  should have taken, and above 0 for any finished request, so finishing late always beats
  abandoning. A program of several stages scores ``sum S / (sum S + sum l)`` over its stages
  (the user's total wait against the program's total promised time).
* A stage that was rejected, timed out, aborted or never finished (and a program missing a
  stage) scores 0, with no idle latency; so does a stage without a token. The tier does not
  matter: smooth goodput measures what the user saw, so a best-effort request that kept pace
  scores 1 (attainment counts it as a miss).

Hence ``smooth_goodput_rps >= goodput_rps`` always. Of the paper we could read its abstract and
summary (``d_i = V x i``, ``l_r``, a benefit function, smooth goodput), not its body: the
reading model behind ``l_r``, ``f`` and the score of abandoned requests are our choices, and the
paper's own may differ.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sloserve.core.slo import DecodeSegment
from sloserve.metrics.attainment import DEFAULT_TOLERANCE, tpot_array_s
from sloserve.metrics.records import StageRecord


def token_deadlines_paced_s(
    arrival_s: float,
    ttft_slo_s: float,
    segments: Sequence[DecodeSegment],
    num_tokens: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """``d_i`` of tokens 1..num_tokens: the TTFT deadline, then one TPOT SLO per token (stretched)."""
    paces_s = tpot_array_s(segments, num_tokens)  # token 1's entry is 0
    return arrival_s + (ttft_slo_s + np.cumsum(paces_s)) * (1.0 + tolerance)


def schedule_and_idle_s(
    arrival_s: float,
    ttft_slo_s: float,
    segments: Sequence[DecodeSegment],
    token_times_s: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> tuple[float, float]:
    """(``S = d_n - arrival``, user idle latency ``l_r = max(0, max_i(t_i - d_i))``), both in s."""
    times_s = np.asarray(token_times_s, dtype=np.float64)
    if times_s.size == 0:
        raise ValueError("idle latency needs at least one token")
    deadlines_s = token_deadlines_paced_s(arrival_s, ttft_slo_s, segments, times_s.size, tolerance)
    late_s = float(np.max(times_s - deadlines_s))
    return float(deadlines_s[-1]) - arrival_s, late_s if late_s > 1e-12 else 0.0  # attainment's slack


def idle_latency_s(
    arrival_s: float,
    ttft_slo_s: float,
    segments: Sequence[DecodeSegment],
    token_times_s: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """User idle latency ``l_r`` (s): 0 for a request on schedule, never lower for a later token."""
    return schedule_and_idle_s(arrival_s, ttft_slo_s, segments, token_times_s, tolerance)[1]


def benefit(schedule_s: float, idle_s: float) -> float:
    """``f(l) = S / (S + l)``: promised time over the time the user spent (1 when never idle)."""
    if idle_s <= 0.0:
        return 1.0
    return schedule_s / (schedule_s + idle_s)


def stage_idle(rec: StageRecord, tolerance: float = DEFAULT_TOLERANCE) -> tuple[float, float] | None:
    """(schedule ``S`` s, idle latency ``l`` s) of a finished stage with tokens, else None."""
    if not rec.completed or not rec.token_times:
        return None
    return schedule_and_idle_s(rec.arrival_s, rec.ttft_slo_s, rec.segments, rec.token_times, tolerance)


def program_benefit(idles: Sequence[tuple[float, float] | None], num_stages: int) -> float:
    """``sum S / (sum S + sum l)`` over a program's stages; 0 if any stage is missing or unfinished."""
    if len(idles) != num_stages or any(x is None for x in idles):
        return 0.0
    schedule_s = sum(x[0] for x in idles)  # type: ignore[index]
    idle_s = sum(x[1] for x in idles)  # type: ignore[index]
    return benefit(schedule_s, idle_s)


def smooth_totals(
    programs: dict[str, list[StageRecord]], stages_per_program: dict[str, int], tolerance: float = DEFAULT_TOLERANCE
) -> tuple[float, list[float]]:
    """(sum of program benefits, idle latency of every finished stage in s), for the summary."""
    total = 0.0
    idles_s: list[float] = []
    for pid, recs in programs.items():
        idles = [stage_idle(r, tolerance) for r in recs]
        idles_s.extend(x[1] for x in idles if x is not None)
        total += program_benefit(idles, stages_per_program.get(pid, len(recs)))
    return total, idles_s
