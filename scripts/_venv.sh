# Sourced by scripts/*: make .venv with the project installed (editable) for one profile
# ("run" = the package, "dev" = the package and everything the tests need). Idempotent: it
# reinstalls only when pyproject.toml changed.
ensure_venv() {
  local profile="$1" python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "fastapi_objects needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
    exit 1
  fi
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  local hash stamp extra=""
  hash=$(sha1sum pyproject.toml | cut -c1-12)
  stamp=".venv/.deps-$profile-$hash"
  [ "$profile" = dev ] && extra="[dev]"
  if [ ! -f "$stamp" ] && [ ! -f ".venv/.deps-dev-$hash" ]; then
    echo "installing fastapi_objects$extra into .venv ..." >&2
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e ".$extra" >&2
    rm -f .venv/.deps-"$profile"-*
    touch "$stamp"
  fi
}
