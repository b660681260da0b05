#!/usr/bin/env bash
# Benchmark of compression and encryption (issue 11): what zstd + age cost offsite's backup and
# restore, against plain backups and against restic, peers in the same run. Prints markdown
# tables on stdout (progress on stderr).
#
#   scripts/bench-codec.sh [wan|local|rss|restic|all]      (default: all)
#
# Variants (offsite.toml, shard_size 64MiB, shards_in_flight 4, concurrency 2):
#   plain     compression = "none", no [encryption]: a backup as before issue 11
#   zstd+age  compression = "zstd" (level 3, the default) and [encryption] with one recipient
#             from `offsite keygen`; identity_file set so that restores decrypt
#   age       compression = "none" with [encryption]: the cost of age alone (local section)
# Sections:
#   wan     a compressible 1 GiB stream (`tar -c /usr/lib`, cut to 1 GiB, made once, streamed
#           with `cat`) backed up to three `rclone serve webdav` servers capped at 40/60/80
#           MiB/s, plain vs zstd+age. Target: zstd+age seconds <= stored / 40 MiB/s x 1.05.
#           Also the servers' CPU seconds and the CPU floor ((CPU + servers') / cores): the
#           servers share this machine's cores. Between runs the servers' folders are purged
#           through rclone (`rclone serve` caches listings: deleting behind it leaves them stale).
#   local   1 GiB of random data to three directories: backup, restore to /dev/null and restore
#           to a file (compared with the stream), per variant. Target: encrypted >= 80% of
#           plain's MiB/s, backup and restore. The CPU floor column is CPU / cores.
#   rss     zstd+age backup of random streams of 512 MiB and 2 GiB to three directories: peak
#           RSS against shards_in_flight x shard_size x 2 + 64 MiB (576 MiB here).
#   restic  the wan section's tar stream: `restic backup --stdin` into a local repository vs
#           offsite zstd+age into one local directory: seconds, CPU, stored bytes (du -sb).
# Every measurement runs BENCH_RUNS times (default 2), the variants alternating in order; the
# tables show the median, every run's seconds and the 1-minute load average at each run's start.
# CPU is user + sys of the tool and the children it waited for (offsite's rclone and `cat`;
# not the webdav servers). Peak RSS is GNU time's %M: the largest single process.
#
# Environment: BENCH_RUNS, BENCH_BYTES (wan/local/restic stream, default 1GiB), BENCH_RSS_SIZES
# (default "512MiB 2GiB"), BENCH_TAR_SRC (default /usr/lib), BENCH_DIR (work dir parent),
# BENCH_KEEP=1, BENCH_STREAMS (a directory where the streams are made once and kept between
# runs; default: the work dir), OFFSITE (default target/release/offsite), BENCH_OFFSITE_TOML
# (extra top-level offsite.toml lines), BENCH_PROFILE=1 (per-thread CPU of each run, on stderr).
set -euo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
SHARD_MIB=64
SIF=4 # shards_in_flight
WAN_LIMITS=(40 60 80)
RUNS=${BENCH_RUNS:-2}
unset AWS_CA_BUNDLE
BENCH_NAME=bench-codec.sh
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

# ---- streams and keys ----

# random_file BYTES : a file of BYTES random bytes in the work dir, made once.
random_file() {
    local f=$STREAMS/random-$1.bin
    [[ -f $f ]] || {
        log "writing $(human "$1") of random data"
        head -c "$1" /dev/urandom >"$f"
    }
    echo "$f"
}

# tar_file BYTES : BENCH_TAR_SRC as a tar stream cut to BYTES, made once.
tar_file() {
    local f=$STREAMS/tar-$1.bin src=${BENCH_TAR_SRC:-/usr/lib}
    [[ -f $f ]] || {
        log "writing a tar of $src cut to $(human "$1")"
        { tar -cf - -C / "${src#/}" 2>/dev/null || true; } | head -c "$1" >"$f"
        (($(stat -c %s "$f") == $1)) || die "a tar of $src is shorter than $(human "$1")"
    }
    echo "$f"
}

KEY= RECIPIENT=
make_key() {
    KEY=$WORK/identity.txt
    "$OFFSITE" keygen --output "$KEY" 2>"$WORK/keygen.log" || die "offsite keygen failed: $(cat "$WORK/keygen.log")"
    RECIPIENT=$(grep -o 'age1[0-9a-z]*' "$WORK/keygen.log" | head -1)
    [[ -n $RECIPIENT ]] || die "no recipient in offsite keygen's output: $(cat "$WORK/keygen.log")"
}

# ---- offsite configs ----

