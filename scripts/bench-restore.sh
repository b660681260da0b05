#!/usr/bin/env bash
# Benchmark of `offsite restore` (issue 3): a restore striped across three bandwidth-limited
# providers against the best single-provider peer, on the same backup, in the same run.
# Prints a markdown table on stdout (progress on stderr).
#
#   scripts/bench-restore.sh
#
# Setup: a BENCH_BYTES stream (default 1GiB) is backed up with offsite (64 MiB shards) to three
# local directories, which three `rclone serve webdav` servers then serve with --bwlimit 40M,
# 60M and 80M (a server's limit is shared by all its connections). Each holds every shard.
#   offsite     `offsite restore DATASET --output FILE` through the three servers; the bytes are
#               compared with the stream. Peak RSS is GNU time's %M.
#   peer        `rclone cat` of the backup's shards from the fastest server (80 MiB/s).
#   limits      striped: bytes / (40 + 60 + 80) MiB/s; single: bytes / 80 MiB/s.
# Targets: offsite <= 1.25 x the striped limit, i.e. at least 1.8 x faster than the peer; peak
# RSS <= shards_in_flight x shard_size + 64 MiB whatever the stream's length (BENCH_MEM=1 adds
# a 4 GiB row, restored from the local directories).
#
# BENCH_HOG=N runs N CPU hogs (`sha256sum /dev/zero`) beside the restore and the peer, as on a
# small NAS with other work to do (target then: offsite <= 1.5 x the striped limit, and never
# slower than the peer).
#
# Environment: BENCH_BYTES, BENCH_MEM=1, BENCH_HOG=N, BENCH_DIR (work dir parent), BENCH_KEEP=1,
# OFFSITE, BENCH_OFFSITE_TOML (extra top-level offsite.toml lines, e.g. 'shards_in_flight = 8').
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
LIMITS=(40 60 80)
unset AWS_CA_BUNDLE
BENCH_NAME=bench-restore.sh
# shellcheck source=bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

