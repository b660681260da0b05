#!/usr/bin/env bash
# Benchmark of resuming an interrupted backup: a backup that was ~90% done uploads at most 10%
# of the bytes plus one shard when re-run, and takes a matching share of a full run's time.
# Prints a markdown table on stdout (progress goes to stderr).
#
#   scripts/bench-resume.sh
#
# Setup: a stream of BENCH_BYTES random bytes (`command = "cat STREAM"`), three local providers,
# shard_size BENCH_SHARD, default concurrency (shards_in_flight 4, 2 uploads per provider),
# rclone behind tests/mock_rclone in every run (its log names every upload; its cost is a bash
# start per rclone call, the same in every run).
#   1. a full backup, timed;
#   2. the same backup from scratch, killed with SIGKILL once it is ~90% done: the mock hangs
#      the first upload of shard K = floor(0.9 * shards), and the kill comes once the mock's log
#      shows that upload, every provider holds shards 0..K-1 at full size and the resume
#      journal has recorded them;
#   3. the resume (`offsite backup --once` again), timed. Its uploads are the `rcat` lines of
#      the mock's log for this run; their bytes are the sizes of the shards they name.
# Both backups are checked: every provider's shards concatenate to the stream.
#
# Environment:
#   BENCH_BYTES  stream size (default 1GiB; accepts 512MiB, 2G, plain bytes)
#   BENCH_SHARD  shard size (default 64MiB)
#   BENCH_DIR    where the temporary work dir goes (default $TMPDIR or /tmp)
#   BENCH_KEEP=1 keep the work dir (configs, logs, provider dirs)
#   OFFSITE      the binary (default target/release/offsite)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
MOCK=$REPO/tests/mock_rclone
PROVIDERS=(p1 p2 p3)
unset AWS_CA_BUNDLE
BENCH_NAME=bench-resume.sh
# shellcheck source=scripts/bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ---- the setup ----

WORK=
BG_PID=
cleanup() {
    if [[ -n $BG_PID ]]; then kill -9 "$BG_PID" 2>/dev/null || true; fi
    if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n $WORK ]]; then
        log "kept $WORK"
    fi
}

# write_config STREAM SHARD : offsite.toml and providers.d for the three local providers.
write_config() {
    local n
    mkdir -p "$WORK/providers.d"
    for n in 1 2 3; do
        printf 'remote = %s\npriority = %d\n' "$(toml_str "$WORK/p$n")" "$n" >"$WORK/providers.d/p$n.toml"
    done
    cat >"$WORK/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$WORK/state")
rclone = $(toml_str "$MOCK")
shard_size = $2
# Stored shards are the stream's bytes, so the checks can concatenate them.
compression = "none"

[[dataset]]
name = "stream"
command = $(toml_str "cat $(printf '%q' "$1")")
EOF
    # The mock hangs and logs one rclone per operation: no rclone daemon.
    export OFFSITE_RCLONE_DAEMON=0 MOCK_RCLONE_REAL MOCK_RCLONE_LOG=$WORK/mock.log \
        MOCK_RCLONE_RULES=$WORK/mock.rules MOCK_RCLONE_STATE=$WORK/mock.state
    MOCK_RCLONE_REAL=$(command -v rclone)
}

# Forgets every backup: provider folders, local state, the mock's log, rules and counters.
reset_all() {
    rm -rf "$WORK/state" "$WORK/mock.state" "${PROVIDERS[@]/#/$WORK/}"
    : >"$WORK/mock.log"
    : >"$WORK/mock.rules"
}

offsite() { "$OFFSITE" --config "$WORK/offsite.toml" --no-progress "$@"; }

shard_name() { printf 's%010d-b%016d' "$1" $(($1 * SHARD)); }

# The one backup folder on provider $1 (empty before it exists).
backup_dir() {
    find "$WORK/$1" -mindepth 3 -maxdepth 3 -type d 2>/dev/null | head -1
}

# True when every provider holds shards 0..$1-1, each SHARD bytes.
first_shards_on_disk() {
    local p d i size
    for p in "${PROVIDERS[@]}"; do
        d=$(backup_dir "$p")
        [[ -n $d ]] || return 1
        for ((i = 0; i < $1; i++)); do
            size=$(stat -c %s "$d/$(shard_name "$i")" 2>/dev/null) || return 1
            ((size == SHARD)) || return 1
        done
    done
}

