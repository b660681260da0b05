#!/usr/bin/env bash
# Benchmark of `offsite sync`: its cost is proportional to what is missing, and a repair
# between two throttled servers runs at the slower server's bandwidth. Prints a markdown table
# on stdout (progress goes to stderr).
#
#   scripts/bench-sync.sh [gap|wan|all]          (default: all)
#
# gap   three local providers behind tests/mock_rclone (which logs every rclone call). A full
#       backup of a stream of 100 shards, then one shard of the 100 is deleted on one provider
#       and `offsite sync` runs. The table shows both wall times and how many objects each run
#       uploaded (counted in the mock's log): the sync must upload exactly one.
# wan   two `rclone serve webdav --bwlimit` servers on 127.0.0.1, "slow" (40 MiB/s) and "fast"
#       (60 MiB/s). A backup to both, then the whole backup is deleted from one server and
#       `offsite sync` copies it back from the other, through this machine. No repair can beat
#       BYTES / 40 MiB/s: every byte goes through the slow server (into it when it is the one
#       repaired, out of it when it is the source). Both directions are measured.
#
# Environment:
#   BENCH_GAP_SHARD  shard size of the gap run (default 1MiB; the stream is 100 shards)
#   BENCH_BYTES      stream size of the wan run (default 512MiB)
#   BENCH_WAN_SHARD  shard size of the wan run (default 16MiB)
#   BENCH_DIR        where the temporary work dir goes (default $TMPDIR or /tmp)
#   BENCH_KEEP=1     keep the work dir (configs, logs, provider dirs)
#   OFFSITE          the binary (default target/release/offsite)
set -euo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
MOCK=$REPO/tests/mock_rclone
SLOW=40 # MiB/s
FAST=60
unset AWS_CA_BUNDLE
BENCH_NAME=bench-sync.sh
# shellcheck source=bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"





elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

WORK=

cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n $WORK ]]; then
        log "kept $WORK"
    fi
}

# write_config DIR SHARD STREAM RCLONE_CONF NAME=REMOTE... : offsite.toml and providers.d/.
write_config() {
    local dir=$1 shard=$2 stream=$3 conf=$4 i=0 spec
    shift 4
    mkdir -p "$dir/providers.d" "$dir/state"
    for spec; do
        i=$((i + 1))
        printf 'remote = %s\npriority = %d\n' "$(toml_str "${spec#*=}")" "$i" \
            >"$dir/providers.d/${spec%%=*}.toml"
    done
    cat >"$dir/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$dir/state")
rclone = $(toml_str "$MOCK")
rclone_config = $(toml_str "$conf")
shard_size = $(toml_str "$shard")
# Stored shards are the stream's bytes, so the checks below can compare them with it.
compression = "none"

[[dataset]]
name = "stream"
command = $(toml_str "cat $(printf '%q' "$stream")")
EOF
}

# offsite_run DIR LOGNAME ARGS... : runs offsite with the mock's log at DIR/LOGNAME.rclone.
offsite_run() {
    local dir=$1 name=$2
    shift 2
    # The mock logs one rclone per operation: no rclone daemon.
    OFFSITE_RCLONE_DAEMON=0 MOCK_RCLONE_REAL=$(command -v rclone) MOCK_RCLONE_LOG=$dir/$name.rclone \
        "$OFFSITE" --config "$dir/offsite.toml" --no-progress "$@" >"$dir/$name.out" 2>"$dir/$name.err" ||
        die "offsite $* failed ($?): $(tail -5 "$dir/$name.err")"
}

uploads() { grep -cE '^(rcat|copyto) ' "$1" || true; }

ROWS=() # "part|what|bytes|seconds|uploads|floor_seconds"

bench_gap() {
    local shard dir stream secs victim
    shard=$(parse_size "${BENCH_GAP_SHARD:-1MiB}")
    dir=$WORK/gap
    mkdir -p "$dir/p1" "$dir/p2" "$dir/p3"
    stream=$dir/stream.bin
    head -c $((100 * shard)) /dev/urandom >"$stream"
    : >"$dir/rclone.conf"
    write_config "$dir" "$shard" "$stream" "$dir/rclone.conf" p1="$dir/p1" p2="$dir/p2" p3="$dir/p3"

    log "gap: full backup of 100 shards of $(human "$shard") to 3 local providers"
    local t0
    t0=$(now)
    offsite_run "$dir" backup backup --once
    secs=$(elapsed "$t0")
    ROWS+=("gap|full backup, 3 providers|$((100 * shard))|$secs|$(uploads "$dir/backup.rclone")|-")

    victim=$(find "$dir/p2" -name 's0000000042-*')
    [[ -f $victim ]] || die "shard 42 not found on p2"
    rm "$victim"
    log "gap: deleted $(basename "$victim") on p2; sync"
    t0=$(now)
    offsite_run "$dir" sync sync
    secs=$(elapsed "$t0")
    local n
    n=$(uploads "$dir/sync.rclone")
    ROWS+=("gap|sync, 1 of 100 shards missing on p2|$shard|$secs|$n|-")
    [[ $n == 1 ]] || NOTES+=("gap: sync uploaded $n objects, expected 1")
    cmp -s "$victim" <(head -c $((43 * shard)) "$stream" | tail -c "$shard") ||
        NOTES+=("gap: the repaired shard differs from the source")
}


