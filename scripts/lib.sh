# Shared set-up for scripts/: sourced, not run. Everything a fresh Debian machine lacks is
# installed here, so CI and new users start bare.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# apt_install PKG...: install the Debian packages that are missing, updating the index once.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv: a venv without system site-packages (the base interpreter's .pth hooks cost
# tens of milliseconds per start), with the project and its dev tools installed.
ensure_venv() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    if ! "$PY" -c "import cni_bridge, pydantic, pyroute2, pytest, PyInstaller" 2>/dev/null; then
        "$PY" -m pip install -q --upgrade pip
        "$PY" -m pip install -q -e "$ROOT[dev]"
    fi
}

# plugin_names: the plugins we ship, from the one list in cni_bridge/suite.py (it imports
# nothing, so any python3 can read it, venv or not).
plugin_names() {
    local py=$PY
    [ -x "$py" ] || py=python3
    PYTHONPATH="$ROOT" "$py" -S -c 'from cni_bridge.suite import PLUGINS; print(*PLUGINS)'
}