# How many shards, from 0 on without a hole, the resume journal has recorded.
journaled_prefix() {
    local j n=0 i
    j=$(find "$WORK/state" -name journal 2>/dev/null | head -1)
    [[ -n $j ]] || { echo 0; return; }
    while read -r i; do
        ((i == n)) || break
        n=$((n + 1))
    done < <(grep -o '"index":[0-9]*' "$j" | cut -d: -f2 | sort -n | uniq)
    echo "$n"
}

# Checks that every provider's shards concatenate to the stream and that it has a manifest.
check_backup() {
    local what=$1 p d
    for p in "${PROVIDERS[@]}"; do
        d=$(backup_dir "$p")
        [[ -f $d/manifest.json ]] || die "$what: no manifest on $p"
        find "$d" -name 's*' -type f | sort | xargs cat | cmp -s - "$STREAM" ||
            die "$what: the shards on $p do not concatenate to the stream"
    done
}

# "<shards> <bytes>" uploaded to provider $1 by the run the mock's log holds (0 0 for all).
uploaded() {
    local shards=0 bytes=0 target
    while read -r target; do
        [[ $target == */s[0-9]*-b[0-9]* ]] || continue
        [[ -z $1 || $target == "$WORK/$1/"* ]] || continue
        shards=$((shards + 1))
        # A killed run's upload may have left part of its object, or nothing.
        bytes=$((bytes + $(stat -c %s "$target" 2>/dev/null || echo 0)))
    done < <(sed -n 's/^rcat //p' "$WORK/mock.log")
    echo "$shards $bytes"
}

listings_per_provider() {
    local p out=()
    for p in "${PROVIDERS[@]}"; do
        out+=("$p $(grep -c "^lsjson $WORK/$p/" "$WORK/mock.log" || true)")
    done
    local IFS=,
    echo "${out[*]}"
}

# ---- the runs ----

full_run() {
    reset_all
    log "1. full backup of $(human "$BYTES")"
    local t0 t1
    sync # untimed, as before the resume
    t0=$(now)
    offsite backup --once >"$WORK/full.log" 2>&1 || die "the full backup failed: $(tail -5 "$WORK/full.log")"
    t1=$(now)
    FULL_SECS=$(elapsed "$t0" "$t1")
    check_backup "full backup"
    read -r FULL_SHARDS FULL_BYTES < <(uploaded "")
    log "   ${FULL_SECS}s"
}

interrupted_run() {
    reset_all
    local name t0 i ready=0
    name=$(shard_name "$K")
    printf 'rcat *%s hang 1\n' "$name" >"$WORK/mock.rules"
    log "2. backup killed with SIGKILL once shards 0..$((K - 1)) are in place and shard $K is uploading"
    t0=$(now)
    # The binary itself, not the offsite() function: $! must be offsite's PID, not a subshell's.
    "$OFFSITE" --config "$WORK/offsite.toml" --no-progress backup --once >"$WORK/interrupted.log" 2>&1 &
    BG_PID=$!
    for ((i = 0; i < 36000; i++)); do # up to an hour, in steps of 0.1 s
        if grep -q "^rcat .*/$name\$" "$WORK/mock.log" && first_shards_on_disk "$K" &&
            (($(journaled_prefix) >= K)); then
            ready=1
            break
        fi
        kill -0 "$BG_PID" 2>/dev/null || break
        sleep 0.1
    done
    ((ready)) || die "the backup ended or stalled before shard $K: $(tail -5 "$WORK/interrupted.log")"
    kill -9 "$BG_PID"
    wait "$BG_PID" 2>/dev/null || true
    BG_PID=
    # Its children (rclone uploads, the source) die with it (PR_SET_PDEATHSIG).
    for ((i = 0; i < 100; i++)); do
        pgrep -f "$WORK/" >/dev/null || break
        sleep 0.05
    done
    LEFT=$(pgrep -af "$WORK/" || true)
    KILL_SECS=$(elapsed "$t0" "$(now)")
    KILL_PROVEN=$(journaled_prefix)
    read -r KILL_SHARDS KILL_BYTES < <(uploaded "")
    log "   killed after ${KILL_SECS}s, $KILL_PROVEN shards proven"
}

