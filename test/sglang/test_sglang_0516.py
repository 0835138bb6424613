"""The adapter's hook targets exist in SGLang 0.5.16 too (read from the wheel's source).

0.5.16 is the last release on torch 2.11, which some GPU images ship. Its wheel is downloaded
once into the repository's git-ignored ``.whl/`` (or $SLOSERVE_WHEEL_CACHE); offline, the test
skips with the reason. Nothing is installed: the source is parsed with ``ast``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sloserve.sglang.plugin import HOOK_TARGETS, NEWER_HOOK_TARGETS

VERSION = "0.5.16"
CACHE = Path(os.environ.get("SLOSERVE_WHEEL_CACHE", Path(__file__).resolve().parents[2] / ".whl"))
# Methods the adapter needs on every supported version (its fallback path on 0.5.16).
REQUIRED = {
    "sglang/srt/managers/scheduler.py": {"Scheduler": ("_add_request_to_queue", "init_schedule_policy")},
    "sglang/srt/managers/schedule_policy.py": {
        "SchedulePolicy": ("calc_priority",),
        "PrefillAdder": ("add_one_req", "add_chunked_req", "budget_state"),
    },
    "sglang/srt/managers/schedule_batch.py": {"ScheduleBatch": ("_get_decode_retraction_order", "retract_decode")},
    "sglang/srt/managers/data_parallel_controller.py": {
        "DataParallelController": ("maybe_external_dp_rank_routing", "dispatching_with_trace")
    },
    "sglang/srt/speculative/adaptive_spec_params.py": {
        "AdaptiveSpeculativeParams": ("get_steps_for_batch", "on_verify_complete", "candidate_steps")
    },
    "sglang/srt/plugins/hook_registry.py": {"HookRegistry": ("register", "apply_hooks")},
}
# 0.5.23 extension points the adapter uses when present (0.5.16 falls back; docs/sglang.md).
NEWER_ONLY = ("_create_generation_req", "get_prefill_adder_class", "_should_defer_prefill", "get_output_streamer_class")


@pytest.fixture(scope="module")
def wheel() -> zipfile.ZipFile:
    found = sorted(CACHE.glob(f"sglang-{VERSION}-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"sglang=={VERSION}", "-d", str(CACHE)],
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"downloading sglang=={VERSION} timed out (offline?)")
        found = sorted(CACHE.glob(f"sglang-{VERSION}-*.whl"))
        if proc.returncode != 0 or not found:
            pytest.skip(f"cannot download sglang=={VERSION} (offline?): {proc.stderr.strip()[-200:]}")
    with zipfile.ZipFile(found[-1]) as zf:
        yield zf


def classes_in(zf: zipfile.ZipFile, path: str) -> dict[str, set[str]]:
    tree = ast.parse(zf.read(path).decode())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def test_every_hook_target_exists_in_0516(wheel):
    names = set(wheel.namelist())
    for target in HOOK_TARGETS:
        parts = target.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest module prefix that is a file
            path = "/".join(parts[:cut]) + ".py"
            if path in names:
                break
        else:
            pytest.fail(f"{target}: no module file in the {VERSION} wheel")
        rest = parts[cut:]
        classes = classes_in(wheel, path)
        assert rest[0] in classes, f"{target}: class {rest[0]} missing in {VERSION}"
        if len(rest) > 1:
            assert rest[1] in classes[rest[0]], f"{target}: {rest[1]} missing in {VERSION}"


def test_required_methods_and_plugin_loading_exist_in_0516(wheel):
    for path, wanted in REQUIRED.items():
        classes = classes_in(wheel, path)
        for cls, methods in wanted.items():
            missing = [m for m in methods if m not in classes.get(cls, set())]
            assert not missing, f"{VERSION} {path}:{cls} lacks {missing}"
    sched_src = wheel.read("sglang/srt/managers/scheduler.py").decode()
    assert "load_plugins()" in sched_src  # plugins load in every scheduler process
    sp_src = wheel.read("sglang/srt/sampling/sampling_params.py").decode()
    assert "custom_params" in sp_src


def test_newer_extension_points_are_known_to_be_missing_in_0516(wheel):
    """If 0.5.16 gained these, the docs' "what works on 0.5.16" list must be updated."""
    methods = classes_in(wheel, "sglang/srt/managers/scheduler.py")["Scheduler"]
    assert [m for m in NEWER_ONLY if m in methods] == []
    manager = classes_in(wheel, "sglang/srt/managers/tokenizer_manager.py")["TokenizerManager"]
    assert [t for t in NEWER_HOOK_TARGETS if t.rsplit(".", 1)[1] in manager] == []  # registered from 0.5.17 on
