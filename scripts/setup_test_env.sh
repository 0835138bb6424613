#!/usr/bin/env bash
# Installs sloserve with its test dependencies, plus a CPU-only SGLang for the adapter tests
# (never the CUDA wheels). Idempotent: fast when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]'
if [ -f scripts/install_sglang_cpu.sh ]; then
  bash scripts/install_sglang_cpu.sh
fi