resume_run() {
    : >"$WORK/mock.log"
    : >"$WORK/mock.rules"
    log "3. resume"
    local t0 t1 p
    sync # untimed: the resume does not pay for the writeback of the run killed before it
    t0=$(now)
    offsite backup --once >"$WORK/resume.log" 2>&1 || die "the resume failed: $(tail -5 "$WORK/resume.log")"
    t1=$(now)
    RESUME_SECS=$(elapsed "$t0" "$t1")
    grep -q "resuming unfinished backup" "$WORK/resume.log" || die "the re-run did not resume"
    check_backup "resumed backup"
    read -r RESUME_SHARDS RESUME_BYTES < <(uploaded "")
    RESUME_MAX=0
    for p in "${PROVIDERS[@]}"; do
        local b
        read -r _ b < <(uploaded "$p")
        ((b > RESUME_MAX)) && RESUME_MAX=$b
    done
    RESUME_LISTINGS=$(listings_per_provider)
    log "   ${RESUME_SECS}s, $RESUME_SHARDS shard uploads"
}

print_table() {
    local bound=$((BYTES / 10 + SHARD)) verdict=within
    ((RESUME_MAX <= bound)) || verdict="OVER"
    echo
    echo "offsite resume: $(human "$BYTES") of random data to 3 local providers, $(human "$SHARD") shards" \
        "($NSHARDS), killed at shard $K, $(date -u +%F), $(rclone version | head -1), $(nproc) CPUs"
    echo
    echo "| run | seconds | shard uploads | bytes uploaded (3 providers) | per provider (max) |"
    echo "|---|---:|---:|---:|---:|"
    printf '| 1. full backup | %s | %d | %s | %s |\n' "$FULL_SECS" "$FULL_SHARDS" \
        "$(human "$FULL_BYTES")" "$(human $((FULL_BYTES / 3)))"
    printf '| 2. interrupted by SIGKILL (%d of %d shards proven) | %s | %d | %s | - |\n' \
        "$KILL_PROVEN" "$NSHARDS" "$KILL_SECS" "$KILL_SHARDS" "$(human "$KILL_BYTES")"
    printf '| 3. resume of run 2 | %s | %d | %s | %s |\n' "$RESUME_SECS" "$RESUME_SHARDS" \
        "$(human "$RESUME_BYTES")" "$(human "$RESUME_MAX")"
    echo
    awk -v r="$RESUME_SECS" -v f="$FULL_SECS" 'BEGIN {
        printf "- resume / full run wall time: %.2f\n", r / f }'
    awk -v done="$KILL_PROVEN" -v n="$NSHARDS" -v s="$SHARD" -v b="$BYTES" 'BEGIN {
        p = done * s / b; if (p > 1) p = 1
        printf "- done when killed: %.1f%% of the stream proven and on every provider\n", 100 * p }'
    echo "- bytes uploaded by the resume, per provider: $(human "$RESUME_MAX") (bound: 10% of the" \
        "stream + one shard = $(human "$bound"): $verdict)"
    echo "- listings in the resume run (lsjson per provider): $RESUME_LISTINGS"
    echo "- processes left running after the SIGKILL: ${LEFT:-none}"
    echo "- the interrupted run's wall time and uploads include shards in flight when it was killed" \
        "(some landed, unproven, and are sent again by the resume)."
}

main() {
    [[ -x $OFFSITE ]] || die "$OFFSITE is missing (cargo build --release)"
    command -v rclone >/dev/null || die "rclone is missing"
    BYTES=$(parse_size "${BENCH_BYTES:-1GiB}")
    SHARD=$(parse_size "${BENCH_SHARD:-64MiB}")
    NSHARDS=$(((BYTES + SHARD - 1) / SHARD))
    K=$((NSHARDS * 9 / 10))
    ((K >= 1 && K < NSHARDS)) || die "$(human "$BYTES") in $(human "$SHARD") shards is too few shards"

    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-resume.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work dir $WORK"
    STREAM=$WORK/stream.bin
    log "writing $(human "$BYTES") of random data"
    head -c "$BYTES" /dev/urandom >"$STREAM"
    write_config "$STREAM" "$SHARD"

    full_run
    interrupted_run
    resume_run
    print_table
}

main "$@"
