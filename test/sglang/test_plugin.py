"""The plugin: inert unless enabled; when enabled SGLang's classes resolve to ours."""

from __future__ import annotations

import importlib.metadata
import inspect
import pkgutil

import pytest

pytest.importorskip("sglang", reason="sglang is not installed: run scripts/install_sglang_cpu.sh")
pytestmark = pytest.mark.sglang

from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins_by_group  # noqa: E402
from sglang.srt.plugins.hook_registry import HookRegistry  # noqa: E402

from sloserve.sglang import plugin  # noqa: E402

# SGLang methods our subclasses override or call: a rename upstream must fail here.
OVERRIDDEN = {
    "sglang.srt.managers.scheduler.Scheduler": (
        "_create_generation_req",
        "init_schedule_policy",
        "get_prefill_adder_class",
        "_should_defer_prefill",
        "_add_request_to_queue",
        "get_output_streamer_class",
        "init_output_streamer",
    ),
    "sglang.srt.managers.schedule_policy.SchedulePolicy": ("calc_priority",),
    "sglang.srt.managers.schedule_policy.PrefillAdder": ("add_one_req", "add_chunked_req", "budget_state"),
    "sglang.srt.managers.schedule_batch.ScheduleBatch": ("_get_decode_retraction_order", "retract_decode"),
    "sglang.srt.managers.data_parallel_controller.DataParallelController": (
        "maybe_external_dp_rank_routing",
        "dispatching_with_trace",
        "init_dispatcher",
    ),
    "sglang.srt.speculative.adaptive_spec_params.AdaptiveSpeculativeParams": (
        "get_steps_for_batch",
        "on_verify_complete",
        "candidate_steps",
    ),
    "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer": (
        "build_additional_customized_info",
        "is_request_level_customized_info_key",
    ),
}


@pytest.fixture
def registry():
    """Hooks applied in a test are undone afterwards (module attributes restored)."""
    saved = {t: pkgutil.resolve_name(t.rsplit(".", 1)[0]) for t in plugin.ALL_HOOK_TARGETS}
    originals = {t: inspect.getattr_static(saved[t], t.rsplit(".", 1)[1]) for t in plugin.ALL_HOOK_TARGETS}
    HookRegistry.reset()
    yield HookRegistry
    for target, owner in saved.items():
        name = target.rsplit(".", 1)[1]
        current = getattr(owner, name)
        setattr(owner, name, originals[target])
        if isinstance(originals[target], type):  # undo the propagation into importers too
            import sys

            for mod in list(sys.modules.values()):
                if getattr(mod, name, None) is current and current is not originals[target]:
                    setattr(mod, name, originals[target])
    HookRegistry.reset()


def test_entry_point_is_declared_and_loadable():
    eps = [ep for ep in importlib.metadata.entry_points(group=GENERAL_PLUGINS_GROUP) if ep.name == "sloserve"]
    assert len(eps) == 1 and eps[0].value == "sloserve.sglang.plugin:load_plugin"
    loaded = load_plugins_by_group(GENERAL_PLUGINS_GROUP)  # what SGLang does in every process
    assert loaded["sloserve"][0] is plugin.load_plugin


def test_every_hook_target_and_overridden_method_resolves():
    for target in plugin.ALL_HOOK_TARGETS:
        assert pkgutil.resolve_name(target) is not None, target
    for cls_path, methods in OVERRIDDEN.items():
        cls = pkgutil.resolve_name(cls_path)
        missing = [m for m in methods if not hasattr(cls, m)]
        assert not missing, f"{cls_path} lost {missing}: the SGLang adapter must be updated"


def test_disabled_plugin_changes_nothing(registry, monkeypatch):
    import sglang.srt.managers.scheduler as sched_mod

    monkeypatch.delenv("SLOSERVE_SGLANG_PLUGIN", raising=False)
    before = sched_mod.Scheduler
    plugin.load_plugin()
    assert not any(t in registry._hooks for t in plugin.HOOK_TARGETS)
    registry.apply_hooks()
    assert sched_mod.Scheduler is before and before.__module__ == "sglang.srt.managers.scheduler"


