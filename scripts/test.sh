#!/usr/bin/env bash
# Runs every check that CI runs, on a developer's machine or in CI (.ci/run execs this):
#
#   1. installs what the tests need, only if something is missing (Debian: apt-get):
#      rclone, zfs-fuse, btrfs-progs, GNU time, age and zstd (the encryption tests recover a
#      backup with these two CLIs, as README.md tells a user to), faketime (backups made at
#      other dates, for retention), and cargo-deb (the Debian package test) where dpkg-deb exists;
#   2. makes sure a zfs-fuse daemon answers (`zpool list`), starting one if needed;
#   3. cargo fmt --check, cargo clippy -D warnings, cargo test --release.
#
# Usage: scripts/test.sh [EXTRA CARGO TEST ARGS...]
#        e.g. scripts/test.sh -- --nocapture        scripts/test.sh --test cli backup
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
# OFFSITE_TEST_NO_ZFS=1 skips step 2 (for machines without /dev/fuse; zfs tests may then fail).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
unset AWS_CA_BUNDLE # keep an inherited CA bundle out of rclone's S3 backend
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # zfs, zpool, zfs-fuse live in sbin

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

install_missing() {
    local missing=()
    command -v rclone >/dev/null || missing+=(rclone)
    command -v zfs-fuse >/dev/null || missing+=(zfs-fuse)
    command -v btrfs >/dev/null || missing+=(btrfs-progs)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v age >/dev/null || missing+=(age)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v faketime >/dev/null || missing+=(faketime) # retention at other dates
    if ((${#missing[@]} == 0)); then
        return
    fi
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_zfs_daemon() {
    local i
    if [[ ${CI:-} == true ]] && pgrep -x zfs-fuse >/dev/null; then
        # A daemon left by an earlier session may be wedged (it still answers `zpool list` but
        # hangs in `zfs create`): in CI, start from a fresh one and forget old pools.
        log "CI: restarting the zfs-fuse daemon"
        as_root pkill -x zfs-fuse || true
        for ((i = 0; i < 60; i++)); do pgrep -x zfs-fuse >/dev/null || break; sleep 0.5; done
        as_root pkill -9 -x zfs-fuse || true
        as_root rm -f /var/lib/zfs/zpool.cache /etc/zfs/zpool.cache
    fi
    if zpool list >/dev/null 2>&1; then
        return
    fi
    log "starting the zfs-fuse daemon"
    as_root zfs-fuse
    for ((i = 0; i < 60; i++)); do # up to 30 s
        if zpool list >/dev/null 2>&1; then
            return
        fi
        sleep 0.5
    done
    log "zfs-fuse did not answer within 30 s (zpool list: $(zpool list 2>&1 | head -1))"
    log "set OFFSITE_TEST_NO_ZFS=1 to run the checks without it"
    exit 1
}

failed=()
step() {
    local name=$1
    shift
    log "$name: $*"
    if "$@"; then
        log "$name: ok"
    else
        log "$name: FAILED (exit $?)"
        failed+=("$name")
    fi
}

# cargo-deb, for the package test (scripts/package.sh); a few minutes, once per machine.
install_cargo_deb() {
    if command -v dpkg-deb >/dev/null && ! cargo deb --version >/dev/null 2>&1; then
        log "installing cargo-deb (cargo install cargo-deb --locked)"
        cargo install cargo-deb --locked
    fi
}

install_missing
install_cargo_deb
if [[ ${OFFSITE_TEST_NO_ZFS:-0} != 1 ]]; then
    ensure_zfs_daemon
fi

step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets -- -D warnings
step test cargo test --release "$@"

if ((${#failed[@]})); then
    log "failed: ${failed[*]}"
    exit 1
fi
log "all checks passed"