# write_config DIR VARIANT STREAM REMOTE... : an offsite config in DIR (state wiped) backing up
# `cat STREAM` as dataset "stream" to the remotes given.
write_config() {
    local dir=$1 variant=$2 stream=$3 n=0 r comp=zstd
    shift 3
    rm -rf "$dir"
    mkdir -p "$dir/providers.d" "$dir/state"
    for r; do
        n=$((n + 1))
        printf 'remote = %s\npriority = %d\n' "$(toml_str "$r")" "$n" >"$dir/providers.d/p$n.toml"
    done
    [[ $variant == zstd+age ]] || comp=none
    {
        printf 'host = "bench"\nstate_dir = %s\n' "$(toml_str "$dir/state")"
        printf 'rclone_config = %s\n' "$(toml_str "$WORK/rclone.conf")"
        printf 'shard_size = "%dMiB"\nshards_in_flight = %d\n' "$SHARD_MIB" "$SIF"
        printf 'compression = "%s"\n%s\n' "$comp" "${BENCH_OFFSITE_TOML:-}"
        if [[ $variant != plain ]]; then
            printf '[encryption]\nrecipients = ["%s"]\nidentity_file = %s\n\n' \
                "$RECIPIENT" "$(toml_str "$KEY")"
        fi
        printf '[[dataset]]\nname = "stream"\ncommand = %s\n' \
            "$(toml_str "cat $(printf '%q' "$stream")")"
    } >"$dir/offsite.toml"
}

# check_encoding VARIANT DIR : a note when DIR's shard objects do not carry VARIANT's suffix.
check_encoding() {
    local want got
    case $1 in
    *zstd+age*) want=.zst.age ;;
    *age*) want=.age ;;
    *) want=plain ;;
    esac
    got=$(object_suffixes "$2")
    [[ $got == "$want" ]] || echo "objects are '$got', expected '$want'"
}

# offsite_backup SECTION VARIANT RUN DIR BYTES : one timed backup with DIR's config, a row.
offsite_backup() {
    local section=$1 variant=$2 run=$3 dir=$4 bytes=$5 note
    log "$section / $variant / backup, run $run: $(human "$bytes")"
    local servers_before
    servers_before=$(servers_ticks)
    timed "$dir/backup.log" "$OFFSITE" --config "$dir/offsite.toml" --no-progress backup --once
    if [[ $section == wan ]]; then
        printf '%s|%s\n' "$variant" "$(ticks_secs "$(($(servers_ticks) - servers_before))")" \
            >>"$WORK/server_cpu"
    fi
    note=$(run_note "$dir/backup.log")
    [[ -n $note ]] || note=$(check_encoding "$variant" "${DIRS[0]}")
    add_row "$section" "$variant" backup "$run" "$bytes" "$(dir_bytes "${DIRS[0]}")" "$note"
}

# offsite_restore SECTION VARIANT RUN DIR BYTES STREAM OUT : one timed restore to OUT, a row.
offsite_restore() {
    local section=$1 variant=$2 run=$3 dir=$4 bytes=$5 stream=$6 out=$7 op note
    op="restore to $out"
    [[ $out == /dev/null ]] || op="restore to a file"
    rm -f "$WORK/out.bin"
    log "$section / $variant / $op, run $run"
    timed "$dir/restore.log" "$OFFSITE" --config "$dir/offsite.toml" --no-progress \
        restore stream --output "$out"
    note=$(run_note "$dir/restore.log")
    if [[ -z $note && $out != /dev/null ]] && ! cmp -s "$out" "$stream"; then
        note="restored bytes differ from the stream"
    fi
    rm -f "$WORK/out.bin"
    add_row "$section" "$variant" "$op" "$run" "$bytes" - "$note"
}

# ---- sections ----

DIRS=()
local_dirs() { # N : N fresh local provider directories in DIRS
    local n
    DIRS=()
    for ((n = 1; n <= $1; n++)); do
        rm -rf "$WORK/local/dir$n"
        mkdir -p "$WORK/local/dir$n"
        DIRS+=("$WORK/local/dir$n")
    done
}

