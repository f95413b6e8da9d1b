#!/usr/bin/env bash
# Set up neurosim in ./.venv on a fresh machine (idempotent).
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --dev    plus test tools, Brian2, and the system packages tests need
#   bash scripts/setup.sh --cuda   the package with a CUDA build of PyTorch (docs/gpu.md); combine: --dev --cuda
#                                  NEUROSIM_TORCH_INDEX picks the wheel index (default: PyTorch's CUDA 13.0 wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
cuda=0
for arg in "$@"; do
    case "$arg" in
        --dev) extras="[dev]" ;;
        --cuda) cuda=1 ;;
        *) echo "usage: bash scripts/setup.sh [--dev] [--cuda]" >&2; exit 2 ;;
    esac
done
if [ -n "$extras" ]; then
    # the MQTT tests start their own mosquitto broker on a free loopback port (and openssl makes its TLS keys)
    missing=""
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="mosquitto"
    command -v openssl >/dev/null || missing="$missing openssl"
    if [ -n "$missing" ]; then
        sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        if [ -z "$sudo" ] || command -v sudo >/dev/null; then
            $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
        else
            echo "warning: cannot install$missing (needs root); the MQTT tests will fail" >&2
        fi
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras}"
if [ "$cuda" = 1 ]; then
    # the same pinned torch version (constraints.txt), as the CUDA build: "2.13.0+cu130" satisfies "==2.13.0"
    index="${NEUROSIM_TORCH_INDEX:-https://download.pytorch.org/whl/cu130}"
    torch_pin="$(grep -i '^torch==' constraints.txt)"
    .venv/bin/python -m pip uninstall --quiet --yes torch
    .venv/bin/python -m pip install --quiet --index-url "$index" -c constraints.txt "$torch_pin"
    .venv/bin/python -c 'import torch, sys
if torch.version.cuda is None:
    sys.exit(f"torch {torch.__version__} is a CPU build: the CUDA wheel was not installed")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); a GPU visible now: {torch.cuda.is_available()}")'
fi
echo "neurosim installed in .venv ($(.venv/bin/python -c 'import neurosim; print(neurosim.__version__)'))"
