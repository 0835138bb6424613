"""SGLang IPC cost of a request carrying SLO custom_params: msgpack encode + decode per request.

    python benchmark/sglang_ipc_speed.py [--rounds 200]

Needs sglang (scripts/install_sglang_cpu.sh on a CPU machine). Target: under 5 ms per request,
small next to a TTFT SLO of hundreds of milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from array import array

TARGET_MS = 5.0
SLO = {
    "slo_class": "chatbot",
    "slo_ttft_ms": 250.0,
    "slo_tpot_ms": 40.0,
    "slo_stage": "main",
    "slo_program_id": "prog-7",
    "slo_arrival_s": 1.7e9,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200, help="encode+decode round trips timed")
    args = parser.parse_args()
    from sloserve.sglang import gpu_stubs

    gpu_stubs.install()
    from sglang.srt.managers import io_struct
    from sglang.srt.sampling.sampling_params import SamplingParams

    req = io_struct.TokenizedGenerateReqInput(
        rid="req-1",
        input_text="hi",
        input_ids=array("q", [1, 2, 3, 4]),
        input_embeds=None,
        mm_inputs=None,
        token_type_ids=None,
        sampling_params=SamplingParams(max_new_tokens=32, custom_params=dict(SLO)),
        return_logprob=False,
        logprob_start_len=-1,
        top_logprobs_num=0,
        token_ids_logprob=None,
        stream=True,
    )
    start = time.perf_counter()
    for _ in range(args.rounds):
        io_struct.msgpack_decode(io_struct.msgpack_encode(req))
    per_ms = (time.perf_counter() - start) / args.rounds * 1e3
    print(f"msgpack round trip: {per_ms:.3f} ms per request (target < {TARGET_MS:g} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
