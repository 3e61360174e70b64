# Sourced by the hooks. POSIX sh.
APPLIANCE_BIN=${APPLIANCE_BIN:-appliance}
APPLIANCE_CONFIG=${APPLIANCE_CONFIG:-/etc/appliance/appliance.toml}
APPLIANCE_DATA=${APPLIANCE_DATA:-/var/lib/appliance}
APPLIANCE_BACKUP_DIR=${APPLIANCE_BACKUP_DIR:-/var/backups/appliance}
APPLIANCE_SERVICE=${APPLIANCE_SERVICE:-appliance}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
APPLIANCE_HOOK_TIMEOUT=${APPLIANCE_HOOK_TIMEOUT:-120}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

# Run a step bounded in time; its exit code is returned.
step() { timeout "$APPLIANCE_HOOK_TIMEOUT" "$@"; }

check_config() {
    if ! step "$APPLIANCE_BIN" check-config "$APPLIANCE_CONFIG" >&2; then
        log "invalid configuration: $APPLIANCE_CONFIG"
        exit 2
    fi
}

# A config whose data_dir is the hook's data dir, for the db subcommands.
db() {
    step "$APPLIANCE_BIN" db "$@" --config "$APPLIANCE_CONFIG"
}
