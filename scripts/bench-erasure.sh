#!/usr/bin/env bash
# Benchmark of erasure coding (issue 12): a 2+1 erasure-coded backup against a mirrored one on a
# simulated WAN, restores from all three providers and with each one gone, the rebuild of one
# provider's pieces, and the coding throughput of this machine. Markdown tables on stdout
# (progress on stderr).
#
#   scripts/bench-erasure.sh [wan|code|all]      (default: all)
#
# wan: 1 GiB (BENCH_BYTES) of random data, compression "none", no encryption, shard_size 64MiB,
#   shards_in_flight 4, to three `rclone serve webdav` servers capped at 40/60/80 MiB/s
#   (--bwlimit, both directions). Per run, the variants alternating in order:
#   - backup, mirrored (every server gets the whole stream) and erasure = "2+1" (each server
#     gets half). Targets: 2+1 within 5% of bytes / 2 / 40 MiB/s, and at most 0.55x mirrored.
#   - restore of the 2+1 backup to /dev/null from all three (target: 1.25x bytes / 180 MiB/s),
#     and with each server in turn gone (its provider file says `enabled = false`; target 1.3x
#     bytes / the two others' sum).
#   - rebuild: every object of one server deleted (through rclone), then
#     `offsite sync --repair-provider` (target: its bytes at >= 80% of its bandwidth).
#   Between backups the servers' folders are purged through rclone (`rclone serve` caches
#   listings: deleting behind it leaves them stale).
# code: examples/erasure-throughput.rs (64 MiB shards: encode and decode rates, 1 thread and
#   all cores), against the WAN limit's stream rate (2 x 40 MiB/s for 2+1; target 5x).
#
# Environment: BENCH_ONLY=backup (the backup rows only), BENCH_RUNS (default 2), BENCH_BYTES (default 1GiB), BENCH_DIR, BENCH_KEEP=1,
# BENCH_STREAMS (where the random stream is made once and kept), OFFSITE (default
# target/release/offsite).
set -euo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
SHARD_MIB=64
SIF=4
WAN_LIMITS=(40 60 80)
RUNS=${BENCH_RUNS:-2}
unset AWS_CA_BUNDLE
BENCH_NAME=bench-erasure.sh
# shellcheck source=bench-lib.sh
source "$REPO/scripts/bench-lib.sh"
# shellcheck source=bench-codec-lib.sh
source "$REPO/scripts/bench-codec-lib.sh"

