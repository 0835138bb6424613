"""launch_server's command line: clear one-line errors for wrong options, a working HF tokenizer."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest


def group_pids(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (``ps`` reads /proc)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    return [int(p) for p, g, st in (line.split()[:3] for line in out.splitlines()) if int(g) == pgid and "Z" not in st]


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sloserve.launch_server", "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--policy", "no-such-policy"), "unknown --policy 'no-such-policy'; the server supports: edf, fcfs, "),
        # DistServe's roles and the pair need KV hand-off between replicas: simulator only, refused
        (("--policy", "distserve-prefill"), "only the simulator models"),
        (("--policy", "distserve-decode"), "only the simulator models"),
        (
            ("--policy", "distserve"),
            "only the simulator models (python -m sloserve.sim run --policy distserve); "
            "the server supports: edf, fcfs, ",
        ),
        (("--policy", "fcfs", "--router", "nope"), "unknown --router 'nope'; registered routers: "),
        (("--policy", "fcfs", "--model", "gpt-17"), "unknown --model 'gpt-17'; choose from: "),
        (("--policy", "fcfs", "--policy-opt", "warp_speed=9"), "unknown option(s) for policy 'fcfs': warp_speed"),
        (("--policy", "fcfs", "--policy-opt", "oops"), "--policy-opt expects key=value"),
        (("--dp-size", "0"), "--dp-size must be >= 1"),
        (("--log-level", "nonsense"), "--log-level must be one of debug, info, warning, error, critical"),
        (("--log-format", "xml"), "argument --log-format: invalid choice: 'xml'"),
        (("--port", "abc"), "argument --port: invalid int value: 'abc'"),
        (("--policy", "fcfs", "--tokenizer-path", "/nonexistent/tok"), "--tokenizer-path /nonexistent/tok: "),
    ],
)
def test_bad_launch_options_fail_with_one_clear_line(args, needle, capsys):
    from sloserve.launch_server import main

    # main() validates everything before it starts a process, so it runs in-process here;
    # argparse's own errors exit through SystemExit
    try:
        code = main(["--port", "1", *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_unknown_policy_via_python_m_lists_fcfs():
    proc = launch("--policy", "no-such-policy")
    assert proc.returncode == 2 and "fcfs" in proc.stderr and "Traceback" not in proc.stderr


def test_sglang_backend_without_gpu_is_one_line():
    from sloserve.launch_server import cuda_available

    if cuda_available():
        pytest.skip("a GPU is present: --backend sglang would really start SGLang")
    # SGLang's own arguments (--model-path) must reach the SGLang launcher, not be refused here
    proc = launch("--backend", "sglang", "--model-path", "some/model")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "CUDA" in proc.stderr and "unrecognized" not in proc.stderr


def test_local_hf_tokenizer(server_factory, tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="the 'tokenizers' package is not installed")
    from tokenizers import models, pre_tokenizers

    words = ["hello", "world", "the", "a", "model", "serves", "tokens", "<unk>", "</s>"]
    tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    srv = server_factory("--policy", "fcfs", "--time-scale", "0", "--tokenizer-path", str(tmp_path))
    out = httpx.post(
        srv.url + "/generate", timeout=30, json={"text": "hello world model", "sampling_params": {"max_new_tokens": 5}}
    ).json()
    assert out["meta_info"]["prompt_tokens"] == 3 and len(out["output_ids"]) == 5
    assert srv.get_json("/server_info")["tokenizer"] == str(tmp_path)


def test_port_in_use_exits_nonzero_without_orphans():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "sloserve.launch_server", "--policy", "fcfs", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"address already in use" in out
    deadline = time.monotonic() + 5  # multiprocessing's resource tracker exits just after its parent
    while group_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_pids(proc.pid) == []


@pytest.mark.slow  # the server imports torch to ask about CUDA: ~10 s on 2 cores
def test_backend_auto_picks_embedded_without_cuda(server_factory):
    import shutil

    if shutil.which("nvidia-smi"):  # cheaper than importing torch here to ask
        pytest.skip("a GPU may be available here: auto could pick the SGLang backend")
    srv = server_factory("--backend", "auto", "--policy", "fcfs", "--time-scale", "0")
    assert srv.get_json("/server_info")["backend"] == "embedded"
    srv.stop()
    assert "--backend auto: no SGLang with a CUDA GPU here, serving the embedded runtime" in srv.log_path.read_text()


def test_help_lists_names_and_defaults():
    proc = subprocess.run(
        [sys.executable, "-m", "sloserve.launch_server", "--help"], capture_output=True, text=True, timeout=60
    )
    text = " ".join(proc.stdout.split())  # unwrap argparse's lines
    assert proc.returncode == 0, proc.stderr
    for needle in (
        "--model MODEL, --model-path MODEL",
        "(default: opt-13b-tp2-a100)",
        "(default: slos-serve)",
        "(default: round-robin)",
        "slo-proactive",
        "sarathi",
        "llama-3-8b-h100",
        "(default: 30000)",
        "{text,json}",
        "debug, info, warning",
    ):
        assert needle in text, needle
    assert "distserve" not in text  # refused by the server (simulator only)


def test_a_bad_flag_is_one_line_on_stderr():
    proc = subprocess.run(
        [sys.executable, "-m", "sloserve.launch_server", "--bogus-flag"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
