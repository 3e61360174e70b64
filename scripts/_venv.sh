# Shared by scripts/run, scripts/test and scripts/bench: make .venv and install the package
# (editable) with the given extras, only when pyproject.toml changed since the last install.
ensure_venv() {
    local extras="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="$root/.venv"
    local python="${PYTHON:-python3}"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv" || {
            echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)" >&2
            return 1
        }
    fi
    local stamp="$venv/.installed${extras:+-$extras}"
    local want
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
        local spec="$root"
        [ -n "$extras" ] && spec="$root[$extras]"
        "$venv/bin/python" -m pip install --quiet -e "$spec"
        echo "$want" > "$stamp"
    fi
}
