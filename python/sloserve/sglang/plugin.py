"""SGLang plugin entry point (group ``sglang.srt.plugins``): inert unless enabled.

SGLang calls ``load_plugin`` in every one of its processes. Unless ``SLOSERVE_SGLANG_PLUGIN=1``
(set by ``sloserve.sglang.launch``) it returns at once without importing SGLang, so installing
sloserve never changes a plain SGLang server. When enabled it registers, with SGLang's
``HookRegistry``, the replacements listed in ``HOOK_TARGETS``; SGLang applies them right after
all plugins ran.
"""

from __future__ import annotations

import logging

from sloserve.sglang.config import plugin_enabled

log = logging.getLogger(__name__)

SCHEDULER_TARGET = "sglang.srt.managers.scheduler.Scheduler"
DP_CONTROLLER_TARGET = "sglang.srt.managers.data_parallel_controller.DataParallelController"
SPEC_TARGET = "sglang.srt.speculative.adaptive_spec_params.AdaptiveSpeculativeParams"
RETRACTION_TARGET = "sglang.srt.managers.schedule_batch.ScheduleBatch._get_decode_retraction_order"
META_INFO_TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager.update_request_meta_info"
ARRIVAL_TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager._init_req_state"
# Every target string, and the SGLang methods our subclasses override (checked by the tests
# against the installed SGLang and the 0.5.16 wheel, so an upstream rename fails loudly).
HOOK_TARGETS = (SCHEDULER_TARGET, DP_CONTROLLER_TARGET, SPEC_TARGET, RETRACTION_TARGET, ARRIVAL_TARGET)
# Targets that exist only in newer SGLang (0.5.23): registered when the installed one has them.
NEWER_HOOK_TARGETS = (META_INFO_TARGET,)
NEWER_SINCE = (0, 5, 17)
ALL_HOOK_TARGETS = HOOK_TARGETS + NEWER_HOOK_TARGETS


def sglang_version() -> tuple[int, ...]:
    from importlib.metadata import version

    parts = []
    for piece in version("sglang").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def slo_retraction_order(original, reqs):
    """AROUND hook: retract best-effort, then most-slack requests first; SGLang's order when
    no request carries a sloserve SLO (plain requests keep plain behaviour)."""
    from sloserve.sglang.translate import retraction_order

    tagged = {r.rid: r.sloserve_request for r in reqs if getattr(r, "sloserve_request", None) is not None}
    if not tagged:
        return original(reqs)
    # Slack differences do not depend on now_s, so the order is the same on every rank.
    return retraction_order([r.rid for r in reqs], tagged, 0.0)


def stamp_http_arrival(manager, obj, *args, **kwargs):
    """BEFORE hook on ``TokenizerManager._init_req_state`` (the first thing SGLang does with a
    normalized generate request): the request's deadlines start now, at the HTTP front, not
    when the scheduler first sees it (``translate.stamp_arrival``)."""
    import time

    from sglang.srt.managers.io_struct import GenerateReqInput

    from sloserve.sglang.translate import stamp_arrival

    if isinstance(obj, GenerateReqInput):  # embeddings are not planned
        stamp_arrival(obj.sampling_params, time.time())


def register_hooks(registry=None) -> list[str]:
    """Register every hook with SGLang's HookRegistry; returns the targets registered."""
    if registry is None:
        from sglang.srt.plugins.hook_registry import HookRegistry as registry  # noqa: N813
    from sglang.srt.plugins.hook_registry import HookType

    from sloserve.sglang.dp_controller import SloDataParallelController
    from sloserve.sglang.scheduler import SloScheduler
    from sloserve.sglang.spec_selector import SloSpeculativeParams
    from sloserve.sglang.streamer import plain_meta_info

    hooks = (
        (SCHEDULER_TARGET, SloScheduler, HookType.REPLACE),
        (DP_CONTROLLER_TARGET, SloDataParallelController, HookType.REPLACE),
        (SPEC_TARGET, SloSpeculativeParams, HookType.REPLACE),
        (RETRACTION_TARGET, slo_retraction_order, HookType.AROUND),
        (META_INFO_TARGET, plain_meta_info, HookType.AROUND),
        (ARRIVAL_TARGET, stamp_http_arrival, HookType.BEFORE),
    )
    if sglang_version() < NEWER_SINCE:
        hooks = tuple(h for h in hooks if h[0] not in NEWER_HOOK_TARGETS)
    done = []
    for target, hook, kind in hooks:
        if any(h is hook for _, h, _ in registry._hooks.get(target, ())):
            continue  # idempotent: SGLang may call plugins more than once per process
        registry.register(target, hook, kind)
        done.append(target)
    return done


def load_plugin() -> None:
    """Entry point SGLang calls; does nothing unless the sloserve launcher enabled it."""
    if not plugin_enabled():
        log.debug("sloserve SGLang plugin installed but not enabled (set SLOSERVE_SGLANG_PLUGIN=1)")
        return
    targets = register_hooks()
    log.info("sloserve SGLang plugin registered %d hook(s): %s", len(targets), ", ".join(targets))
