"""SGLang frontend programs (``@sgl.function``, ``sgl.gen``) tagging stage SLOs against the server.

Needs the sglang package (scripts/install_sglang_cpu.sh); GPU-only imports are stubbed with
``sloserve.sglang.gpu_stubs``, as the CPU server's processes do.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

POLICY = os.environ.get("SLOSERVE_TEST_POLICY", "fcfs")


def _import_sglang():
    if importlib.util.find_spec("sglang") is None:
        pytest.skip("sglang is not installed: run scripts/install_sglang_cpu.sh", allow_module_level=True)
    from sloserve.sglang import gpu_stubs

    gpu_stubs.install()
    try:
        import sglang
    except Exception as exc:  # a partial install: skip with the reason
        pytest.skip(f"import sglang failed ({exc}); run scripts/install_sglang_cpu.sh", allow_module_level=True)
    return sglang


sgl = _import_sglang()
from sloserve.frontend import SloRuntimeEndpoint, slo_stage  # noqa: E402


@pytest.fixture(scope="module")
def backend(server_factory):
    srv = server_factory("--model", "r1-distill-qwen-7b-a100", "--policy", POLICY, "--time-scale", "0.05")
    return SloRuntimeEndpoint(srv.url, slo_class="reasoning")


@sgl.function
def reasoning_program(s, question):
    s += "Question: " + question + "\n"
    with slo_stage(s, "thinking", think_tpot_ms=None, tpot_ms=40):
        s += sgl.gen("thought", max_tokens=64, stop="</think>")
    s += "</think>\n"
    with slo_stage(s, "answer", tpot_ms=150):
        s += sgl.gen("answer", max_tokens=16)


@sgl.function
def tool_loop(s, task, rounds):
    s += "Task: " + task + "\n"
    for i in range(rounds):
        with slo_stage(s, "tool_call", class_="tool-calling"):
            s += sgl.gen(f"call{i}", max_tokens=8)
        s += f"\n[tool output {i}]\n"
    with slo_stage(s, "final", class_="tool-calling"):
        s += sgl.gen("final", max_tokens=12)


def test_reasoning_program_tags_each_stage(backend):
    state = reasoning_program.run(question="why?", backend=backend)
    assert state.error() is None
    thought, answer = state.get_meta_info("thought"), state.get_meta_info("answer")
    assert "</think>" not in state["thought"] and thought["finish_reason"]["type"] == "stop"
    assert thought["completion_tokens"] < 64  # the synthetic model stops thinking half way
    assert thought["slo_stage"] == "thinking" and thought["slo_tpot_ms"] == 40
    assert answer["slo_stage"] == "answer" and answer["slo_tpot_ms"] == 150
    assert answer["completion_tokens"] == 16 and answer["slo_class"] == "reasoning"
    assert thought["slo_program_id"] == answer["slo_program_id"]
    assert thought["tier"] == answer["tier"] == "slo" and answer["slo_met"] in (True, False)
    other = reasoning_program.run(question="again", backend=backend)
    assert other.get_meta_info("answer")["slo_program_id"] != answer["slo_program_id"]


def test_tool_calling_loop(backend):
    state = tool_loop.run(task="add numbers", rounds=3, backend=backend)
    assert state.error() is None
    calls = [state.get_meta_info(f"call{i}") for i in range(3)]
    final = state.get_meta_info("final")
    assert [c["slo_stage"] for c in calls] == ["tool_call"] * 3 and final["slo_stage"] == "final"
    assert all(c["slo_tpot_ms"] == 50.0 for c in calls) and final["slo_tpot_ms"] == 100.0
    assert len({c["slo_program_id"] for c in calls + [final]}) == 1
    # each round's prompt holds the previous rounds' output plus the tool output
    prompts = [c["prompt_tokens"] for c in calls + [final]]
    assert prompts == sorted(prompts) and len(set(prompts)) == 4


def test_streaming_program_and_bad_tag(backend):
    state = reasoning_program.run(question="stream", backend=backend, stream=True)
    text = "".join(state.text_iter())
    assert "Question: stream" in text and state.get_meta_info("answer")["completion_tokens"] == 16
    with pytest.raises(ValueError, match="slo_tpot_ms"):
        with slo_stage(state, "x", tpot_ms=-1):
            pass
