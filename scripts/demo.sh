#!/usr/bin/env bash
# Quick start for offsite on a fresh Debian machine: everything in one folder, nothing outside it
# but a small zfs-fuse pool (named $DEMO_POOL) whose disk is a file in that folder.
#
#   scripts/demo.sh            install rclone if missing, build, set up ./demo, back up, list,
#                              restore and compare, damage one provider, repair it, verify
#   scripts/demo.sh clean      destroy the demo pool and delete the demo folder
#
# The demo folder ($DEMO_DIR, default ./demo) holds:
#   offsite.toml            the config: a `command` dataset (a tar of /usr/share/doc) and, when
#                           zfs is available, a `zfs` dataset
#   providers.d/diskN.toml  three providers, plain local directories standing in for clouds
#   remotes/diskN/          what the providers hold (offsite's layout: host/dataset/backup-id/...)
#   state/                  offsite's state_dir (locks, unfinished backups)
#   zpool.img, zfs/         the file-backed pool and where its datasets are mounted
#
# Re-running is fine: the config is rewritten, the pool is reused (a new file is added to it, so
# the next backup has something new), and offsite makes a new backup of every dataset.
# SKIP_BUILD=1 uses an existing binary ($OFFSITE, default target/release/offsite) without cargo.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-./demo}
mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
DEMO_POOL=${DEMO_POOL:-offsitedemo}
OFFSITE=${OFFSITE:-$REPO/target/release/offsite} # or an installed binary
CONFIG=$DEMO_DIR/offsite.toml
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # zfs, zpool, zfs-fuse live in sbin
unset AWS_CA_BUNDLE

say() { printf '\n==> %s\n' "$*" >&2; }
run() {
    printf '+ %s\n' "$*" >&2
    "$@"
}
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        run "$@"
    else
        run sudo "$@"
    fi
}

# A TOML basic string holding $1 (paths may contain quotes or backslashes).
toml_str() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

pool_exists() { zpool list -H -o name "$DEMO_POOL" >/dev/null 2>&1; }

clean() {
    if command -v zpool >/dev/null && zpool list >/dev/null 2>&1 && pool_exists; then
        say "destroying zfs pool $DEMO_POOL"
        as_root zpool destroy "$DEMO_POOL"
    fi
    if [[ -f $CONFIG || -d $DEMO_DIR/remotes ]]; then
        say "removing $DEMO_DIR"
        run rm -rf "$DEMO_DIR"
    elif [[ -d $DEMO_DIR ]]; then
        rmdir "$DEMO_DIR" 2>/dev/null || echo "$DEMO_DIR is not a demo folder; left alone" >&2
    fi
}

install_rclone() {
    if command -v rclone >/dev/null; then
        return
    fi
    say "installing rclone"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone
}

build() {
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        [[ -x $OFFSITE ]] || { echo "SKIP_BUILD=1 but $OFFSITE is missing" >&2; exit 1; }
        return
    fi
    command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
    say "building offsite"
    (cd "$REPO" && run cargo build --release)
}

write_providers() {
    say "writing three local-directory providers in $DEMO_DIR/providers.d"
    mkdir -p "$DEMO_DIR/providers.d"
    local n
    for n in 1 2 3; do
        mkdir -p "$DEMO_DIR/remotes/disk$n"
        cat >"$DEMO_DIR/providers.d/disk$n.toml" <<EOF
# A local directory standing in for a cloud remote; see providers.d/ in the repo for real ones.
remote = $(toml_str "$DEMO_DIR/remotes/disk$n")
enabled = true
priority = $n
EOF
        echo "  disk$n -> $DEMO_DIR/remotes/disk$n" >&2
    done
}

