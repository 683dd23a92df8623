# Sourced by the other scripts: make sure ./.venv holds this project and its test extra.
# The install is skipped when pyproject.toml has not changed since the last one, so a second
# run starts at once. Override the interpreter with PYTHON=/path/to/python3.11.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SWARM_VENV:-$repo_root/.venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "swarm needs Python >= 3.11; '$python' is $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "[swarm] creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.swarm-installed"
want="$(cat "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[swarm] installing swarm and its dependencies into $venv (first run only, a few minutes)" >&2
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$repo_root[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "[swarm] installation failed; the full log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export FLWR_TELEMETRY_ENABLED=0
export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
cd "$repo_root"
