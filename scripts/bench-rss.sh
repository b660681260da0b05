#!/usr/bin/env bash
# Benchmark of offsite's memory over a long stream (issue 15): a backup's peak RSS must not
# grow with the stream's length. Prints a markdown table on stdout (progress on stderr).
#
#   sudo scripts/bench-rss.sh                    # 1 GiB, 8 GiB and 64 GiB
#   BENCH_SIZES="1GiB 4GiB" scripts/bench-rss.sh
#
# Setup: for each size in BENCH_SIZES, `offsite backup --once` of `command = "head -c SIZE
# /dev/zero"` (compression none, 64 MiB shards, default shards_in_flight 4) to three local
# providers, then `offsite restore --output /dev/null` of it. The providers are folders on a
# btrfs file system mounted with compress=zstd:1 on a loop device, so that 3 x 64 GiB of
# zeros takes almost no disk (root is needed for the mount; the providers have
# `--local-no-preallocate`, see setup). offsite hashes, uploads and checks every byte all the
# same. Peak RSS is offsite's own (GNU time's %M: the process, not
# its rclone children).
#
# Environment: BENCH_SIZES (default "1GiB 8GiB 64GiB"), BENCH_SHARD (64MiB), BENCH_DIR,
# BENCH_KEEP=1, OFFSITE (the binary; default target/release/offsite).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
unset AWS_CA_BUNDLE
BENCH_NAME=bench-rss.sh
# shellcheck source=bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

WORK=
MNT=
LOOP=
cleanup() {
    if [[ -n $MNT ]] && mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
    if [[ -n $LOOP ]]; then losetup -d "$LOOP" 2>/dev/null || true; fi
    if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n $WORK ]]; then
        log "kept $WORK"
    fi
}

setup() {
    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-rss.XXXXXX")
    trap cleanup EXIT
    truncate -s 8G "$WORK/fs.img"
    mkfs.btrfs -q "$WORK/fs.img" >/dev/null
    LOOP=$(losetup -f --show "$WORK/fs.img")
    MNT=$WORK/mnt
    mkdir -p "$MNT"
    mount -o compress=zstd:1 "$LOOP" "$MNT"
    write_providers "$WORK" "$MNT/p1" "$MNT/p2" "$MNT/p3"
    # rclone preallocates each file, and btrfs does not compress preallocated extents: 3 x 64
    # GiB would take the whole disk. (The flag also turns off offsite's direct local reads, so
    # restores here read through rclone's daemon.)
    local f
    for f in "$WORK"/providers.d/*.toml; do
        printf 'flags = ["--local-no-preallocate"]\n' >>"$f"
    done
}

# write_config SIZE
write_config() {
    cat >"$WORK/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$WORK/state")
shard_size = $SHARD
compression = "none"

[[dataset]]
name = "zeros"
command = "head -c $1 /dev/zero"
EOF
}

# measure WHAT ARGS... : runs offsite under GNU time; prints "seconds peak_rss_kib".
measure() {
    local what=$1
    shift
    /usr/bin/time -o "$WORK/time" -f '%e %M' "$OFFSITE" --config "$WORK/offsite.toml" \
        --no-progress "$@" >"$WORK/$what.log" 2>&1 || die "$what failed: $(tail -5 "$WORK/$what.log")"
    cat "$WORK/time"
}

ROWS=()
one_size() {
    local size=$1 bytes b r
    bytes=$(parse_size "$size")
    rm -rf "$WORK/state" "$MNT"/p?
    write_config "$bytes"
    log "$(human "$bytes"): backup"
    b=$(measure "backup-$size" backup --once)
    log "   $b; restore"
    r=$(measure "restore-$size" restore zeros --output /dev/null)
    log "   $r"
    ROWS+=("$(human "$bytes") $((bytes / SHARD)) $b $r")
}

print_table() {
    echo
    echo "offsite peak RSS: a stream of zeros, compression none, $(human "$SHARD") shards," \
        "shards_in_flight 4, 3 local providers (btrfs, compress=zstd:1), $(date -u +%F)," \
        "$(rclone version | head -1), $(nproc) CPUs"
    echo
    echo "| stream | shards | backup s | backup peak RSS MiB | restore s | restore peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|"
    local row
    for row in "${ROWS[@]}"; do
        # shellcheck disable=SC2086 # the row's fields, split on purpose
        set -- $row
        awk -v s="$1 $2" -v n="$3" -v bs="$4" -v bm="$5" -v rs="$6" -v rm="$7" 'BEGIN {
            printf "| %s | %d | %s | %.0f | %s | %.0f |\n", s, n, bs, bm / 1024, rs, rm / 1024 }'
    done
}

main() {
    [[ -x $OFFSITE ]] || die "$OFFSITE is missing (cargo build --release)"
    ((EUID == 0)) || die "needs root (a loop device and a mount)"
    SHARD=$(parse_size "${BENCH_SHARD:-64MiB}")
    setup
    local s
    for s in ${BENCH_SIZES:-1GiB 8GiB 64GiB}; do one_size "$s"; done
    print_table
}

main "$@"
