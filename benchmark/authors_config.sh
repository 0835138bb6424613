#!/usr/bin/env bash
# Capacity per GPU on the SLOs-Serve authors' configuration: opt-13b-tp2-a100, 97,648 KV tokens,
# max sequence length 2038; chatbot on Azure conv 900:1200, coder on Azure code 1786:2086,
# summarizer with Azure conv 900:1200 arrivals and arXiv summarization lengths.
#   bash benchmark/authors_config.sh OUTDIR [extra capacity_table.py options, e.g. --policies ...]
set -euo pipefail
out=${1:?usage: authors_config.sh OUTDIR [options]}; shift
data=${SLOSERVE_DATA_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
common=(--model opt-13b-tp2-a100 --kv-tokens 97648 --max-seq-len 2038 --resolution 0.025)
mkdir -p "$out"
run() {  # scenario, then workload options
  local s=$1; shift
  python "$(dirname "$0")/capacity_table.py" --scenarios "$s" "${common[@]}" "$@" --json "$out/$s.json" > "$out/$s.md"
}
run chatbot --trace "$data/traces/AzureLLMInferenceTrace_conv.csv" --trace-window 900:1200 "$@"
run coder --trace "$data/traces/AzureLLMInferenceTrace_code.csv" --trace-window 1786:2086 "$@"
run summarizer --trace "$data/traces/AzureLLMInferenceTrace_conv.csv" --trace-window 900:1200 \
  --lengths "$data/traces/arxiv_summarization_lengths_llama2.csv" "$@"
cat "$out"/*.md