WORK=
cleanup() {
    stop_servers
    if [[ -z $WORK ]]; then return; fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

random_file() { # BYTES : a file of BYTES random bytes, made once
    local f=$STREAMS/random-$1.bin
    [[ -f $f ]] || {
        log "writing $(human "$1") of random data"
        head -c "$1" /dev/urandom >"$f"
    }
    echo "$f"
}

# write_config DIR ERASURE STREAM : offsite config in DIR (state wiped) backing up `cat STREAM`
# as dataset "stream" to p1..p3 of $WORK/rclone.conf; ERASURE "none" mirrors.
write_config() {
    local dir=$1 erasure=$2 stream=$3 n
    rm -rf "$dir"
    mkdir -p "$dir/providers.d" "$dir/state"
    for n in 1 2 3; do
        printf 'remote = "p%d:"\npriority = %d\n' "$n" "$n" >"$dir/providers.d/p$n.toml"
    done
    {
        printf 'host = "bench"\nstate_dir = %s\n' "$(toml_str "$dir/state")"
        printf 'rclone_config = %s\n' "$(toml_str "$WORK/rclone.conf")"
        printf 'shard_size = "%dMiB"\nshards_in_flight = %d\ncompression = "none"\n' "$SHARD_MIB" "$SIF"
        [[ $erasure == none ]] || printf 'erasure = "%s"\n' "$erasure"
        printf '[[dataset]]\nname = "stream"\ncommand = %s\n' "$(toml_str "cat $(printf '%q' "$stream")")"
    } >"$dir/offsite.toml"
}

purge_all() {
    local n
    for n in 1 2 3; do rclone --config "$WORK/rclone.conf" purge "p$n:bench" 2>/dev/null || true; done
    [[ -z $(find "${DIRS[@]}" -mindepth 1 -print -quit) ]] ||
        die "the webdav servers' folders are not empty after rclone purge"
}

offsite_run() { # LOG ARGS... : one timed offsite run with $CFG
    local logf=$1
    shift
    timed "$logf" "$OFFSITE" --config "$CFG/offsite.toml" --no-progress "$@"
}

backup_row() { # RUN VARIANT ERASURE BYTES STREAM
    local run=$1 variant=$2 erasure=$3 bytes=$4 stream=$5 per
    purge_all
    write_config "$CFG" "$erasure" "$stream"
    log "wan / $variant / backup, run $run"
    offsite_run "$WORK/backup.log" backup --once
    per=$(dir_bytes "${DIRS[@]}" | paste -sd/)
    add_row wan "$variant" backup "$run" "$bytes" "$(dir_bytes "${DIRS[@]}" | awk '{ s += $1 } END { print s }')" \
        "$(run_note "$WORK/backup.log")"
    log "    per server: $per bytes"
    echo "$variant|$run|$per" >>"$WORK/per_server"
}

restore_rows() { # RUN BYTES
    local run=$1 bytes=$2 gone
    for gone in none 1 2 3; do
        sed -i 's/^enabled = false$//' "$CFG"/providers.d/*.toml
        [[ $gone == none ]] || echo 'enabled = false' >>"$CFG/providers.d/p$gone.toml"
        local op="restore, p$gone gone"
        [[ $gone != none ]] || op="restore from all three"
        log "wan / 2+1 / $op, run $run"
        offsite_run "$WORK/restore.log" restore stream --output /dev/null
        add_row wan "2+1" "$op" "$run" "$bytes" - "$(run_note "$WORK/restore.log")"
    done
    sed -i 's/^enabled = false$//' "$CFG"/providers.d/*.toml
}

repair_row() { # RUN BYTES VICTIM
    local run=$1 bytes=$2 v=$3 held
    held=$(dir_bytes "${DIRS[v - 1]}")
    rclone --config "$WORK/rclone.conf" purge "p$v:bench" 2>/dev/null || true
    log "wan / 2+1 / sync --repair-provider p$v, run $run ($(human "$held"))"
    offsite_run "$WORK/repair.log" sync --repair-provider "p$v"
    local note
    note=$(run_note "$WORK/repair.log")
    [[ $(dir_bytes "${DIRS[v - 1]}") == "$held" ]] || note="${note:+$note; }p$v holds $(dir_bytes "${DIRS[v - 1]}") bytes after the rebuild, $held before"
    add_row wan "2+1" "rebuild p$v" "$run" "$held" - "$note"
}

section_wan() {
    local bytes=$1 stream run variant n
    stream=$(random_file "$bytes")
    : >"$WORK/rclone.conf"
    DIRS=()
    for n in 1 2 3; do
        start_webdav "$WORK/wan/dir$n" "${WAN_LIMITS[n - 1]}"
        printf '[p%d]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$n" "$URL" >>"$WORK/rclone.conf"
        DIRS+=("$WORK/wan/dir$n")
        log "webdav server $n: $URL at ${WAN_LIMITS[n - 1]} MiB/s"
    done
    CFG=$WORK/cfg
    for ((run = 1; run <= RUNS; run++)); do
        for variant in $(if ((run % 2)); then echo "mirrored 2+1"; else echo "2+1 mirrored"; fi); do
            [[ $variant == mirrored ]] && backup_row "$run" mirrored none "$bytes" "$stream"
            [[ $variant == 2+1 ]] && backup_row "$run" 2+1 2+1 "$bytes" "$stream"
        done
        # The 2+1 backup of this run is the one on the servers when it ran second; else redo it.
        [[ $variant == 2+1 ]] || backup_row "$run" "2+1" 2+1 "$bytes" "$stream"
        [[ ${BENCH_ONLY:-} == backup ]] && continue
        restore_rows "$run" "$bytes"
        repair_row "$run" "$bytes" $(((run - 1) % 3 + 1))
    done
    stop_servers
}

table_wan() {
    local s v op b secs runs cpu rss stored notes target limit n mirrored=''
    local sum=$((WAN_LIMITS[0] + WAN_LIMITS[1] + WAN_LIMITS[2]))
    echo
    echo "### WAN: 1 GiB random, 3 webdav servers at ${WAN_LIMITS[*]} MiB/s, compression none"
    echo
    echo "| variant | operation | bytes | seconds (median) | runs: s (load) | target s | s / target | stored, all servers | CPU s | peak RSS MiB |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"
    while IFS='|' read -r s v op b secs runs cpu rss stored notes; do
        [[ $s == wan ]] || continue
        case $v/$op in
        mirrored/backup) target=$(awk -v b="$b" -v l="${WAN_LIMITS[0]}" 'BEGIN { printf "%.2f", b / 2^20 / l * 1.05 }')
            mirrored=$secs ;;
        2+1/backup) target=$(awk -v b="$b" -v l="${WAN_LIMITS[0]}" 'BEGIN { printf "%.2f", b / 2 / 2^20 / l * 1.05 }') ;;
        "2+1/restore from all three") target=$(awk -v b="$b" -v l="$sum" 'BEGIN { printf "%.2f", b / 2^20 / l * 1.25 }') ;;
        "2+1/restore, p"*) n=${op#restore, p}
            limit=$((sum - WAN_LIMITS[${n%% *} - 1]))
            target=$(awk -v b="$b" -v l="$limit" 'BEGIN { printf "%.2f", b / 2^20 / l * 1.3 }') ;;
        "2+1/rebuild p"*) limit=${WAN_LIMITS[${op##*p} - 1]}
            target=$(awk -v b="$b" -v l="$limit" 'BEGIN { printf "%.2f", b / 2^20 / l / 0.8 }') ;;
        *) target=- ;;
        esac
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$op" "$(human "$b")" "$secs" "$runs" \
            "$target" "$(awk -v s="$secs" -v t="$target" 'BEGIN { if (t == "-") print "-"; else printf "%.2f", s / t }')" \
            "$(if [[ $stored == - || -z $stored ]]; then echo -; else echo "$(mib "$stored") MiB"; fi)" "$cpu" "$(mib "$((rss << 10))")"
        [[ -z $notes ]] || NOTES+=("wan / $v / $op: $notes")
        if [[ $v/$op == 2+1/backup && -n $mirrored ]]; then
            NOTES+=("2+1 backup / mirrored backup: $(awk -v a="$secs" -v b="$mirrored" 'BEGIN { printf "%.2f", a / b }') (target <= 0.55)")
        fi
    done < <(groups)
    echo
    echo "targets: backup, bytes sent to the 40 MiB/s server / 40 MiB/s x 1.05 (mirrored: all of it; 2+1: half);"
    echo "restore, 1.25x bytes / $sum MiB/s; with one gone, 1.3x bytes / the others' sum; rebuild, the"
    echo "server's bytes at 80% of its bandwidth. bytes of a rebuild row: what the server held."
    echo
    echo "Bytes per server (p1/p2/p3) after each backup:"
    echo
    awk -F'|' '{ printf "- %s, run %s: %s\n", $1, $2, $3 }' "$WORK/per_server"
}

section_code() {
    log "code: cargo run --release --example erasure-throughput"
    (cd "$REPO" && cargo run -q --release --example erasure-throughput) >"$WORK/code.md" ||
        die "the erasure-throughput example failed"
}

NOTES=()
print_tables() {
    local n
    echo
    echo "## offsite erasure coding, $RUNS runs per row"
    echo
    echo "At the start: $START_STATE."
    grep -q '^wan|' "$WORK/rows" 2>/dev/null && table_wan
    if [[ -s $WORK/code.md ]]; then
        echo
        echo "### Coding throughput, 64 MiB stored shards (examples/erasure-throughput.rs)"
        echo
        cat "$WORK/code.md"
        echo
        echo "The WAN limit's stream rate for 2+1 is 2 x ${WAN_LIMITS[0]} MiB/s = $((2 * WAN_LIMITS[0])) MiB/s (target: encode >= 5x)."
    fi
    if ((${#NOTES[@]})); then
        echo
        echo "Notes:"
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
}

main() {
    local what=${1:-all} bytes
    case $what in
    wan | code | all) ;;
    *) die "usage: $0 [wan|code|all]" ;;
    esac
    [[ -x $OFFSITE ]] || die "no offsite binary at $OFFSITE: run cargo build --release"
    [[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
    command -v rclone >/dev/null || die "rclone is missing (apt-get install rclone)"
    bytes=$(parse_size "${BENCH_BYTES:-1GiB}")
    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-erasure.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work dir $WORK"
    STREAMS=${BENCH_STREAMS:-$WORK}
    mkdir -p "$STREAMS"
    START_STATE=$(machine_state)
    case $what in
    all)
        section_code
        section_wan "$bytes"
        ;;
    *) "section_$what" "$bytes" ;;
    esac
    print_tables
}

main "$@"
