"""SLO-aware serving benchmark: SGLang bench_serving flags plus per-stage SLO attainment.

    python benchmark/bench_serving.py --base-url http://127.0.0.1:30000 --scenario reasoning \
        --num-prompts 200 --request-rate 4 --output-file runs.jsonl

See docs/benchmarking.md. The logic lives in sloserve.bench.
"""

import sys

from sloserve.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="bench_serving.py"))
