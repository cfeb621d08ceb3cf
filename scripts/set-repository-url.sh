#!/usr/bin/env bash
# Point the book at another repository: bash scripts/set-repository-url.sh https://github.com/ORG/REPO
# The URL is one setting, repository.url in _config.yml; this rewrites the copies that Colab needs
# literally (README badges, the notebooks' install cell). tests/test_notebooks.py checks they agree.
set -euo pipefail
cd "$(dirname "$0")/.."
new=${1:?usage: bash scripts/set-repository-url.sh https://github.com/ORG/REPO}
case "$new" in
  https://github.com/*/*) ;;
  *) echo "set-repository-url: expected https://github.com/ORG/REPO, got '$new'" >&2; exit 2 ;;
esac
new=${new%/}
old=$(sed -n 's/^  url: *\(https:[^ ]*\).*/\1/p' _config.yml | head -n1)
old_path=${old#https://github.com/}
new_path=${new#https://github.com/}
sed -i "s|$old|$new|g; s|github/$old_path/|github/$new_path/|g" _config.yml README.md notebooks/*.ipynb
echo "repository URL: $old -> $new"
