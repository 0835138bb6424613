"""Spare prefill budget by horizon: the curve ``slos-serve`` publishes for summary-only routers.

``ReplicaSummary.spare_prefill_tokens`` is, for a few horizons ``h`` after the summary time
``now``, how many prompt tokens a NEW request due at ``D = now + h`` could bring while every
admitted request keeps its deadlines. It is read straight off the planner's cached constraint
rows of a grid (``MandatoryRows``; same arithmetic as ``admit_cached`` with one candidate):

* its own row: the prefill budget the grid's whole steps leave by ``D`` after the forced
  decodes, minus the admitted prefill due by ``D`` (ties go to the admitted request first,
  as in the DP): ``budget(D) - forced(D) - cum_prefill(D)``;
* every admitted row due after ``D`` loses ``P`` too: ``b_j - P >= 0``.

So ``spare(h) = max(0, min(own row, min over D_j > D of b_j))``, floored to whole tokens. The
newcomer's own decodes are ignored (the DP's fluid bound charges them only at rows at least one
TPOT after its deadline; routers keep ``summary_headroom`` for that and for staleness). Budget
before the plan's start (a step in flight) is zero: no whole step ends by then. A grid whose
mandatory rows are infeasible (the decodes alone overflow a step, some ``b_j < 0``), or where no
new decode stream fits a step, offers nothing: all zeros (the published curve is all zeros when
every grid is so).

On one grid the value is non-decreasing in ``h``: between rows the own row gains a step's
tokens and loses at most one forced decode per stream per step (they fit a step, else the plan
is infeasible), and the minimum over later rows only loses terms (tested on dense horizons). A
running maximum makes the published curve non-decreasing across grids too.

Which grids: at each horizon, the best of those the DP plans a newcomer due then on
(planner/planning.py), from start = end of the step in flight or now, at the step
length in use: the standard grid (step 0 ending by the earliest decode deadline); a step 0 cut
to end at ``D`` when ``D`` falls inside step 0; with ``stretch_steps``, step 0 stretched to
``E = min(start + max_step_s, earliest decode deadline, earliest admitted TTFT deadline)`` for
``D >= E``, or to ``D`` itself for ``D < E`` (when the stretch is worth it). The DP also keeps the
first step the last plan committed to as an option, which the curve ignores, so on a fresh
summary the curve is exact or a lower bound of what ``can_admit`` accepts for a loose-TPOT
newcomer (tested in test/unit/test_planner_spare.py; in every state sampled while writing it,
2880 (state, horizon) pairs, a prompt of spare + 1 tokens was refused: exact).

With no SLO request resident there is no step length; the caller passes an idle step
(``SUMMARY_IDLE_STEP_S``, the one ``prefill_tokens_per_s`` assumes): the idle curve is the
full-batch prefill rate in whole steps of that length (plus the stretched step), what a
newcomer with that TPOT is offered (a tighter TPOT means shorter, less efficient steps, a looser
one longer steps that end later).

Cost: each grid is a forced-decode table and rows over the admitted requests (the standard
grid's are reused by arrivals planned at the same instant); about 0.4 ms per summary with 256
residents. The simulator, which publishes after every step, skips the curve unless its router
reads it (``Router.reads_spare_budget``; ``Scheduler.summary(now_s, publish_spare)``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from sloserve.planner.admission import MandatoryRows
from sloserve.planner.batch import EPS_S, StepGrid
from sloserve.planner.view import TierView

# Horizons (s after the summary time). TTFT SLOs are a few times the zero-load prefill time
# (about 0.1-1.5 s for 100-4000 prompt tokens on the presets), so points are dense below 1 s;
# routers interpolate linearly between points and stay flat after the last one.
SPARE_HORIZONS_S: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)


def spare_step_s(step_len_s: float | None, min_tpot_s: float, fixed_step_s: float | None, idle_step_s: float) -> float:
    """Step length of the grid the curve is read on: one the DP tries for every arrival."""
    if fixed_step_s is not None:
        return fixed_step_s
    options = [s for s in (step_len_s, min_tpot_s) if s is not None and math.isfinite(s)]
    return min(options) if options else idle_step_s


def spare_tokens(rows: MandatoryRows, num_streams: int, deadline_s: np.ndarray) -> np.ndarray:
    """Prompt tokens a newcomer due at each of ``deadline_s`` may bring on ``rows``' grid
    (unclamped floats; all zeros when the admitted plan is infeasible there)."""
    grid = rows.grid
    n = rows.b.size
    if (
        not rows.decodes_fit
        or num_streams + 1 > min(grid.first_tokens, grid.step_tokens)
        or (n and float(rows.prefix_min[-1]) < -1e-6)
    ):
        return np.zeros(deadline_s.shape)
    m = grid.steps_by(deadline_s)
    own = (grid.tokens_by(m) - rows.table.get(m)).astype(np.float64)
    if n:
        p = np.searchsorted(rows.deadline_s, deadline_s, side="right")  # admitted first on ties
        own -= np.concatenate(([0.0], rows.cum_prefill))[p]
        later = np.append(np.minimum.accumulate(rows.b[::-1])[::-1], np.inf)  # min of b[p:]
        own = np.minimum(own, later[p])
    return own


class Stretch(NamedTuple):
    """How the policy stretches step 0: at most to ``max_step_s``, and only when that is at
    least ``min_ratio`` times the step length."""

    max_step_s: float
    min_ratio: float


def stretch_limit_s(start_s: float, view: TierView, max_step_s: float) -> float:
    """Latest end of a stretched step 0: by ``max_step_s``, every decode deadline and every
    admitted prefill deadline (a candidate's own deadline may cut it further)."""
    end = min(start_s + max_step_s, view.earliest_due_s)
    if view.pending_deadline_s.size:
        end = min(end, float(view.pending_deadline_s[0]))
    return end


def stretched_end_s(start_s: float, step_s: float, view: TierView, max_step_s: float, min_ratio: float) -> float | None:
    """End ``E`` of the stretched step 0 the policy offers a newcomer due at or after ``E``
    (planner/planning.py); None when it would not be worth stretching."""
    end = stretch_limit_s(start_s, view, max_step_s)
    return end if end - start_s > step_s * min_ratio else None


def spare_curve(
    view: TierView,
    now_s: float,
    grid_for: Callable[[float, float | None], StepGrid],
    stretch: Stretch | None = None,
    horizons_s: tuple[float, ...] = SPARE_HORIZONS_S,
) -> tuple[tuple[float, int], ...]:
    """The published curve for the tier ``view``.

    ``grid_for(earliest_due_s, stretch_end_s)`` returns the policy's memoized grid from the plan
    start at the step length in use (their rows are cached with the view, so arrivals planned on
    the same grids reuse them); ``stretch`` = (max_step_s, min_ratio) when the policy stretches
    steps (``Stretch``). At each horizon the best of the grids the DP offers a newcomer due then: the
    standard grid; a step 0 shortened to end at its deadline when that falls inside step 0;
    step 0 stretched to ``E`` (due at or after ``E``) or to its own deadline (due before ``E``).
    Then clamped at zero, floored and made non-decreasing.
    """
    deadline = now_s + np.asarray(horizons_s, dtype=np.float64)
    due = view.earliest_due_s
    std = grid_for(due, None)
    n = len(view.load)
    best = spare_tokens(view.mandatory_rows(std), n, deadline)

    def at(i: int, grid: StepGrid) -> None:  # one horizon on a grid only a newcomer due then gets
        best[i] = max(best[i], float(spare_tokens(view.mandatory_rows(grid), n, deadline[i : i + 1])[0]))

    for i, d in enumerate(deadline):
        if std.start_s < d < std.first_end_s - EPS_S:
            at(i, grid_for(min(due, float(d)), None))
    end = (
        stretched_end_s(std.start_s, std.step_len_s, view, stretch.max_step_s, stretch.min_ratio)
        if stretch is not None
        else None
    )
    if end is not None:
        best = np.maximum(best, spare_tokens(view.mandatory_rows(grid_for(due, end)), n, deadline))
        low = std.start_s + std.step_len_s * stretch.min_ratio
        for i, d in enumerate(deadline):
            if low < d < end:
                at(i, grid_for(due, float(d)))
    spare = np.maximum.accumulate(np.floor(np.maximum(best, 0.0) + 1e-9))
    return tuple((float(h), int(x)) for h, x in zip(horizons_s, spare))
