#!/usr/bin/env bash
# Re-resolve requirements/base.in in a scratch venv and pin the result in requirements/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=$(ls "$(pyenv root 2>/dev/null || echo ~/.pyenv)"/versions/3.12*/bin/python3 2>/dev/null | head -n 1)
"${PYTHON312:-${py:-python3.12}}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -r requirements/base.in
{ echo '# Full pinned environment (pip freeze of a venv built from base.in). Regenerate with `make lock`.'
  "$tmp/venv/bin/pip" freeze; } > requirements/constraints.txt
echo "pinned $(grep -c '==' requirements/constraints.txt) packages"
