#!/usr/bin/env bash
# Run every test: unit tests, the notebooks under the smoke profile (papermill, then nbval), the
# book build with warnings as errors, and a headless-Chromium check of the built HTML.
#   bash scripts/test.sh                  # everything
#   bash scripts/test.sh tests/test_experiments.py -q   # arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh

# The browser check needs Debian's chromium. Install it when we can (root with apt, as in CI);
# elsewhere tests/test_book.py skips that check with a message (in CI it fails instead).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium for the browser check"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: chromium is not installed and this is not root: the browser check will be skipped" >&2
  fi
fi

exec .venv/bin/python -m pytest "$@"
