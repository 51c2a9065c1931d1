# Sourced by the other scripts: create or reuse .venv and install digitpairs into it (with the extras in $EXTRAS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { echo "digitpairs needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# TORCH_INDEX_URL: where torch comes from, e.g. PyTorch's CPU index on a machine without a GPU (README)
if [ -n "${TORCH_INDEX_URL:-}" ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "$(grep -o '^torch==[0-9.]*' constraints.txt)" --index-url "$TORCH_INDEX_URL"
fi
# the exact versions of constraints.txt: the same numbers from the same command on the same kind of machine
stamp=".venv/.digitpairs-installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
