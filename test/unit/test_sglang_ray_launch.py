"""``--backend sglang --ray-address``: which arguments the ingress keeps and which reach every replica."""

from __future__ import annotations

from sloserve.launch_server import main
from sloserve.sglang.ray_launch import parser, server_facts


def test_the_ingress_keeps_its_own_arguments_and_passes_the_rest_to_every_replica():
    argv = "--backend sglang --ray-address auto --data-parallel-size 3 --host 0.0.0.0 --port 8000 --api-key k"
    argv += " --model-path m --tp-size 2 --policy slos-serve --router slo-proactive --dp-attention-x 1"
    ns, rest = parser().parse_known_args(argv.split())
    assert (ns.dp_size, ns.host, ns.port, ns.api_key, ns.ray_address) == (3, "0.0.0.0", 8000, "k", "auto")
    # The replicas get the model, SGLang's own arguments and sloserve's (their --router is moot at dp 1);
    # a prefix of an ingress option (--dp-...) is not taken for it.
    assert rest == "--model-path m --tp-size 2 --policy slos-serve --router slo-proactive --dp-attention-x 1".split()
    facts = server_facts(rest)
    assert (facts.model_path, facts.tp_size, facts.device) == ("m", 2, "cuda")


def test_bad_ray_arguments_are_refused_before_ray_starts(capsys):
    assert main(["--backend", "sglang", "--ray-address", "local", "--dp-size", "0"]) == 2
    assert main(["--backend", "sglang", "--ray-address", "local", "--router", "nope"]) == 2
    assert "unknown router 'nope'" in capsys.readouterr().err
