"""A local Ray cluster for the multi-node tests: a head node with no CPUs for actors and two
worker nodes with two CPUs each, so every replica lands on a worker (test_ray_multinode.py,
test_sglang_ray.py). Import only where Ray is installed (the tests importorskip it first)."""

from __future__ import annotations

from collections.abc import Iterator

from ray import cluster_utils


def two_worker_cluster() -> Iterator[cluster_utils.Cluster]:
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=2)
    c.wait_for_nodes()
    yield c
    c.shutdown()