# ordered RUN VARIANT... : the variants, reversed on even runs.
ordered() {
    local run=$1
    shift
    if ((run % 2)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

section_wan() {
    local bytes=$1 stream run variant n remotes=()
    stream=$(tar_file "$bytes")
    mkdir -p "$WORK/wan"
    : >"$WORK/rclone.conf"
    for n in 1 2 3; do
        mkdir -p "$WORK/wan/dir$n"
        start_webdav "$WORK/wan/dir$n" "${WAN_LIMITS[n - 1]}"
        printf '[p%d]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$n" "$URL" >>"$WORK/rclone.conf"
        remotes+=("p$n:")
        log "webdav server $n: $URL at ${WAN_LIMITS[n - 1]} MiB/s"
    done
    DIRS=("$WORK/wan/dir1" "$WORK/wan/dir2" "$WORK/wan/dir3")
    for ((run = 1; run <= RUNS; run++)); do
        for variant in $(ordered "$run" plain zstd+age); do
            # Through the servers, not behind their backs: `rclone serve` caches listings, and
            # objects deleted under it stay listed (their reads then fail and are retried).
            for n in "${remotes[@]}"; do
                rclone --config "$WORK/rclone.conf" purge "${n}bench" 2>/dev/null || true
            done
            [[ -z $(find "${DIRS[@]}" -mindepth 1 -print -quit) ]] ||
                die "the webdav servers' folders are not empty after rclone purge"
            write_config "$WORK/cfg-wan" "$variant" "$stream" "${remotes[@]}"
            offsite_backup wan "$variant" "$run" "$WORK/cfg-wan" "$bytes"
        done
    done
    stop_servers
}

section_local() {
    local bytes=$1 stream run variant dir out
    stream=$(random_file "$bytes")
    for ((run = 1; run <= RUNS; run++)); do
        for variant in $(ordered "$run" plain age zstd+age); do
            local_dirs 3
            dir=$WORK/cfg-local
            write_config "$dir" "$variant" "$stream" "${DIRS[@]}"
            offsite_backup local "$variant" "$run" "$dir" "$bytes"
            for out in /dev/null "$WORK/out.bin"; do
                offsite_restore local "$variant" "$run" "$dir" "$bytes" "$stream" "$out"
            done
        done
    done
}

section_rss() {
    local sizes=() s run size
    for s in ${BENCH_RSS_SIZES:-512MiB 2GiB}; do sizes+=("$(parse_size "$s")"); done
    for ((run = 1; run <= RUNS; run++)); do
        for size in $(ordered "$run" "${sizes[@]}"); do
            local_dirs 3
            write_config "$WORK/cfg-rss" zstd+age "$(random_file "$size")" "${DIRS[@]}"
            offsite_backup rss "zstd+age, $(human "$size")" "$run" "$WORK/cfg-rss" "$size"
        done
    done
}

restic_backup() { # RUN STREAM BYTES
    local repo=$WORK/restic note=''
    rm -rf "$repo" "$WORK/restic-cache"
    export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
    restic init -q --repository-version 2 -r "$repo" >"$WORK/restic-init.log" 2>&1 ||
        die "restic init failed: $(cat "$WORK/restic-init.log")"
    log "restic / backup --stdin, run $1"
    # shellcheck disable=SC2016 # $1, $2 expand in the inner shell
    timed "$WORK/restic.log" sh -c 'cat "$1" | restic -q -r "$2" backup --stdin --stdin-filename stream' \
        _ "$2" "$repo"
    note=$(run_note "$WORK/restic.log")
    add_row restic "restic 0.14 backup --stdin (zstd auto + AES)" backup "$1" "$3" \
        "$(du -sb "$repo" | cut -f1)" "$note"
}

section_restic() {
    local bytes=$1 stream run tool
    command -v restic >/dev/null || die "restic is missing (apt-get install restic)"
    stream=$(tar_file "$bytes")
    for ((run = 1; run <= RUNS; run++)); do
        for tool in $(ordered "$run" restic offsite); do
            if [[ $tool == restic ]]; then
                restic_backup "$run" "$stream" "$bytes"
                continue
            fi
            local_dirs 1
            write_config "$WORK/cfg-restic" zstd+age "$stream" "${DIRS[0]}"
            offsite_backup restic "offsite zstd+age, one directory" "$run" "$WORK/cfg-restic" "$bytes"
        done
    done
}

main() {
    local what=${1:-all} bytes
    case $what in
    wan | local | rss | restic | all) ;;
    *) die "usage: $0 [wan|local|rss|restic|all]" ;;
    esac
    [[ -x $OFFSITE ]] || die "no offsite binary at $OFFSITE: run cargo build --release"
    [[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
    command -v rclone >/dev/null || die "rclone is missing (apt-get install rclone)"
    bytes=$(parse_size "${BENCH_BYTES:-1GiB}")
    ((RUNS >= 1)) || die "BENCH_RUNS must be 1 or more"
    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-codec.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work dir $WORK"
    STREAMS=${BENCH_STREAMS:-$WORK}
    mkdir -p "$STREAMS"
    START_STATE=$(machine_state)
    make_key
    : >"$WORK/rclone.conf"
    case $what in
    all)
        section_wan "$bytes"
        section_local "$bytes"
        section_rss
        section_restic "$bytes"
        ;;
    rss) section_rss ;;
    *) "section_$what" "$bytes" ;;
    esac
    print_tables
}

main "$@"
