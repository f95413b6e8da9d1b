#!/usr/bin/env bash
# Set up neurosim in ./.venv on a fresh machine (idempotent).
#   bash scripts/setup.sh          the package and its runtime dependencies
#   bash scripts/setup.sh --dev    plus test tools, Brian2, and the system packages tests need
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
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
echo "neurosim installed in .venv ($(.venv/bin/python -c 'import neurosim; print(neurosim.__version__)'))"
