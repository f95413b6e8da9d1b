#!/usr/bin/env bash
# Set up neurosim in ./.venv on a fresh machine (idempotent).
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --dev    plus test tools, Brian2, and the system packages tests need
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras}"
echo "neurosim installed in .venv ($(.venv/bin/python -c 'import neurosim; print(neurosim.__version__)'))"
