#!/usr/bin/env bash
# Build the documentation site, warnings as errors: the API reference from the docstrings,
# the user guide, the gallery (every docs/gallery/plot_*.py runs and its figures are kept)
# and the notebooks (executed). Needs the dev install: bash scripts/setup.sh --dev
#   bash scripts/build_docs.sh [OUTDIR]     (default docs/_build/html)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/_build/html}"
rm -rf docs/auto_gallery docs/api/generated
MPLBACKEND=Agg .venv/bin/sphinx-build -W --keep-going -q -c docs -b html . "$out"
echo "documentation in $out/docs/index.html"
