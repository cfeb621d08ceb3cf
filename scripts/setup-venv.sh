#!/usr/bin/env bash
# Create .venv (if missing) and install the locked toolchain and this package into it.
# Idempotent and fast when nothing changed: a stamp file holds the hash of requirements-lock.txt,
# pyproject.toml and the checkout's path, and the install is skipped while it matches.
#   PYTHON=/path/to/python3.11 bash scripts/setup-venv.sh   # choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ]; then
  echo "setup-venv: no python3.11 or python3 on PATH; install Python 3.11 (or set PYTHON=...)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup-venv: creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi

stamp="$venv/.prs-install-stamp"
want=$( (cat requirements-lock.txt pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import prs" 2>/dev/null; then
  exit 0
fi

echo "setup-venv: installing the locked toolchain into $venv (first time: several minutes)"
# torch and torchvision first, as a pair: a torchvision built for another torch does not import.
"$venv/bin/python" -m pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r requirements-lock.txt -e .
echo "$want" > "$stamp"
echo "setup-venv: done"
