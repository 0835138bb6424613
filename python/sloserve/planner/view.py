"""The planner's view of the SLO tier: decode streams and pending prefills after the step in flight.

A step that is running when a request arrives will finish first, so plans start at its end and
see the state it leaves: a decode item has produced a token, a final prefill chunk has produced
the first token. Deadlines of a request whose first token is not out yet use t0 = its TTFT
deadline (the earliest possible origin), which over-counts forced decodes: conservative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from sloserve.core.request import Request
from sloserve.planner.admission import MandatoryRows
from sloserve.planner.batch import DecodeLoad, ForcedTable, StepGrid
from sloserve.planner.deadlines import Deadlines


@dataclass(frozen=True)
class Admitted:
    """What ``extend_view`` added: a decode stream and a pending prefill."""

    first_due_s: float
    tpot_s: float
    cap_tokens: int
    deadline_s: float
    prefill_tokens: float


@dataclass(eq=False)
class TierView:
    load: DecodeLoad  # every admitted request's future decode tokens
    pending_deadline_s: np.ndarray  # admitted requests still prefilling, sorted by TTFT deadline
    pending_prefill: np.ndarray  # their prefill tokens still to compute
    earliest_due_s: float  # earliest next-token deadline of a decoding admitted request
    min_tpot_s: float  # tightest TPOT in the SLO tier (inf when empty)
    num_requests: int
    # an upper bound on the KV one step's attention reads: every stream's final context (prompt
    # plus planned output), as if every admitted request ran in every step of the plan
    kv_read_bound: int = 0
    tables: dict = field(default_factory=dict)  # StepGrid -> ForcedTable cache
    rows: dict = field(default_factory=dict)  # StepGrid -> MandatoryRows cache
    # the view this one extends and what it added: a grid's caches are derived from the parent's
    # when it has them (cheaper than anew; one-off grids are not carried along)
    parent: "TierView | None" = None
    added: Admitted | None = None

    def table(self, grid: StepGrid) -> ForcedTable:
        got = self.tables.get(grid)
        if got is None:
            up = self.parent.tables.get(grid) if self.parent is not None else None
            if up is not None:
                a = self.added
                got = up.with_row(a.first_due_s, a.tpot_s, a.cap_tokens, self.load)
            else:
                got = ForcedTable(grid, self.load)
            self.tables[grid] = got
        return got

    def mandatory_rows(self, grid: StepGrid) -> MandatoryRows:
        got = self.rows.get(grid)
        if got is None:
            up = self.parent.rows.get(grid) if self.parent is not None else None
            if up is not None:
                a = self.added
                got = up.with_admitted(self.table(grid), a.deadline_s, a.prefill_tokens, len(self.load))
            else:
                got = MandatoryRows.of(grid, self.load, self.table(grid), self.pending_deadline_s, self.pending_prefill)
            self.rows[grid] = got
        return got


def build_view(
    slo: Iterable[Request],
    inflight: Mapping[str, int],
    planned_output: Callable[[Request], int],
    dl: Deadlines = Deadlines(),
) -> TierView:
    rows: list[tuple[float, float, int]] = []
    pending: list[tuple[float, int]] = []
    earliest = float("inf")
    min_tpot = float("inf")
    n = 0
    kv_bound = 0
    get_inflight, min_tpot_of, token_s = inflight.get, dl.min_tpot_s, dl.token_s  # hot loop: hundreds of requests
    for r in slo:
        n += 1
        tpot = min_tpot_of(r)
        if tpot < min_tpot:
            min_tpot = tpot
        step_tokens = get_inflight(r.request_id)
        num_tokens = r.prompt_tokens + r.num_output_tokens
        computed = r.num_computed_tokens + (step_tokens or 0)
        out = r.num_output_tokens
        total_out = planned_output(r)
        if computed < num_tokens and (out == 0 or num_tokens - computed > 1):
            # still prefilling: mandatory prefill by the TTFT deadline, then decodes from D + tpot
            pending.append((dl.ttft_s(r), num_tokens - computed))
            rows.append((dl.decode_origin_s(r) + tpot, tpot, max(total_out - 1, 0)))
            kv_bound += r.prompt_tokens + max(total_out, out)
            continue
        if step_tokens is not None:
            out += 1  # the step in flight produces this token
        left = total_out - out
        if left <= 0:
            continue  # finishes with the step in flight
        due = token_s(r, out + 1)
        if due < earliest:
            earliest = due
        rows.append((due, tpot, left))
        kv_bound += r.prompt_tokens + total_out
    pending.sort()
    pd = np.array([p[0] for p in pending], dtype=np.float64)
    pp = np.array([p[1] for p in pending], dtype=np.float64)
    return TierView(DecodeLoad.of(rows), pd, pp, earliest, min_tpot, n, kv_bound)


def extend_view(view: TierView, r: Request, planned_output: int, dl: Deadlines = Deadlines()) -> TierView:
    """The view after admitting ``r`` (not started): one more pending prefill and decode stream."""
    deadline, tpot = dl.ttft_s(r), dl.min_tpot_s(r)
    at = int(np.searchsorted(view.pending_deadline_s, deadline, side="right"))
    due, cap = dl.decode_origin_s(r) + tpot, max(planned_output - 1, 0)
    old = view.load
    load = DecodeLoad(
        np.concatenate((old.first_due_s, [due])),
        np.concatenate((old.tpot_s, [tpot])),
        np.concatenate((old.cap_tokens, np.array([cap], dtype=np.int64))),
    )
    prefill = float(r.num_tokens - r.num_computed_tokens)
    pd, pp = view.pending_deadline_s, view.pending_prefill
    view.parent = None  # only a view's own parent is ever derived from: free the older ones
    return TierView(
        load,
        np.concatenate((pd[:at], [deadline], pd[at:])),
        np.concatenate((pp[:at], [prefill], pp[at:])),
        view.earliest_due_s,
        min(view.min_tpot_s, tpot),
        view.num_requests + 1,
        view.kv_read_bound + r.prompt_tokens + max(planned_output, r.num_output_tokens),
        parent=view,
        added=Admitted(due, tpot, cap, deadline, prefill),
    )
