"""The SGLang backend under Ray: two real CPU SGLang + sloserve replicas on two Ray nodes.

A local ``ray.cluster_utils.Cluster`` (a head with no CPUs, two worker nodes) and one ingress
(``python -m sloserve.launch_server --backend sglang --ray-address ... --dp-size 2``): SLO-tagged
requests through every generation route, streaming and not; a routing decision only the
replicas' summaries (read on their nodes, polled over Ray) can explain; and the loss of a whole
worker node while a stream runs on each replica.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from e2e_helpers import REQUEST_S, STARTUP_S

from sloserve.runtime.transport import free_port

pytest.importorskip("ray.cluster_utils", reason="Ray is optional: pip install -e .[ray]")
from ray_cluster import two_worker_cluster  # noqa: E402 - needs Ray, skipped above without it

pytestmark = pytest.mark.slow
LONG_TOKENS = 3500  # a stream that runs for the whole fault sequence (the tiny model's context is 4096)


def wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Ingress:
    def __init__(self, url: str, proc: subprocess.Popen, log_path) -> None:
        self.url, self.proc, self.log_path = url, proc, log_path

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=REQUEST_S).json()

    def replica(self, i: int) -> dict:
        return self.health()["replicas"][i]

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:])


class Stream:
    """One streaming /generate read in a thread: its replica, its SSE data lines, and its end."""

    def __init__(self, ingress: Ingress, text: str) -> None:
        self.lines: list[str] = []
        self.replica: int | None = None
        self.started, self.done = threading.Event(), threading.Event()
        params = {"max_new_tokens": LONG_TOKENS, "ignore_eos": True, "custom_params": {"slo_tpot_ms": 2000.0}}
        self.body = {"text": text, "stream": True, "sampling_params": params}
        threading.Thread(target=self._read, args=(ingress.url,), daemon=True).start()
        assert self.started.wait(REQUEST_S), "the stream did not start"

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("POST", url + "/generate", json=self.body, timeout=REQUEST_S) as r:
                self.replica = int(r.headers["x-sloserve-replica"])
                self.started.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.lines.append(line[6:])
        finally:
            self.started.set()
            self.done.set()

    def error(self) -> dict | None:
        for line in self.lines:
            if line.startswith("{") and "error" in json.loads(line):
                return json.loads(line)["error"]
        return None


@pytest.fixture(scope="module")
def cluster():
    """A head node with no CPUs for actors and two worker nodes with two CPUs each."""
    yield from two_worker_cluster()


@pytest.fixture(scope="module")
def ingress(cluster, model_dir, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray-ingress") / "ingress.log"
    cmd = [sys.executable, "-m", "sloserve.launch_server", "--backend", "sglang", "--ray-address", cluster.address]
    cmd += ["--dp-size", "2", "--host", "127.0.0.1", "--port", str(port), "--model-path", str(model_dir)]
    cmd += ["--device", "cpu", "--policy", "slos-serve", "--max-total-tokens", "8192"]
    # total-requests with a 1 ms pending TTL: a decision follows the replicas' published summaries
    cmd += ["--router", "total-requests", "--router-opt", "pending_ttl_s=0.001"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Ingress(f"http://127.0.0.1:{port}", proc, log_path)

    def both_live():
        assert proc.poll() is None, f"ingress exited:\n{srv.log_tail()}"
        try:
            return all(r["state"] == "live" for r in srv.health()["replicas"])
        except (httpx.HTTPError, ValueError):
            return False

    wait_for(both_live, STARTUP_S * 2, "two live replicas")
    yield srv
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_replicas_on_two_nodes_serve_slo_tagged_requests(cluster, ingress):
    workers = {n.node_id for n in cluster.worker_nodes}
    nodes = [r["node"] for r in ingress.health()["replicas"]]
    assert len(set(nodes)) == 2 and set(nodes) <= workers, nodes  # SPREAD: one replica per worker node
    tags = [{"slo_ttft_ms": 5000}, {"slo_tpot_ms": 1000}, {"slo_ttft_slowdown": 50}, {}]
    for i, tag in enumerate(tags):
        params = {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True, "custom_params": tag}
        r = httpx.post(
            ingress.url + "/generate", json={"text": f"slo {i}", "sampling_params": params}, timeout=REQUEST_S
        )
        assert r.status_code == 200, r.text
        assert r.json()["meta_info"]["completion_tokens"] == 6 and r.headers["x-sloserve-replica"] in ("0", "1")
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "custom_params": tags[0]}
    r = httpx.post(ingress.url + "/v1/chat/completions", json=chat, timeout=REQUEST_S)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None, r.text
    body = {"model": "m", "prompt": "hello", "max_tokens": 4, "stream": True, "custom_params": tags[1]}
    with httpx.stream("POST", ingress.url + "/v1/completions", json=body, timeout=REQUEST_S) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]" and len(lines) >= 2, lines
    bad = {"text": "x", "sampling_params": {"max_new_tokens": 2, "custom_params": {"slo_ttft_ms": -1}}}
    r = httpx.post(ingress.url + "/generate", json=bad, timeout=REQUEST_S)
    assert r.status_code == 400 and "slo_ttft_ms" in r.text  # the replica's plugin judges, as on one host
    assert httpx.get(ingress.url + "/v1/models", timeout=REQUEST_S).status_code == 200


def refuses(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        pass
    return False


def test_losing_a_worker_node_fails_only_its_stream_and_ray_replaces_the_replica(cluster, ingress):
    by_id = {n.node_id: n for n in cluster.worker_nodes}
    first = Stream(ingress, "resident one")
    wait_for(lambda: (ingress.replica(first.replica)["summary"] or {}).get("num_requests") == 1, REQUEST_S, "summary")
    second = Stream(ingress, "resident two")  # the summary shows one resident request on `first`'s replica
    assert {first.replica, second.replica} == {0, 1}
    wait_for(lambda: len(first.lines) > 3 and len(second.lines) > 3, REQUEST_S, "both streams running")
    victim = first.replica
    lost = ingress.replica(victim)
    cluster.remove_node(by_id[lost["node"]], allow_graceful=False)  # the whole node: raylet and workers

    assert first.done.wait(REQUEST_S), "the doomed stream did not end"
    error = first.error()
    assert error is not None and f"replica {victim}" in error["message"] and error["code"] == 503, first.lines[-3:]
    assert first.lines[-1] == "[DONE]"
    seen = len(second.lines)
    wait_for(lambda: len(second.lines) > seen + 3, REQUEST_S, "the other stream to keep streaming")
    params = {"max_new_tokens": 4, "ignore_eos": True, "custom_params": {"slo_ttft_ms": 5000}}
    r = httpx.post(ingress.url + "/generate", json={"text": "still here", "sampling_params": params}, timeout=REQUEST_S)
    assert r.status_code == 200 and r.headers["x-sloserve-replica"] == str(second.replica), r.text
    wait_for(lambda: refuses(lost["url"]), REQUEST_S, "the lost replica's server to be gone")  # not orphaned

    assert second.done.wait(REQUEST_S * 2) and second.error() is None, second.lines[-2:]
    meta = json.loads(second.lines[-2])["meta_info"]  # the last chunk before [DONE]: every token served
    assert meta["finish_reason"]["type"] == "length" and meta["completion_tokens"] == LONG_TOKENS, meta
    rep = wait_for(
        lambda: (lambda r: r if r["state"] == "live" else None)(ingress.replica(victim)), STARTUP_S, "the replacement"
    )
    assert rep["restarts"] == 1 and rep["node"] != lost["node"] and rep["node"] in by_id, rep  # on the surviving node
    r = httpx.post(ingress.url + "/generate", json={"text": "after", "sampling_params": params}, timeout=REQUEST_S)
    assert r.status_code == 200, r.text
    r = httpx.post(ingress.url + "/abort_request", json={"abort_all": True}, timeout=REQUEST_S)
    assert r.status_code == 200 and set(r.json()["replicas"]) == {"0", "1"}, r.text  # sent to every live replica
