"""A deterministic cost model of the scheduler's own CPU time (``--charge-scheduler-time``).

A real serving loop runs the scheduler between GPU steps, so its CPU time delays the next step.
The simulator charges it to the replica's next step as virtual time, from this model, never from
a wall clock (runs stay byte-identical per seed):

* one ``schedule`` call: ``schedule_s + schedule_per_resident_s x resident requests``
* one ``add`` (an arrival's admission work): ``add_s + add_per_resident_s x resident requests``

Calibrated from ``benchmark/planner_overhead.py --sweep`` on the shared 2-core development
machine (docs/planner.md §7): slos-serve's call with one arrival cost 0.57 ms at 64 residents,
1.46 ms at 256 and 2.54 ms at 512 (p50), and a further arrival of the same step about 0.08 ms;
the model gives 0.53 / 1.30 / 2.32 ms and 0.06 ms. The baselines' queue scans are linear and
light (a priority sort per step); they are charged a tenth of that per resident.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerCost:
    schedule_s: float
    schedule_per_resident_s: float
    add_s: float
    add_per_resident_s: float

    def schedule_cost_s(self, resident: int) -> float:
        return self.schedule_s + self.schedule_per_resident_s * resident

    def add_cost_s(self, resident: int) -> float:
        return self.add_s + self.add_per_resident_s * resident


PLANNER_COST = SchedulerCost(0.2e-3, 4.0e-6, 0.06e-3, 0.0)
BASELINE_COST = SchedulerCost(0.1e-3, 0.4e-6, 0.01e-3, 0.0)


def scheduler_cost(policy: str) -> SchedulerCost:
    """The cost model of a registered policy (the SLOs-Serve planners, or a baseline)."""
    return PLANNER_COST if policy.startswith("slos-serve") else BASELINE_COST