# repair DIR WIPED SOURCE BYTES : deletes the backup from WIPED's served dir and syncs it back.
repair() {
    local dir=$1 wiped=$2 source=$3 bytes=$4 t0 secs n got
    # Through the server: behind its back its directory cache would still list the objects.
    rclone --config "$dir/rclone.conf" purge "$wiped:bench"
    log "wan: backup deleted from $wiped; sync copies it back from $source"
    t0=$(now)
    offsite_run "$dir" "repair-$wiped" sync
    secs=$(elapsed "$t0")
    n=$(uploads "$dir/repair-$wiped.rclone")
    got=$(find "$dir/$wiped/bench" -type f -name 's*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    ((got == bytes)) || NOTES+=("wan: $wiped holds $got shard bytes after the repair, expected $bytes")
    ROWS+=("wan|repair $wiped from $source ($n objects)|$bytes|$secs|$n|$(floor "$bytes")")
}

floor() { awk -v b="$1" -v l="$SLOW" 'BEGIN { printf "%.2f", b / 2^20 / l }'; }

bench_wan() {
    local bytes shard dir stream t0 secs
    bytes=$(parse_size "${BENCH_BYTES:-512MiB}")
    shard=$(parse_size "${BENCH_WAN_SHARD:-16MiB}")
    dir=$WORK/wan
    mkdir -p "$dir"
    stream=$dir/stream.bin
    head -c "$bytes" /dev/urandom >"$stream"
    : >"$dir/rclone.conf"
    start_webdav "$dir/slow" "$SLOW"
    printf '[slow]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$URL" >>"$dir/rclone.conf"
    start_webdav "$dir/fast" "$FAST"
    printf '[fast]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$URL" >>"$dir/rclone.conf"
    log "wan: slow at $SLOW MiB/s, fast at $FAST MiB/s; $(human "$bytes") in $(human "$shard") shards"
    write_config "$dir" "$shard" "$stream" "$dir/rclone.conf" slow=slow: fast=fast:

    t0=$(now)
    offsite_run "$dir" backup backup --once
    secs=$(elapsed "$t0")
    ROWS+=("wan|full backup to both|$bytes|$secs|$(uploads "$dir/backup.rclone")|$(floor "$bytes")")
    repair "$dir" slow fast "$bytes"
    repair "$dir" fast slow "$bytes"
}

print_table() {
    local row part what b secs n fl
    echo
    echo "offsite sync: cost of a gap, and repair speed between throttled servers;" \
        "$(date -u +%F), $(rclone version | head -1), $(nproc) CPUs"
    echo
    echo "| part | run | bytes | seconds | MiB/s | uploads | floor s | floor / seconds |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r part what b secs n fl <<<"$row"
        awk -v p="$part" -v w="$what" -v b="$b" -v s="$secs" -v n="$n" -v f="$fl" \
            -v h="$(human "$b")" 'BEGIN {
                rate = (s > 0) ? sprintf("%.1f", b / 2^20 / s) : "-"
                share = (f == "-" || s == 0) ? "-" : sprintf("%.0f%%", 100 * f / s)
                printf "| %s | %s | %s | %.2f | %s | %s | %s | %s |\n", p, w, h, s, rate, n, f, share }'
    done
    echo
    echo "uploads: rcat/copyto calls in the mock_rclone log (shards and manifests)."
    echo "floor: bytes / ${SLOW} MiB/s, the slow server's bandwidth; floor / seconds is the share of it reached."
    if ((${#NOTES[@]})); then
        echo
        echo "Notes:"
        for row in "${NOTES[@]}"; do echo "- $row"; done
    fi
}

NOTES=()

main() {
    local part=${1:-all}
    case $part in
    gap | wan | all) ;;
    *) die "usage: $0 [gap|wan|all]" ;;
    esac
    command -v rclone >/dev/null || die "rclone is missing (apt-get install rclone)"
    [[ -x $OFFSITE ]] || die "$OFFSITE is missing: cargo build --release (or set OFFSITE)"
    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-sync.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work dir $WORK"
    if [[ $part == gap || $part == all ]]; then bench_gap; fi
    if [[ $part == wan || $part == all ]]; then bench_wan; fi
    print_table
}

main "$@"
