"""DP admission (SLOs-Serve Algorithm 1, corrected): which new requests join the SLO tier.

Items (already-admitted requests still prefilling, which are mandatory, and candidates) are
processed in prefill-deadline order. Each admitted item needs its remaining prefill tokens done
by its deadline D_j (EDF: cumulative demand <= cumulative budget at every deadline), and each
admitted candidate c then decodes: by the horizon T_j of deadline D_j it is forced into at most
``(T_j - D_c) / tpot_c`` steps (its token i is due at D_c + (i-1) tpot_c). That fluid bound is
linear in T, so the decode load of all admitted candidates is ``sum_tier n_tier * T / tpot_tier
- S`` with ``S = sum_c D_c / tpot_c``. A DP state after item j is therefore

    key   = admitted candidate count per TPOT tier (n_1, ..., n_K)
    value = admitted weight,  mem = KV blocks reserved,  g = S - prefill tokens demanded

and the constraint at D_j reads ``budget(D_j) - sum_k n_k T_j / tpot_k + g >= 0`` (the left
side is the leftover budget). Within one key a state dominates another when it has at least the
value, at most the memory and at least the leftover (equivalently at least g): a SMALLER
leftover is never better. See docs/planner.md for the recurrence, complexity and an example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sloserve.planner.batch import DecodeLoad, ForcedTable, Forecast, StepGrid, forecast


@dataclass(frozen=True)
class Item:
    key: str
    deadline_s: float
    prefill_tokens: int
    mem_blocks: int = 0
    tpot_s: float = 1.0  # tightest TPOT of the item's decode segments
    weight: float = 1.0
    mandatory: bool = False
    decode_tokens: int = 1 << 30  # decode tokens after the first (only for checks; DP ignores)
    decode_origin_s: float | None = None  # t0 of its decode deadlines (default: deadline_s)

    @property
    def origin_s(self) -> float:
        return self.deadline_s if self.decode_origin_s is None else self.decode_origin_s


@dataclass(frozen=True)
class Admission:
    """DP result: the chosen candidates, whether the mandatory set is feasible, slack."""

    selected: tuple[str, ...]
    value: float
    feasible: bool
    min_leftover_tokens: float  # smallest leftover budget over the deadlines of admitted items
    states_explored: int = 0


@dataclass
class _State:
    value: float
    mem: int
    g: float  # S - candidate demand: the leftover budget up to terms shared by a key's states
    chosen: tuple[int, ...]
    min_left: float
    s: float = 0.0  # S = sum over admitted candidates of D_c / tpot_c
    last_left: float = math.inf  # leftover at the latest rows (ranks states for the beam)


def _prune(states: list[_State]) -> list[_State]:
    """Keep the Pareto front: drop a state if another has >= value, <= mem and >= g."""
    states.sort(key=lambda s: (-s.value, s.mem, -s.g))
    front: list[_State] = []
    for s in states:
        if any(f.value >= s.value and f.mem <= s.mem and f.g >= s.g - 1e-9 for f in front):
            continue
        front.append(s)
    return front


def _beam(layer: dict[tuple[int, ...], list[_State]], max_states: int) -> dict[tuple[int, ...], list[_State]]:
    """Bound the DP: keep the ``max_states`` best states (value, then leftover, then memory).
    Exact while the Pareto fronts are smaller than that (the usual case: few candidates)."""
    total = sum(len(v) for v in layer.values())
    if total <= max_states:
        return layer
    ranked = sorted(
        ((k, s) for k, v in layer.items() for s in v), key=lambda ks: (-ks[1].value, -ks[1].last_left, ks[1].mem)
    )[:max_states]
    out: dict[tuple[int, ...], list[_State]] = {}
    for k, s in ranked:
        out.setdefault(k, []).append(s)
    return out


class _Rows:
    """Constraint rows between two candidates, checked in one numpy reduction per state.

    Row j needs ``b_j - P - floor(c T_j - S) >= 0`` with ``b_j`` = budget minus mandatory demand
    up to j, ``T_j`` its horizon, ``c = sum_k n_k / tpot_k`` of the key, ``S`` and ``P`` the
    state's sum of D_c / tpot_c and candidate demand (forced decodes are whole tokens, and a
    sum of floors is at most the floor of the sum, so flooring the total stays conservative).
    """

    def __init__(self, b: np.ndarray, horizon: np.ndarray) -> None:
        self.b, self.t = b, horizon

    def leftover(self, c: float, s: float, g: float) -> float:
        """Smallest leftover over the rows for a state (c, S, g = S - P)."""
        if self.b.size == 0:
            return math.inf
        if c == 0.0:
            return float(self.b.min()) + g - s
        load = np.floor(np.maximum(c * self.t - s, 0.0) + 1e-9)
        return float((self.b - load).min()) + g - s


def admit(
    items: list[Item],
    grid: StepGrid,
    base: DecodeLoad,
    free_blocks: int,
    max_new_decoders: int,
    max_front: int = 64,
    max_states: int = 256,
) -> Admission:
    """Maximize admitted weight subject to EDF prefill feasibility, KV and decode capacity."""
    mand = sorted((it for it in items if it.mandatory), key=lambda it: it.deadline_s)
    dl = np.array([it.deadline_s for it in mand], dtype=np.float64)
    pre = np.array([it.prefill_tokens for it in mand], dtype=np.float64)
    cands = [it for it in items if not it.mandatory]
    return admit_arrays(dl, pre, cands, grid, base, free_blocks, max_new_decoders, max_front, max_states)


def admit_arrays(
    mand_deadline_s: np.ndarray,
    mand_prefill: np.ndarray,
    cands: list[Item],
    grid: StepGrid,
    base: DecodeLoad,
    free_blocks: int,
    max_new_decoders: int,
    max_front: int = 64,
    max_states: int = 256,
    table: ForcedTable | None = None,
    fast: bool = True,
) -> Admission:
    """``admit`` with the mandatory items as arrays sorted by deadline (the policy caches them).

    Only candidates are DP layers; the (possibly hundreds of) mandatory rows between two
    candidates are checked with one numpy reduction per state.
    """
    if len(cands) <= 1 and fast:  # the usual event-driven case: the cached-rows arithmetic
        rows = MandatoryRows.of(
            grid, base, table if table is not None else ForcedTable(grid, base), mand_deadline_s, mand_prefill
        )
        return admit_cached(rows, cands, free_blocks, max_new_decoders)
    cands = sorted(cands, key=lambda it: it.deadline_s)
    cdl = np.array([c.deadline_s for c in cands], dtype=np.float64)
    ins = np.searchsorted(mand_deadline_s, cdl, side="right")  # mandatory first on ties
    if len(cands) == 1:  # np.insert costs more than the rest of a one-candidate plan
        i = int(ins[0])
        dl = np.concatenate((mand_deadline_s[:i], cdl, mand_deadline_s[i:]))
        b_pre = np.concatenate((mand_prefill[:i], [0.0], mand_prefill[i:]))
    else:
        dl = np.insert(mand_deadline_s, ins, cdl)
        b_pre = np.insert(mand_prefill, ins, 0.0)
    cpos = ins + np.arange(len(cands))
    fc: Forecast = forecast(grid, base, dl, table)
    b = fc.budget_tokens - np.cumsum(b_pre)
    # no step ends by D_j (budget 0), or only a stretched step 0 in which candidates still
    # prefill and cannot decode: any horizon >= D_j keeps the fluid bound valid
    horizon = np.where((fc.steps <= 0) | ~np.isfinite(fc.horizon_s), dl, fc.horizon_s)
    first_rows = b[: cpos[0] if cpos.size else b.size]
    if not fc.feasible or (first_rows < -1e-6).any():
        return Admission((), 0.0, False, -math.inf, 0)
    tiers = sorted({c.tpot_s for c in cands})
    tier_of = {tp: k for k, tp in enumerate(tiers)}
    inv_tpot = [1.0 / tp for tp in tiers]
    min0 = float(first_rows.min()) if first_rows.size else math.inf
    layer: dict[tuple[int, ...], list[_State]] = {tuple([0] * len(tiers)): [_State(0.0, 0, 0.0, (), min0)]}
    explored = 1
    for n_c, p in enumerate(cpos):
        it = cands[n_c]
        nxt_p = cpos[n_c + 1] if n_c + 1 < cpos.size else b.size
        after = _Rows(b[p + 1 : nxt_p], horizon[p + 1 : nxt_p])  # mandatory rows up to the next candidate
        own = _Rows(b[p : p + 1], horizon[p : p + 1])
        nxt: dict[tuple[int, ...], list[_State]] = {}
        for key, states in layer.items():
            c = sum(n * v for n, v in zip(key, inv_tpot))
            k2 = None
            if sum(key) < max_new_decoders:
                tier = tier_of[it.tpot_s]
                k2 = key[:tier] + (key[tier] + 1,) + key[tier + 1 :]
                c2 = c + inv_tpot[tier]
            for st in states:
                explored += 1
                left = after.leftover(c, st.s, st.g)
                if left >= -1e-6:  # skip the candidate
                    nxt.setdefault(key, []).append(
                        _State(st.value, st.mem, st.g, st.chosen, min(st.min_left, left), st.s, left)
                    )
                if k2 is None or st.mem + it.mem_blocks > free_blocks:
                    continue
                s2 = st.s + it.origin_s / it.tpot_s
                g2 = st.g - it.prefill_tokens + it.origin_s / it.tpot_s
                left2 = min(own.leftover(c2, s2, g2), after.leftover(c2, s2, g2))
                if left2 >= -1e-6:
                    nxt.setdefault(k2, []).append(
                        _State(
                            st.value + it.weight,
                            st.mem + it.mem_blocks,
                            g2,
                            st.chosen + (n_c,),
                            min(st.min_left, left2),
                            s2,
                            left2,
                        )
                    )
        layer = _beam({k: _prune(v)[:max_front] for k, v in nxt.items()}, max_states)
        if not layer:
            return Admission((), 0.0, False, -math.inf, explored)
    best = max((s for v in layer.values() for s in v), key=lambda s: (s.value, s.min_left, -s.mem))
    return Admission(
        tuple(cands[i].key for i in best.chosen),
        best.value,
        True,
        math.floor(best.min_left + 1e-9) if math.isfinite(best.min_left) else best.min_left,
        explored,
    )


@dataclass(frozen=True)
class MandatoryRows:
    """The admitted prefills' constraint rows on one grid, built once per (tier view, grid), so
    that a one-candidate plan (every arrival and every ``can_admit``) only adds its own terms.
    Same arithmetic as ``admit_arrays`` with one candidate (inserting a zero into the prefill
    cumsum leaves the sums unchanged), hence the same decisions."""

    grid: StepGrid
    table: ForcedTable
    deadline_s: np.ndarray
    steps: np.ndarray  # whole steps ending by each deadline
    b: np.ndarray  # budget minus cumulative mandatory prefill at each row
    horizon_s: np.ndarray
    cum_prefill: np.ndarray
    prefix_min: np.ndarray  # running minimum of b
    decodes_fit: bool  # the forced decodes alone fit a step

    @staticmethod
    def of(
        grid: StepGrid, load: DecodeLoad, table: ForcedTable, deadline_s: np.ndarray, prefill: np.ndarray
    ) -> "MandatoryRows":
        fc = forecast(grid, load, deadline_s, table)
        cum = np.cumsum(prefill)
        b = fc.budget_tokens - cum
        horizon = np.where((fc.steps <= 0) | ~np.isfinite(fc.horizon_s), fc.deadlines_s, fc.horizon_s)
        return MandatoryRows(
            grid, table, fc.deadlines_s, fc.steps, b, horizon, cum, np.minimum.accumulate(b), fc.feasible
        )

    def with_admitted(
        self, table: ForcedTable, deadline_s: float, prefill_tokens: float, num_streams: int
    ) -> "MandatoryRows":
        """The rows once one more request is admitted: ``table`` is derived from this one's table
        by its decode stream (``table.added_at``), and it brings a row of ``prefill_tokens`` due by
        ``deadline_s``. Equal to ``of`` on the extended view (whole tokens: exact in floats)."""
        grid = self.grid
        p = int(np.searchsorted(self.deadline_s, deadline_s, side="right"))
        m = grid.steps_by_one(deadline_s)
        h = grid.forced_horizon_one_s(m)
        if m <= 0 or not math.isfinite(h):
            h = deadline_s
        before = float(self.cum_prefill[p - 1]) if p else 0.0
        b = self.b - table.added_at(self.steps)
        b[p:] -= prefill_tokens
        b_row = (grid.tokens_by_one(m) - table.get_one(m)) - (before + prefill_tokens)
        b = np.concatenate((b[:p], [b_row], b[p:]))
        cum = np.concatenate((self.cum_prefill[:p], [before + prefill_tokens], self.cum_prefill[p:] + prefill_tokens))
        return MandatoryRows(
            grid,
            table,
            np.concatenate((self.deadline_s[:p], [deadline_s], self.deadline_s[p:])),
            np.concatenate((self.steps[:p], [m], self.steps[p:])),
            b,
            np.concatenate((self.horizon_s[:p], [h], self.horizon_s[p:])),
            cum,
            np.minimum.accumulate(b),
            num_streams <= min(grid.first_tokens, grid.step_tokens),
        )


def admit_cached(rows: MandatoryRows, cands: list[Item], free_blocks: int, max_new_decoders: int) -> Admission:
    """``admit_arrays`` for no or one candidate on cached mandatory rows."""
    if len(cands) > 1:
        raise ValueError("admit_cached takes at most one candidate")
    n = rows.b.size
    if not cands:
        low = float(rows.prefix_min[-1]) if n else math.inf
        if not rows.decodes_fit or low < -1e-6:
            return Admission((), 0.0, False, -math.inf, 0)
        return Admission((), 0.0, True, math.floor(low + 1e-9) if math.isfinite(low) else low, 1)
    it = cands[0]
    if not rows.decodes_fit:
        return Admission((), 0.0, False, -math.inf, 0)
    p = int(np.searchsorted(rows.deadline_s, it.deadline_s, side="right"))  # mandatory first on ties
    before = float(rows.prefix_min[p - 1]) if p else math.inf
    if before < -1e-6:
        return Admission((), 0.0, False, -math.inf, 0)
    skip_left = float(rows.prefix_min[-1]) if n else math.inf
    if skip_left < -1e-6:
        return Admission((), 0.0, False, -math.inf, 1)
    if it.mem_blocks > free_blocks or max_new_decoders < 1:
        return Admission((), 0.0, True, skip_left, 2)
    grid = rows.grid
    m = grid.steps_by_one(it.deadline_s)
    h = grid.forced_horizon_one_s(m)
    if m <= 0 or not math.isfinite(h):
        h = it.deadline_s
    b_c = (grid.tokens_by_one(m) - rows.table.get_one(m)) - (float(rows.cum_prefill[p - 1]) if p else 0.0)
    take_left = min(b_c - it.prefill_tokens - math.floor(max((h - it.origin_s) / it.tpot_s, 0.0) + 1e-9), before)
    if p < n:
        load = rows.horizon_s[p:] - it.origin_s  # in place: the fluid decode load, then the leftover
        load /= it.tpot_s
        np.maximum(load, 0.0, out=load)
        load += 1e-9
        np.floor(load, out=load)
        np.subtract(rows.b[p:] - it.prefill_tokens, load, out=load)
        take_left = min(take_left, float(load.min()))
    if take_left < -1e-6:
        return Admission((), 0.0, True, skip_left, 2)
    return Admission((it.key,), it.weight, True, math.floor(take_left + 1e-9), 2)


def check(items: list[Item], grid: StepGrid, base: DecodeLoad) -> tuple[bool, float]:
    """Exact check of one admitted set (all ``items`` admitted): feasible, min leftover tokens.

    Uses the exact forced-decode counts (capped by tokens left) rather than the DP's fluid bound,
    so it admits at least what the DP admits; tests compare the two.
    """
    items = sorted(items, key=lambda it: it.deadline_s)
    rows = [(it.origin_s + it.tpot_s, it.tpot_s, it.decode_tokens) for it in items if not it.mandatory]
    load = DecodeLoad.of(rows)
    merged = DecodeLoad(
        np.r_[base.first_due_s, load.first_due_s],
        np.r_[base.tpot_s, load.tpot_s],
        np.r_[base.cap_tokens, load.cap_tokens].astype(np.int64),
    )
    if not items:
        return forecast(grid, merged, [grid.start_s]).feasible, np.inf
    fc = forecast(grid, merged, [it.deadline_s for it in items])
    demand = np.cumsum([it.prefill_tokens for it in items])
    left = fc.budget_tokens - demand
    return bool(fc.feasible and np.all(left >= 0)), float(left.min())


def leftover_to_s(tokens: float, grid: StepGrid) -> float:
    """Convert a leftover prefill budget into seconds of full-rate steps (for slack reports)."""
    if not np.isfinite(tokens):
        return float("inf")
    rate = grid.step_tokens / grid.step_len_s if grid.step_len_s > 0 else 0.0
    return tokens / rate if rate > 0 else 0.0
