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
from sloserve.planner.deadlines import Deadlines
from sloserve.planner.batch import DecodeLoad, ForcedTable, StepGrid


@dataclass(frozen=True)
class TierView:
    load: DecodeLoad  # every admitted request's future decode tokens
    pending_deadline_s: np.ndarray  # admitted requests still prefilling, sorted by TTFT deadline
    pending_prefill: np.ndarray  # their prefill tokens still to compute
    earliest_due_s: float  # earliest next-token deadline of a decoding admitted request
    min_tpot_s: float  # tightest TPOT in the SLO tier (inf when empty)
    num_requests: int
    tables: dict = field(default_factory=dict, compare=False)  # StepGrid -> ForcedTable cache

    def table(self, grid: StepGrid) -> ForcedTable:
        got = self.tables.get(grid)
        if got is None:
            got = self.tables[grid] = ForcedTable(grid, self.load)
        return got


def build_view(slo: Iterable[Request], inflight: Mapping[str, int],
               planned_output: Callable[[Request], int], dl: Deadlines = Deadlines()) -> TierView:
    rows: list[tuple[float, float, int]] = []
    pending: list[tuple[float, int]] = []
    earliest = float("inf")
    min_tpot = float("inf")
    n = 0
    for r in slo:
        n += 1
        tpot = dl.min_tpot_s(r)
        min_tpot = min(min_tpot, tpot)
        computed = r.num_computed_tokens + inflight.get(r.request_id, 0)
        out = r.num_output_tokens
        total_out = planned_output(r)
        if computed < r.num_tokens and (out == 0 or r.num_tokens - computed > 1):
            # still prefilling: mandatory prefill by the TTFT deadline, then decodes from D + tpot
            pending.append((dl.ttft_s(r), r.num_tokens - computed))
            rows.append((dl.decode_origin_s(r) + tpot, tpot, max(total_out - 1, 0)))
            continue
        if r.request_id in inflight:
            out += 1  # the step in flight produces this token
        left = total_out - out
        if left <= 0:
            continue  # finishes with the step in flight
        due = dl.token_s(r, out + 1)
        earliest = min(earliest, due)
        rows.append((due, tpot, left))
    pending.sort()
    pd = np.array([p[0] for p in pending], dtype=np.float64)
    pp = np.array([p[1] for p in pending], dtype=np.float64)
    return TierView(DecodeLoad.of(rows), pd, pp, earliest, min_tpot, n)


def extend_view(view: TierView, r: Request, planned_output: int, dl: Deadlines = Deadlines()) -> TierView:
    """The view after admitting ``r`` (not started): one more pending prefill and decode stream."""
    deadline, tpot = dl.ttft_s(r), dl.min_tpot_s(r)
    at = int(np.searchsorted(view.pending_deadline_s, deadline, side="right"))
    due, cap = dl.decode_origin_s(r) + tpot, max(planned_output - 1, 0)
    load = DecodeLoad(np.append(view.load.first_due_s, due), np.append(view.load.tpot_s, tpot),
                      np.append(view.load.cap_tokens, cap))
    tables = {g: t.with_row(due, tpot, cap, load) for g, t in view.tables.items()}
    pd, pp = view.pending_deadline_s, view.pending_prefill
    return TierView(load, np.concatenate((pd[:at], [deadline], pd[at:])),
                    np.concatenate((pp[:at], [float(r.num_tokens - r.num_computed_tokens)], pp[at:])),
                    view.earliest_due_s, min(view.min_tpot_s, tpot), view.num_requests + 1, tables)