[[ -x $OFFSITE ]] || die "no offsite binary at $OFFSITE: run cargo build --release"
[[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
BYTES=$(parse_size "${BENCH_BYTES:-1GiB}")
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-restore.XXXXXX")
HOGS=()
stop_hogs() {
    ((${#HOGS[@]} == 0)) || kill "${HOGS[@]}" 2>/dev/null || true
    HOGS=()
}
cleanup() {
    stop_hogs
    stop_servers
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

ROWS=() # "tool|bytes|seconds|rss MiB|note"

# config DIR REMOTE... : an offsite config in DIR with providers p1.. at the remotes given.
config() {
    local dir=$1
    shift
    write_providers "$dir" "$@"
    cat >"$dir/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$dir/state")
rclone_config = $(toml_str "$WORK/rclone.conf")
shard_size = "64MiB"
# The peers store the bytes as they are: so does offsite here (zstd is bench-codec.sh's).
compression = "none"
${BENCH_OFFSITE_TOML:-}

[[dataset]]
name = "stream"
command = $(toml_str "cat $(printf '%q' "$WORK/stream.bin")")
EOF
}

# timed CMD... : runs CMD under GNU time; sets SECS and RSS (MiB).
SECS='' RSS=''
timed() {
    /usr/bin/time -f '%e %M' -o "$WORK/time.out" "$@"
    read -r SECS RSS <"$WORK/time.out"
    RSS=$((RSS / 1024))
}

restore_row() { # LABEL CONFIG_DIR BYTES
    local label=$1 dir=$2 bytes=$3 note=ok
    rm -f "$WORK/out.bin"
    log "$label: offsite restore of $(human "$bytes")"
    timed "$OFFSITE" --config "$dir/offsite.toml" --no-progress -q restore stream --output "$WORK/out.bin"
    cmp -s "$WORK/out.bin" "$WORK/stream.bin" || note="BYTES DIFFER"
    ROWS+=("$label|$bytes|$SECS|$RSS|$note")
    rm -f "$WORK/out.bin"
}

main() {
    log "writing $(human "$BYTES") of random data"
    head -c "$BYTES" /dev/urandom >"$WORK/stream.bin"
    : >"$WORK/rclone.conf"
    local dirs=("$WORK/d1" "$WORK/d2" "$WORK/d3") n remotes=() id
    config "$WORK/local" "${dirs[@]}"
    log "backing up to three local directories"
    "$OFFSITE" --config "$WORK/local/offsite.toml" --no-progress -q backup --once

    for n in 0 1 2; do
        start_webdav "${dirs[n]}" "${LIMITS[n]}"
        printf '[w%d]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$n" "$URL" >>"$WORK/rclone.conf"
        remotes+=("w$n:")
        log "webdav server $n: $URL at ${LIMITS[n]} MiB/s"
    done
    config "$WORK/wan" "${remotes[@]}"
    for ((n = 0; n < ${BENCH_HOG:-0}; n++)); do
        sha256sum /dev/zero &
        HOGS+=($!)
    done
    ((${#HOGS[@]} == 0)) || log "${#HOGS[@]} CPU hog(s) running beside the restore and the peer"
    restore_row "offsite restore, striped over 3" "$WORK/wan" "$BYTES"

    id=$(basename "$(find "${dirs[2]}/bench/stream" -mindepth 1 -maxdepth 1 -type d)")
    log "peer: rclone cat from the 80 MiB/s server"
    timed sh -c "rclone --config '$WORK/rclone.conf' cat --include 's*' 'w2:bench/stream/$id' | wc -c > '$WORK/peer.bytes'"
    local note=ok
    [[ $(cat "$WORK/peer.bytes") == "$BYTES" ]] || note="read $(cat "$WORK/peer.bytes") bytes"
    ROWS+=("peer: rclone cat, fastest provider|$BYTES|$SECS|$RSS|$note")
    stop_hogs

    if [[ ${BENCH_MEM:-0} == 1 ]]; then
        stop_servers
        local big=$((4 << 30))
        log "memory: a 4 GiB stream"
        head -c "$big" /dev/urandom >"$WORK/stream.bin"
        rm -rf "${dirs[@]}" "$WORK/local/state"
        "$OFFSITE" --config "$WORK/local/offsite.toml" --no-progress -q backup --once
        restore_row "offsite restore, local (memory)" "$WORK/local" "$big"
    fi
    print_table
}

print_table() {
    local striped single row tool bytes secs rss note
    striped=$(awk -v b="$BYTES" 'BEGIN { printf "%.2f", b / 2^20 / 180 }')
    single=$(awk -v b="$BYTES" 'BEGIN { printf "%.2f", b / 2^20 / 80 }')
    printf '\noffsite restore vs. rclone cat: %s, 64 MiB shards, %s, %s, %d CPUs, %d CPU hog(s)\n\n' \
        "$(human "$BYTES")" "$(date +%F)" "$(rclone version | head -1)" "$(nproc)" "${BENCH_HOG:-0}"
    printf '| tool | bytes | seconds | MiB/s | x striped limit | peak RSS MiB | note |\n'
    printf '|---|---:|---:|---:|---:|---:|---|\n'
    printf '| limit: bytes / (40+60+80) MiB/s | %s | %s | 180 | 1.00 | - | |\n' "$(human "$BYTES")" "$striped"
    printf '| limit: bytes / 80 MiB/s (one provider) | %s | %s | 80 | %s | - | |\n' "$(human "$BYTES")" "$single" \
        "$(awk -v a="$single" -v b="$striped" 'BEGIN { printf "%.2f", a / b }')"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r tool bytes secs rss note <<<"$row"
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$tool" "$(human "$bytes")" "$secs" \
            "$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / 2^20 / s }')" \
            "$(awk -v s="$secs" -v b="$bytes" 'BEGIN { printf "%.2f", s / (b / 2^20 / 180) }')" \
            "$rss" "$note"
    done
}

main "$@"
