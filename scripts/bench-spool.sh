#!/usr/bin/env bash
# Benchmark of the disk spool (`spool_dir`, `spool_size`): a provider that retries must not
# hold up the healthy ones. Prints a markdown table on stdout (progress goes to stderr).
#
#   scripts/bench-spool.sh
#
# Setup: a stream of BENCH_BYTES random bytes (`command = "cat STREAM"`, compression none),
# BENCH_SHARD shards, default limits (shards_in_flight 4, concurrency 2, retry_delay 1s),
# three local providers p1, p2, p3, rclone behind tests/mock_rclone in every run. p1 and p2
# are plain paths, as a user's local disks: one `rclone rcd` each, shards written by offsite
# itself. p3 is the same kind of folder named as `:local:PATH`, so its shards go through a
# spawned `rclone rcat` (one per upload), where the mock can fail them. The faulty provider is
# p3: the mock fails the first upload attempt of every 4th shard (shards 3, 7, 11, ...) with
# rclone's retryable exit 5, after reading the whole shard (backoff 0.5-1 s before the second
# attempt). The runs:
#   two       p1 and p2 only (p3 disabled): the run without the faulty provider;
#   twospooled  the same with the spool on: what the spool costs when every provider keeps
#             up (nothing should be written to it);
#   three     p1, p2, p3, no fault;
#   faulty    p1, p2, p3 with the faults, no spool;
#   spooled   the same with spool_dir on the same disk and spool_size = the stream's size;
#   faulty3, spooled3: the same two with three failed attempts per faulted shard (backoffs
#             of 0.5-1, 1-2 and 2-4 s), a provider that takes longer to come back;
#   slow, slowspooled: no faults, but p3 has `bwlimit = BENCH_SLOW` (default 64M), a
#             provider slower than the others for the whole run.
# "healthy done" is when p1 and p2 hold every shard at full size (a poller sums their shard
# files every 50 ms); "whole run" is offsite's wall time (it waits for p3 and writes the
# manifests). The target: spooled healthy done within 1.2x of `two`'s.
#
# Environment:
#   BENCH_BYTES  stream size (default 1GiB)      BENCH_SHARD  shard size (default 64MiB; at
#                least 32MiB: smaller uploads to p3 go through its rclone daemon, not rcat)
#   BENCH_RUNS   runs of each kind (default 2)   BENCH_DIR    where the work dir goes
#   BENCH_SLOW   p3's bwlimit in the slow runs (default 64M)
#   BENCH_KINDS  the kinds to run (default all, in the order above; two and three are needed)
#   BENCH_SPOOL_DIR  the spool's folder (default: in the work dir, on the providers' disk); a
#                folder on another device measures a spool that does not share their disk
#   BENCH_KEEP=1 keep the work dir               OFFSITE      the binary
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
MOCK=$REPO/tests/mock_rclone
unset AWS_CA_BUNDLE
BENCH_NAME=bench-spool.sh
# shellcheck source=scripts/bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

WORK=
cleanup() {
    if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK" "${SPOOL:-}"
    elif [[ -n $WORK ]]; then
        log "kept $WORK (and the spool folder ${SPOOL:-})"
    fi
}