def test_enabled_plugin_replaces_scheduler_controller_selector_and_retraction(registry, monkeypatch):
    import sglang.srt.managers.data_parallel_controller as dpc_mod
    import sglang.srt.managers.scheduler as sched_mod
    import sglang.srt.speculative.adaptive_spec_params as spec_mod
    from sglang.srt.managers.schedule_batch import ScheduleBatch

    from sloserve.sglang.dp_controller import SloDataParallelController
    from sloserve.sglang.scheduler import SloScheduler
    from sloserve.sglang.spec_selector import SloSpeculativeParams

    monkeypatch.setenv("SLOSERVE_SGLANG_PLUGIN", "1")
    plugin.load_plugin()
    plugin.load_plugin()  # idempotent: no duplicate hooks
    assert all(len(registry._hooks[t]) == 1 for t in plugin.ALL_HOOK_TARGETS)
    registry.apply_hooks()
    assert sched_mod.Scheduler is SloScheduler
    assert dpc_mod.DataParallelController is SloDataParallelController
    assert spec_mod.AdaptiveSpeculativeParams is SloSpeculativeParams
    assert isinstance(inspect.getattr_static(ScheduleBatch, "_get_decode_retraction_order"), staticmethod)
    assert inspect.unwrap(ScheduleBatch._get_decode_retraction_order) is not ScheduleBatch._get_decode_retraction_order
    # run_scheduler_process builds `Scheduler(...)` by its module-global name: it now gets ours.
    assert sched_mod.run_scheduler_process.__globals__["Scheduler"] is SloScheduler


def test_retraction_order_prefers_best_effort_then_slack(sglang_published):
    from helpers import make_req
    from sglang.srt.managers.schedule_batch import ScheduleBatch

    from sloserve.core.request import Tier
    from sloserve.perf import get_model
    from sloserve.runtime.slo_params import SloDefaults
    from sloserve.sglang.scheduler import attach_slo

    perf = get_model("llama-3-8b-h100")
    original = inspect.unwrap(ScheduleBatch._get_decode_retraction_order)
    reqs = [
        make_req("tight", 10, custom_params={"slo_tpot_ms": 20.0}),
        make_req("loose", 10, custom_params={"slo_tpot_ms": 500.0}),
        make_req("be", 10),
    ]
    for r in reqs:
        attach_slo(r, 0.0, perf.zero_load_prefill_s, SloDefaults())
    reqs[0].sloserve_request.tier = reqs[1].sloserve_request.tier = Tier.SLO
    reqs[2].sloserve_request.tier = Tier.BEST_EFFORT
    for r in reqs[:2]:
        r.sloserve_request.first_token_s = 0.0
        r.sloserve_request.num_output_tokens = 5
    order = plugin.slo_retraction_order(original, reqs)
    assert [reqs[i].rid for i in order] == ["tight", "loose", "be"]  # SGLang retracts from the end
    plain = [make_req("p1", 10), make_req("p2", 20)]
    assert plugin.slo_retraction_order(original, plain) == original(plain)


def test_the_hooked_tokenizer_manager_stamps_generate_requests_not_embeddings(registry, monkeypatch):
    from sglang.srt.managers.io_struct import EmbeddingReqInput, GenerateReqInput
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    monkeypatch.setenv("SLOSERVE_SGLANG_PLUGIN", "1")
    plugin.load_plugin()
    registry.apply_hooks()
    gen = GenerateReqInput(text="hi", sampling_params={"max_new_tokens": 4, "custom_params": {"slo_tpot_ms": 50}})
    emb = EmbeddingReqInput(text="hi")
    for obj in (gen, emb):
        obj.normalize_batch_and_arguments()
        with pytest.raises(AttributeError):  # the hook runs first, then SGLang's body on a bare manager
            TokenizerManager._init_req_state(object(), obj)
    assert gen.sampling_params["custom_params"]["slo_arrival_s"] > 0
    assert gen.sampling_params["custom_params"]["slo_tpot_ms"] == 50
    assert not (emb.sampling_params or {}).get("custom_params")