# Sets ZFS_DS to a zfs dataset with some files in it; leaves it empty when zfs is unavailable.
ZFS_DS=
setup_zfs() {
    if ! command -v zpool >/dev/null || ! command -v zfs-fuse >/dev/null; then
        say "zfs not installed (apt-get install zfs-fuse): skipping the zfs dataset"
        return
    fi
    if ! zpool list >/dev/null 2>&1; then
        say "starting the zfs-fuse daemon"
        as_root zfs-fuse
        local i
        for ((i = 0; i < 60; i++)); do
            zpool list >/dev/null 2>&1 && break
            sleep 0.5
        done
        if ! zpool list >/dev/null 2>&1; then
            say "zfs-fuse did not start: skipping the zfs dataset"
            return
        fi
    fi
    local img=$DEMO_DIR/zpool.img mnt=$DEMO_DIR/zfs
    if pool_exists; then
        say "reusing zfs pool $DEMO_POOL"
    elif [[ -f $img ]]; then
        say "importing zfs pool $DEMO_POOL from $img"
        as_root zpool import -d "$DEMO_DIR" "$DEMO_POOL"
    else
        say "creating zfs pool $DEMO_POOL on $img (256 MiB file), mounted at $mnt"
        run truncate -s 256M "$img"
        as_root zpool create -m "$mnt" "$DEMO_POOL" "$img"
    fi
    local ds=$DEMO_POOL/data
    if ! zfs list -H -o name "$ds" >/dev/null 2>&1; then
        as_root zfs create "$ds"
    fi
    local dir
    dir=$(zfs get -H -o value mountpoint "$ds")
    if [[ ! -f $dir/README ]]; then
        echo "Files in the zfs dataset $ds, backed up by the offsite demo." >"$dir/README"
        mkdir -p "$dir/photos"
        head -c 3M /dev/urandom >"$dir/photos/holiday.raw"
        seq 1 100000 >"$dir/numbers.txt"
    fi
    date -u +"changed at %FT%TZ" >"$dir/run-$(date -u +%Y%m%dT%H%M%S.%N).txt"
    echo "  $ds mounted at $dir: $(find "$dir" -type f | wc -l) files" >&2
    ZFS_DS=$ds
}

write_config() {
    say "writing $CONFIG"
    mkdir -p "$DEMO_DIR/state"
    {
        cat <<EOF
# offsite demo config, written by scripts/demo.sh (re-running it rewrites this file).
host = "demo"
state_dir = $(toml_str "$DEMO_DIR/state")
providers_dir = "providers.d"
shard_size = "16MiB"   # small, so that even this small demo makes several shards
min_providers = 2

[[dataset]]
name = "docs"
command = "tar -C /usr/share/doc -cf - ."
EOF
        if [[ -n $ZFS_DS ]]; then
            cat <<EOF

[[dataset]]
name = "zfs-data"
zfs = $(toml_str "$ZFS_DS")
EOF
        fi
    } >"$CONFIG"
    sed 's/^/  /' "$CONFIG" >&2
}

# Restores the newest backup of each dataset and compares it with its source.
restore_demo() {
    say "restoring docs to a file and comparing it with a fresh tar of the same folder"
    rm -f "$DEMO_DIR/docs.tar"
    run "$OFFSITE" --config "$CONFIG" restore docs --output "$DEMO_DIR/docs.tar"
    if tar -C /usr/share/doc -cf - . | cmp -s - "$DEMO_DIR/docs.tar"; then
        echo "docs: restored bytes are identical" >&2
    else
        echo "docs: restored bytes differ from a fresh tar (did /usr/share/doc change?)" >&2
    fi
    if [[ -n $ZFS_DS ]]; then
        local target=$DEMO_POOL/restored
        say "restoring zfs-data into $target and comparing the files"
        zfs destroy -r "$target" >/dev/null 2>&1 || true
        run "$OFFSITE" --config "$CONFIG" restore zfs-data --target "$target"
        run diff -r "$(zfs get -H -o value mountpoint "$ZFS_DS")" \
            "$(zfs get -H -o value mountpoint "$target")" && echo "zfs-data: files identical" >&2
    fi
}

# Damages one provider, shows the gaps, repairs it from the others, and checks every shard.
repair_demo() {
    say "damaging disk2: deleting every object it holds"
    find "$DEMO_DIR/remotes/disk2" -type f -delete
    run "$OFFSITE" --config "$CONFIG" status || echo "(exit $?: gaps, as expected)" >&2
    say "repairing disk2 from disk1 and disk3"
    run "$OFFSITE" --config "$CONFIG" sync --repair-provider disk2
    run "$OFFSITE" --config "$CONFIG" verify --deep
}

main() {
    if [[ ${1:-} == clean ]]; then
        clean
        return
    fi
    install_rclone
    build
    write_providers
    setup_zfs
    write_config

    say "backing up every dataset to the three providers"
    run "$OFFSITE" --config "$CONFIG" backup --once

    say "backups on the providers"
    run "$OFFSITE" --config "$CONFIG" list

    say "what the providers hold (disk1)"
    (cd "$DEMO_DIR/remotes/disk1" && find . -type f | sort | head -20) >&2

    restore_demo
    repair_demo

    say "done. Try: $OFFSITE --config $CONFIG status"
    echo "Remove everything with: DEMO_DIR=$DEMO_DIR DEMO_POOL=$DEMO_POOL $0 clean" >&2
}

main "$@"
