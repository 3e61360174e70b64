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
        build_package "$root" "$venv" "$spec" || return 1
        echo "$want" > "$stamp"
    fi
}

# llvm-profdata of the LLVM that rustc is built on (rustup's llvm-tools component, added when
# missing): rustc's raw profiles are read only by their own LLVM's tool.
llvm_profdata() {
    local sysroot host tool
    sysroot="$(rustc --print sysroot 2>/dev/null)" || return 1
    host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
    tool="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
    if [ ! -x "$tool" ] && command -v rustup >/dev/null; then
        rustup component add llvm-tools >/dev/null 2>&1 || true
    fi
    [ -x "$tool" ] && echo "$tool"
}

# Install the package editable, its Rust data plane built with profile-guided optimisation:
# built instrumented, trained on the per-message paths (scripts/pgo_train.py), built again
# with the profile (as pydantic-core's release wheels are). The per-line path touches more
# code than the first-level instruction cache holds, and the profile lays the hot blocks out
# together: README "The native data plane (Rust)", "Profile-guided build". APPLIANCE_PGO=0,
# or a step that fails (no llvm-tools, a training run's error), gives the plain build, with
# a line saying why.
build_package() {
    local root="$1" venv="$2" spec="$3"
    local pip=("$venv/bin/python" -m pip install --quiet -e "$spec")
    if [ "${APPLIANCE_PGO:-1}" = 0 ]; then
        "${pip[@]}"
        return
    fi
    local profdata work
    if ! profdata="$(llvm_profdata)"; then
        echo "profile-guided build skipped: no llvm-profdata (rustup component add llvm-tools); a plain build" >&2
        "${pip[@]}"
        return
    fi
    work="$(mktemp -d "${TMPDIR:-/tmp}/appliance-pgo.XXXXXX")"
    echo "building the data plane instrumented, training it, building it with the profile" >&2
    if RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$work/raw" "${pip[@]}" &&
        "$venv/bin/python" "$root/scripts/pgo_train.py" 2>"$work/train.log" &&
        "$profdata" merge -o "$work/merged.profdata" "$work"/raw/*.profraw &&
        RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$work/merged.profdata" "${pip[@]}" --no-deps; then
        rm -rf "$work"
        return 0
    fi
    echo "profile-guided build failed; a plain build. The training's last lines ($work/train.log):" >&2
    tail -n 20 "$work/train.log" >&2 2>/dev/null || true
    "${pip[@]}"
}
