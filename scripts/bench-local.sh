#!/usr/bin/env bash
# Benchmark of offsite on local disks (issue 15): restore at disk speed, and CPU seconds per GiB
# next to rclone's own, in the same run. Prints a markdown table on stdout (progress on stderr).
#
#   scripts/bench-local.sh
#
# Setup: a BENCH_BYTES stream (default 1GiB) of random bytes, three local directories as
# providers, compression none, 64 MiB shards (BENCH_SHARD). Rows, each the median of BENCH_RUNS
# runs (default 3):
#   offsite backup        `offsite backup --once` of `command = "cat STREAM"` to the three
#   peer: rclone copyto   `rclone copyto STREAM DIR/x` to each directory in turn
#   offsite restore       `offsite restore --output /dev/null`, then `--output FILE`
#   peer: rclone cat      `rclone cat` of every shard of one provider in sequence, to /dev/null
#                         and to FILE, then `sync FILE` (offsite fsyncs a restored file too);
#                         the target: offsite restore no slower than this
# CPU is user + system seconds of the tool and the children it waited for (offsite's rclone
# processes included), per GiB of stream. The restored file is compared with the stream once.
#
# Put BENCH_DIR on a journalled file system (what a USB disk or NAS has): on ext4 without a
# journal (some VM images' root), every file created scans the inodes deleted in the last
# 5-40 s (`recently_deleted`), so runs that wipe and recreate 3,072 shard files measure the
# file system, not offsite (1 MiB shards: 8.95 s there against 7.27 s on a journalled one).
#
# Environment: BENCH_BYTES, BENCH_SHARD, BENCH_RUNS, BENCH_DIR (work dir parent), BENCH_KEEP=1,
# OFFSITE (the binary; default target/release/offsite), BENCH_OFFSITE_TOML (extra top-level
# offsite.toml lines).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
unset AWS_CA_BUNDLE
BENCH_NAME=bench-local.sh
# shellcheck source=bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

# The peers run as `bench-local.sh __peer_copy|__peer_cat ...`, so that time(1) measures them.
# peer_copy RCLONE_CONF STREAM DIR... : `rclone copyto` of the stream to each directory in turn.
peer_copy() {
    local conf=$1 stream=$2 d
    shift 2
    for d; do rclone --config "$conf" copyto "$stream" "$d/peer.bin"; done
}

# peer_cat RCLONE_CONF DIR OUT : `rclone cat` of every shard under DIR, in order, into OUT;
# then `sync OUT` (fsync) for a regular file: offsite's restore ends with one, a restore that
# says "done" is on disk.
peer_cat() {
    local conf=$1 dir=$2 out=$3 f
    while read -r f; do
        rclone --config "$conf" cat "$f"
    done < <(find "$dir" -name 's*' -type f | sort) >"$out"
    if [[ -f $out ]]; then sync "$out"; fi
}