# write_config KIND : offsite.toml and providers.d for one kind of run.
write_config() {
    local n enabled remote
    rm -rf "$WORK/providers.d"
    mkdir -p "$WORK/providers.d"
    for n in 1 2 3; do
        enabled=true
        [[ $1 == two* && $n == 3 ]] && enabled=false
        remote=$WORK/p$n
        [[ $n == 3 ]] && remote=:local:$remote
        printf 'remote = %s\npriority = %d\nenabled = %s\n' "$(toml_str "$remote")" "$n" \
            "$enabled" >"$WORK/providers.d/p$n.toml"
        if [[ $1 == slow* && $n == 3 ]]; then
            printf 'bwlimit = "%s"\n' "${BENCH_SLOW:-64M}" >>"$WORK/providers.d/p$n.toml"
        fi
    done
    {
        printf 'host = "bench"\nstate_dir = %s\nrclone = %s\n' \
            "$(toml_str "$WORK/state")" "$(toml_str "$MOCK")"
        printf 'shard_size = %d\ncompression = "none"\n' "$SHARD"
        if [[ $1 == *spooled* ]]; then
            printf 'spool_dir = %s\nspool_size = %d\n' "$(toml_str "$SPOOL")" "$BYTES"
        fi
        printf '\n[[dataset]]\nname = "stream"\ncommand = %s\n' \
            "$(toml_str "cat $(printf '%q' "$STREAM")")"
    } >"$WORK/offsite.toml"
    : >"$WORK/mock.rules"
    local i fails=1
    [[ $1 == *3 ]] && fails=3
    if [[ $1 == faulty* || $1 == spooled* ]]; then
        for ((i = 3; i < NSHARDS; i += 4)); do
            printf 'rcat :local:%s/p3/*/s%010d-* exit:5 %d\n' "$WORK" "$i" "$fails" >>"$WORK/mock.rules"
        done
    fi
}

