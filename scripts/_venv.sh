# Shared by scripts/run, scripts/test and scripts/bench: make .venv and install the package
# (editable, which builds the Rust data plane in dataplane/ with maturin) with the given extras,
# only when pyproject.toml or the crate's sources changed since the last install.

# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH" ;; esac
export PATH

# What the installed package was built from: the metadata and every source of the crate.
build_inputs_digest() {
    local root="$1"
    (
        cd "$root" &&
            find pyproject.toml dataplane/Cargo.toml dataplane/Cargo.lock dataplane/src \
                -type f 2>/dev/null | LC_ALL=C sort | xargs sha256sum
    ) | sha256sum | cut -d' ' -f1
}

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
    want="$(build_inputs_digest "$root")"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] ||
        ! compgen -G "$root/appliance/_dataplane*.so" >/dev/null; then
        command -v cargo >/dev/null || {
            echo "cannot build the Rust data plane: install a Rust toolchain (cargo, rustc >= 1.85)" >&2
            return 1
        }
        "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
        local spec="$root"
        [ -n "$extras" ] && spec="$root[$extras]"
        "$venv/bin/python" -m pip install --quiet -e "$spec"
        echo "$want" > "$stamp"
    fi
}
