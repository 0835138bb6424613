"""The slos-serve policy is small collaborators that use only each other's public methods.

No collaborator keeps a pointer back to the policy (callbacks it was given are public bound
methods), and no planner module reaches into another object's private attributes.
"""

import ast
from pathlib import Path

import pytest

import sloserve.planner
from sloserve.core.scheduler import SchedulerContext, create_scheduler
from sloserve.perf.presets import get_model
from sloserve.spec.config import SpecConfig

PLANNER_DIR = Path(sloserve.planner.__file__).parent
SPEC_SLOS = PLANNER_DIR.parent / "spec" / "slos.py"
# PeakProfile's own factory fills the instance it builds (same class): not a reach-through
SAME_CLASS = {("kvprofile.py", "p._normalize"), ("kvprofile.py", "p._sums")}  # PeakProfile.of building p


def collaborators(sched):
    return {
        name: obj
        for name, obj in vars(sched).items()
        if type(obj).__module__.startswith("sloserve.planner.") and not callable(obj)
    }


def back_pointers(sched) -> list[str]:
    """Collaborator attributes that are the policy itself or one of its private bound methods."""
    out = []
    for name, obj in collaborators(sched).items():
        for attr, value in vars(obj).items():
            owner = getattr(value, "__self__", None)
            if value is sched or (owner is sched and value.__name__.startswith("_")):
                out.append(f"{name}.{attr}")
    return out


@pytest.mark.parametrize("policy", ["slos-serve", "slos-serve+spec"])
def test_collaborators_hold_no_pointer_back_to_the_policy(policy):
    ctx = SchedulerContext(get_model("opt-13b-tp2-a100"), 97648, 16, spec=SpecConfig(mode="adaptive"))
    sched = create_scheduler(policy, ctx, {"kv_profile": True, "repace": True, "output_length": "learn"})
    found = set(collaborators(sched))
    assert {"tiers", "table", "lengths", "kvp", "planner", "executor", "overruns", "repacer", "publisher"} <= found
    assert back_pointers(sched) == []
    # negative controls: a pointer back and a private callback are both seen
    sched.kvp.s = sched
    sched.repacer.replan = sched._replan
    assert back_pointers(sched) == ["kvp.s", "repacer.replan"]


def private_reach_throughs(source: str, name: str) -> list[str]:
    """``obj._private`` accesses whose ``obj`` is not ``self``, ``cls`` or ``super()``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        v = node.value
        if isinstance(v, ast.Name) and v.id in ("self", "cls"):
            continue
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
            continue
        if (name, ast.unparse(node)) not in SAME_CLASS:
            out.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    return out


def test_no_planner_module_touches_another_objects_private_attributes():
    paths = sorted(PLANNER_DIR.glob("*.py")) + [SPEC_SLOS]
    assert [hit for p in paths for hit in private_reach_throughs(p.read_text(), p.name)] == []
    # negative control: what KVProfile did before (a pointer back to the policy) is seen
    probe = "def admit(s, r, now_s):\n    return r.request_id in s.s._replan(now_s, [r])\n"
    assert private_reach_throughs(probe, "probe.py") == ["probe.py:2 s.s._replan"]


def test_the_policy_stays_a_small_wiring_module():
    assert len((PLANNER_DIR / "policy.py").read_text().splitlines()) <= 200  # issue 18: about 150-200 lines
