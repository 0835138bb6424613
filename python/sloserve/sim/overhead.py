"""A deterministic cost model of the scheduler's own CPU time (``--charge-scheduler-time``).

A real serving loop runs the scheduler between GPU steps, so its CPU time delays the next step.
The simulator charges it to the replica's next step as virtual time, from this model, never from
a wall clock (runs stay byte-identical per seed):

* one step: ``schedule_s + schedule_per_resident_s x resident requests`` (the ``schedule`` call
  that builds the step and the ``on_step_done`` that takes its result)
* one arrival (``add``, the DP for slos-serve): ``add_s + add_per_resident_s x resident requests``

Fitted (2026-12-05) from ``python benchmark/scheduler_cost.py`` on the shared 2-core development
machine: mean CPU time per call at 32-256 resident requests, two runs within 0.01 ms and 0.1 us of
each other (docs/simulator.md). slos-serve: 0.04 ms + 4.2 us x resident per step (1.1 ms at 256),
0.18 ms + 0.35 us x resident per arrival (its DP; the step after it is slightly cheaper, the add
having rebuilt the tier view). The baselines (vLLM 2.4 us, SGLang 2.5, EDF 2.8; Sarathi 1.0, its
running cap is smaller) spend most of theirs taking the step's results: 0.01 ms + 2.5 us x
resident per step, 0.005 ms per arrival. Speculation's length choice is not in the fit (the
replica there runs without drafts). Before it was fitted, the baselines were charged an assumed
tenth of slos-serve's per resident (0.1 ms + 0.4 us), under a fifth of what their calls take.
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


PLANNER_COST = SchedulerCost(0.04e-3, 4.2e-6, 0.18e-3, 0.35e-6)
BASELINE_COST = SchedulerCost(0.01e-3, 2.5e-6, 0.005e-3, 0.0)


def scheduler_cost(policy: str) -> SchedulerCost:
    """The cost model of a registered policy (the SLOs-Serve planners, or a baseline)."""
    return PLANNER_COST if policy.startswith("slos-serve") else BASELINE_COST
