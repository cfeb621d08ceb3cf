#!/usr/bin/env bash
# Build the book: set up .venv, execute every notebook under a profile, build _build/html.
#   bash scripts/book.sh            # smoke profile: CPU, synthetic data, minutes
#   bash scripts/book.sh full       # the documented recipe on a GPU (see book/cost.md)
#   bash scripts/book.sh smoke --only 02_fourier     # further options go to `prs reproduce`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
profile=${1:-smoke}
shift || true
exec .venv/bin/prs reproduce --profile "$profile" "$@"