case ${1:-} in
__peer_copy) shift; peer_copy "$@"; exit ;;
__peer_cat) shift; peer_cat "$@"; exit ;;
esac
[[ -x $OFFSITE ]] || die "no offsite binary at $OFFSITE: run cargo build --release"
[[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
BYTES=$(parse_size "${BENCH_BYTES:-1GiB}")
SHARD=${BENCH_SHARD:-64MiB}
RUNS=${BENCH_RUNS:-3}
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-local.XXXXXX")
cleanup() {
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

DIRS=("$WORK/p1" "$WORK/p2" "$WORK/p3")
STREAM=$WORK/stream.bin
OUT=$WORK/restored.bin
CONF=$WORK/conf
OFFSITE_ARGS=(--config "$CONF/offsite.toml" --no-progress)
SELF=$(realpath "${BASH_SOURCE[0]}")

write_config() {
    mkdir -p "${DIRS[@]}"
    write_providers "$CONF" "${DIRS[@]}"
    cat >"$CONF/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$WORK/state")
rclone_config = $(toml_str "$WORK/rclone.conf")
shard_size = $(toml_str "$SHARD")
compression = "none"
${BENCH_OFFSITE_TOML:-}

[[dataset]]
name = "stream"
command = $(toml_str "cat $STREAM")
EOF
    : >"$WORK/rclone.conf"
}

# timed LABEL CMD... : runs CMD under GNU time; appends "LABEL wall user sys" to $WORK/times.
# A `sync` first, untimed: the kernel's writeback of what the step before wrote (3 GiB after
# a backup) otherwise lands in whichever run follows it (a restore to a file measured 1.5-3.1 s
# for one binary from run to run). The page cache stays warm: reads measure the tool, not the
# VM's disk.
timed() {
    local label=$1
    shift
    sync
    /usr/bin/time -o "$WORK/time.out" -f '%e %U %S' "$@" >/dev/null 2>"$WORK/last.err" ||
        die "$label failed: $(tail -5 "$WORK/last.err")"
    echo "$label $(cat "$WORK/time.out")" >>"$WORK/times"
}


log "stream: $(human "$BYTES") of random bytes"
head -c "$BYTES" /dev/urandom >"$STREAM"
write_config
for ((r = 1; r <= RUNS; r++)); do
    log "run $r of $RUNS"
    wipe "${DIRS[@]}"
    rm -rf "$WORK/state"
    timed "offsite-backup" "$OFFSITE" "${OFFSITE_ARGS[@]}" backup --once
    timed "peer-copyto" "$SELF" __peer_copy "$WORK/rclone.conf" "$STREAM" "${DIRS[@]}"
    rm -f "${DIRS[@]/%//peer.bin}"
    timed "offsite-restore-null" "$OFFSITE" "${OFFSITE_ARGS[@]}" restore stream --output /dev/null --force
    timed "peer-cat-null" "$SELF" __peer_cat "$WORK/rclone.conf" "${DIRS[0]}" /dev/null
    rm -f "$OUT"
    timed "offsite-restore-file" "$OFFSITE" "${OFFSITE_ARGS[@]}" restore stream --output "$OUT"
    if [[ $r == 1 ]]; then cmp -s "$STREAM" "$OUT" || die "the restored file differs from the stream"; fi
    rm -f "$OUT"
    timed "peer-cat-file" "$SELF" __peer_cat "$WORK/rclone.conf" "${DIRS[0]}" "$OUT"
    rm -f "$OUT"
done

# median LABEL FIELD : the median of FIELD (2 wall, 3 user, 4 sys, 5 cpu) over the runs.
median() {
    awk -v l="$1" -v f="$2" '$1 == l { print (f == 5 ? $3 + $4 : $f) }' "$WORK/times" |
        sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

gib=$(awk -v b="$BYTES" 'BEGIN { print b / 2^30 }')
row() { # LABEL NAME PEER_LABEL
    local wall cpu pwall
    wall=$(median "$1" 2)
    cpu=$(median "$1" 5)
    pwall=$(median "$3" 2)
    awk -v n="$2" -v w="$wall" -v u="$(median "$1" 3)" -v s="$(median "$1" 4)" -v c="$cpu" \
        -v g="$gib" -v p="$pwall" -v b="$BYTES" 'BEGIN {
        printf "| %s | %.2f | %.0f | %.2f | %.2f | %.2f | %.2f |\n", n, w, b / 2^20 / w, u, s, c / g, w / p }'
}

echo "### bench-local.sh: $(human "$BYTES"), $SHARD shards, three local directories, median of $RUNS"
echo
echo "offsite $("$OFFSITE" --version | awk '{ print $2 }'), rclone $(rclone version | awk 'NR == 1 { print $2 }'), $(nproc) cores, load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| tool | seconds | MiB/s | user s | sys s | CPU s/GiB | x peer |"
echo "|---|---|---|---|---|---|---|"
row offsite-backup "offsite backup (3 copies)" peer-copyto
row peer-copyto "rclone copyto x3" peer-copyto
row offsite-restore-null "offsite restore > /dev/null" peer-cat-null
row peer-cat-null "rclone cat shards > /dev/null" peer-cat-null
row offsite-restore-file "offsite restore --output FILE" peer-cat-file
row peer-cat-file "rclone cat shards > FILE; sync FILE" peer-cat-file