# Bytes of shard files in provider folder $1.
shard_bytes() {
    find "$1" -name 's[0-9]*' -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

# Prints the seconds since $1 at which p1 and p2 both hold the whole stream in shards; stops
# when offsite (pid $2) has ended (then its end, if they do by then, else "-").
poll_healthy() {
    local t0=$1 pid=$2 running=1
    while ((running)); do
        kill -0 "$pid" 2>/dev/null || running=0
        if (($(shard_bytes "$WORK/p1") >= BYTES && $(shard_bytes "$WORK/p2") >= BYTES)); then
            elapsed "$t0" "$(now)"
            return
        fi
        ((running)) && sleep 0.05
    done
    echo "-"
}

# one_run KIND : runs one backup; appends "healthy whole cpu" to RESULTS[KIND].
declare -A RESULTS
KINDS=${BENCH_KINDS:-"two twospooled three faulty spooled faulty3 spooled3 slow slowspooled"}
one_run() {
    local kind=$1 t0 pid healthy whole cpu p
    rm -rf "$WORK/state" "$WORK/mock.state" "$WORK/p1" "$WORK/p2" "$WORK/p3" "$SPOOL"
    mkdir -p "$SPOOL"
    write_config "$kind"
    : >"$WORK/mock.log"
    sync # untimed: no run inherits the writeback of the one before it
    t0=$(now)
    /usr/bin/time -o "$WORK/time.out" -f '%U %S' \
        "$OFFSITE" --config "$WORK/offsite.toml" --no-progress backup --once >"$WORK/$kind.log" 2>&1 &
    pid=$!
    healthy=$(poll_healthy "$t0" "$pid")
    wait "$pid" || die "$kind: the backup failed: $(tail -5 "$WORK/$kind.log")"
    whole=$(elapsed "$t0" "$(now)")
    for p in p1 p2 p3; do
        [[ $kind == two* && $p == p3 ]] && continue
        (($(shard_bytes "$WORK/$p") == BYTES)) || die "$kind: $p does not hold the stream"
    done
    if [[ $kind == faulty* || $kind == spooled* ]]; then
        (($(grep -c "^rcat :local:$WORK/p3/" "$WORK/mock.log") > NSHARDS)) || die "$kind: no upload to p3 was retried"
    fi
    [[ -z $(ls -A "$SPOOL") ]] || die "$kind: the spool folder is not empty"
    cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/time.out")
    RESULTS[$kind]+="$healthy $whole $cpu "
    log "   $kind: healthy done ${healthy}s, whole run ${whole}s, CPU ${cpu}s"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# column KIND N : the N-th figure (1 healthy, 2 whole, 3 CPU) of every run of KIND,
# space-separated.
column() {
    local -a v
    read -r -a v <<<"${RESULTS[$1]}"
    local i out=()
    for ((i = $2 - 1; i < ${#v[@]}; i += 3)); do out+=("${v[i]}"); done
    echo "${out[*]}"
}

print_table() {
    local two_h three_h kind h w c
    two_h=$(column two 1 | median)
    three_h=$(column three 1 | median)
    echo
    echo "offsite spool: $(human "$BYTES") of random data, $(human "$SHARD") shards ($NSHARDS)," \
        "p1 and p2 plain local paths (written by offsite), p3 \`:local:\` through rclone rcat" \
        "(fails the first upload of every 4th shard), spool in ${BENCH_SPOOL_DIR:-the work dir} ($(stat -f -c %T "$SPOOL")), $RUNS runs each," \
        "$(date -u +%F), $(rclone version | head -1), $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
    echo
    echo "| run | healthy done, s (each run) | whole run, s (each run) | CPU s (median) | healthy / two (median) | healthy / three (median) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for kind in $KINDS; do
        h=$(column "$kind" 1)
        w=$(column "$kind" 2)
        c=$(column "$kind" 3 | median)
        awk -v k="$kind" -v h="$h" -v w="$w" -v c="$c" -v m="$(echo "$h" | median)" -v a="$two_h" \
            -v b="$three_h" 'BEGIN { printf "| %s | %s | %s | %.2f | %.2f | %.2f |\n", k, h, w, c, m / a, m / b }'
    done
    echo
    echo "- target: spooled, spooled3 and slowspooled healthy done / two <= 1.2"
    awk -v c="$(column three 3 | median)" -v n="$(nproc)" -v a="$two_h" 'BEGIN {
        printf "- whole-run CPU floor of three: %.2f CPU s / %d cores = %.2f s, %.2fx two'"'"'s healthy done\n", c, n, c / n, c / n / a }'
}

main() {
    [[ -x $OFFSITE ]] || die "$OFFSITE is missing (cargo build --release)"
    [[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
    local k
    for k in $KINDS; do
        [[ " two twospooled three faulty spooled faulty3 spooled3 slow slowspooled " == *" $k "* ]] ||
            die "BENCH_KINDS: unknown kind $k"
    done
    [[ " $KINDS " == *" two "* && " $KINDS " == *" three "* ]] ||
        die "BENCH_KINDS must include two and three (the ratios' baselines)"
    command -v rclone >/dev/null || die "rclone is missing"
    BYTES=$(parse_size "${BENCH_BYTES:-1GiB}")
    SHARD=$(parse_size "${BENCH_SHARD:-64MiB}")
    RUNS=${BENCH_RUNS:-2}
    NSHARDS=$(((BYTES + SHARD - 1) / SHARD))
    ((SHARD >= 32 << 20)) ||
        die "BENCH_SHARD below 32MiB: p3's uploads would not go through rcat, where the faults are"
    ((NSHARDS >= 4)) || die "$(human "$BYTES") in $(human "$SHARD") shards is fewer than 4 shards"
    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-spool.XXXXXX")
    trap cleanup EXIT
    STREAM=$WORK/stream.bin
    SPOOL=$WORK/spool
    if [[ -n ${BENCH_SPOOL_DIR:-} ]]; then
        SPOOL=$(mktemp -d "$(realpath "$BENCH_SPOOL_DIR")/offsite-bench-spool.XXXXXX")
    fi
    log "writing $(human "$BYTES") of random data"
    head -c "$BYTES" /dev/urandom >"$STREAM"
    export MOCK_RCLONE_REAL MOCK_RCLONE_LOG=$WORK/mock.log \
        MOCK_RCLONE_RULES=$WORK/mock.rules MOCK_RCLONE_STATE=$WORK/mock.state
    MOCK_RCLONE_REAL=$(command -v rclone)
    local r kind
    for ((r = 1; r <= RUNS; r++)); do
        log "round $r of $RUNS"
        for kind in $KINDS; do one_run "$kind"; done
    done
    print_table
}

main "$@"
