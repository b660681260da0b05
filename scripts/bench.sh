#!/usr/bin/env bash
# Benchmark of offsite's backup pipeline against the two obvious ways of doing the same with
# plain rclone, on the same stream, in the same run. Prints a markdown table on stdout
# (progress goes to stderr).
#
#   scripts/bench.sh [local|wan|all]          (default: all)
#
# Tools, each sending one stream of random bytes to three providers:
#   offsite     `offsite backup --once` of a `command = "cat STREAM"` dataset, shard_size 64MiB,
#               default concurrency (shards_in_flight 4, 2 uploads per provider)
#   seed loop   what the old bash tool did: read one 64 MiB shard from the pipe with `head -c`,
#               write it to a temp file, `rclone copyto` it to each provider in turn, next shard
#   union       one `cat STREAM | rclone rcat union:...` into an rclone union remote over the
#               three providers with create_policy = all (every write goes to all three)
# Setups:
#   local       three local directories
#   wan         three `rclone serve webdav` servers on 127.0.0.1 serving three local directories,
#               throttled with --bwlimit 40M, 60M and 80M (MiB/s; the limit applies to uploads
#               into the server too). No tool can beat BYTES / 40 MiB/s: every byte must reach
#               the slowest server. The table shows that limit and each tool's share of it.
# Then a memory check: offsite on 1 GiB (and on 4 GiB with BENCH_MEM=1), local setup; its
# peak RSS should not grow with the stream.
#
# Environment:
#   BENCH_BYTES  stream size (default 1GiB; accepts 128MiB, 512KiB, 2G, plain bytes)
#   BENCH_MEM=1  add the 4 GiB memory row (writes 4 GiB + 3 x 4 GiB to the work dir)
#   BENCH_DIR    where the temporary work dir goes (default $TMPDIR or /tmp)
#   BENCH_KEEP=1 keep the work dir (configs, logs, provider dirs) for inspection
#   OFFSITE      the binary (default target/release/offsite; its rows are skipped when missing)
#   BENCH_OFFSITE_TOML  extra top-level offsite.toml lines, e.g. 'concurrency = 3' (tuning runs)
#
# Peak RSS is GNU time's %M: the largest single process among the tool and its children
# (offsite's rclone children included), not their sum.
set -euo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
SHARD=$((64 << 20))
GIB=$((1 << 30))
WAN_LIMITS=(40 60 80) # MiB/s of the three webdav servers; the first is the slowest
unset AWS_CA_BUNDLE
BENCH_NAME=bench.sh
# shellcheck source=bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"





# ---- the seed tool's loop (run as `bench.sh __seed_loop ...` so that time(1) can measure it) ----

# seed_loop RCLONE_CONFIG STREAMFILE TMPFILE DEST... : one shard at a time, to each DEST in turn.
seed_loop() {
    local conf=$1 stream=$2 tmp=$3
    shift 3
    # The seed tool read a command's output from a pipe: keep the pipe, not a seekable file.
    # shellcheck disable=SC2002
    cat "$stream" | {
        local i=0 name dest
        while :; do
            head -c "$SHARD" >"$tmp" # on a pipe, head -c reads exactly SHARD bytes (less at the end)
            [[ -s $tmp ]] || break
            name=$(printf 's%06d' "$i")
            for dest; do
                rclone --config "$conf" copyto "$tmp" "$dest/$name"
            done
            i=$((i + 1))
        done
    }
    rm -f "$tmp"
}

# ---- setups: provider directories, rclone.conf, webdav servers ----

WORK=
# Set by setup_local / setup_wan:
CONF=          # rclone.conf: the union remote (and, for wan, the three webdav remotes)
DIRS=()        # the three directories where the providers' bytes end up
REMOTES=()     # the three providers as rclone remote paths


cleanup() {
    stop_servers
    if [[ -n $WORK && ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n $WORK ]]; then
        log "kept $WORK"
    fi
}

write_union_conf() { # upstreams...
    local ups=() u
    for u; do ups+=("\"$u\""); done
    cat >>"$CONF" <<EOF
[union]
type = union
upstreams = ${ups[*]}
create_policy = all
action_policy = all
search_policy = ff

EOF
}

setup_local() {
    local base=$WORK/local n
    DIRS=() REMOTES=()
    for n in 1 2 3; do
        mkdir -p "$base/dir$n"
        DIRS+=("$base/dir$n")
        REMOTES+=("$base/dir$n")
    done
    CONF=$base/rclone.conf
    : >"$CONF"
    write_union_conf "${REMOTES[@]}"
}


setup_wan() {
    local base=$WORK/wan n
    DIRS=() REMOTES=()
    CONF=$base/rclone.conf
    mkdir -p "$base"
    : >"$CONF"
    for n in 1 2 3; do
        mkdir -p "$base/dir$n"
        DIRS+=("$base/dir$n")
        start_webdav "$base/dir$n" "${WAN_LIMITS[n - 1]}"
        log "webdav server $n: $URL serving $base/dir$n at ${WAN_LIMITS[n - 1]} MiB/s"
        REMOTES+=("p$n:")
        printf '[p%d]\ntype = webdav\nurl = %s\nvendor = other\n\n' "$n" "$URL" >>"$CONF"
    done
    write_union_conf "${REMOTES[@]}"
}

# ---- measuring ----

ROWS=()  # "setup|tool|bytes|seconds|rss_kib|ok" (ok: 1, or 0 when the run failed its checks)
NOTES=() # footnotes: failures, wrong sizes

# measure SETUP TOOL BYTES EXPECT LOG CMD... : wipe, time CMD, check what the providers hold.
# EXPECT is "exact" (every provider holds BYTES) or "atleast" (BYTES plus metadata).
measure() {
    local setup=$1 tool=$2 bytes=$3 expect=$4 logf=$5
    shift 5
    local tf=$WORK/time.out rc=0 secs rss got d i=0 ok=1
    wipe "${DIRS[@]}"
    sync
    log "$setup / $tool: $(human "$bytes")"
    /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$logf" 2>&1 || rc=$?
    read -r secs rss < <(tail -1 "$tf")
    if ((rc != 0)); then
        ok=0
        NOTES+=("$setup / $tool: exited with status $rc; last lines of $logf:")
        NOTES+=("$(tail -5 "$logf" | sed 's/^/    /')")
    fi
    for d in "${DIRS[@]}"; do
        i=$((i + 1))
        got=$(dir_bytes "$d")
        if [[ $expect == exact && $got -ne $bytes ]] || ((got < bytes)); then
            ok=0
            NOTES+=("$setup / $tool: provider $i holds $got bytes, expected $bytes")
        fi
    done
    log "$setup / $tool: ${secs}s, peak RSS $((rss / 1024)) MiB"
    ROWS+=("$setup|$tool|$bytes|$secs|$rss|$ok")
}

# run_offsite SETUP TOOL STREAM BYTES : write a config for the current setup and back up.
run_offsite() {
    local setup=$1 tool=$2 stream=$3 bytes=$4
    if [[ ! -x $OFFSITE ]]; then
        log "$setup / $tool: skipped, $OFFSITE is missing (cargo build --release)"
        NOTES+=("$setup / $tool: skipped, $OFFSITE is missing (cargo build --release)")
        return
    fi
    local dir=$WORK/offsite-${setup//[^a-z]/_} n
    rm -rf "$dir"
    mkdir -p "$dir/providers.d" "$dir/state"
    for n in 1 2 3; do
        printf 'remote = %s\nenabled = true\npriority = %d\n' \
            "$(toml_str "${REMOTES[n - 1]}")" "$n" >"$dir/providers.d/p$n.toml"
    done
    cat >"$dir/offsite.toml" <<EOF
host = "bench"
state_dir = $(toml_str "$dir/state")
rclone_config = $(toml_str "$CONF")
shard_size = "64MiB"
# The peers store the bytes as they are: so does offsite here (zstd is bench-codec.sh's).
compression = "none"
${BENCH_OFFSITE_TOML:-}

[[dataset]]
name = "stream"
command = $(toml_str "cat $(printf '%q' "$stream")")
EOF
    measure "$setup" "$tool" "$bytes" atleast "$dir/offsite.log" \
        "$OFFSITE" --config "$dir/offsite.toml" --no-progress backup --once
}

run_seed_loop() {
    local setup=$1 stream=$2 bytes=$3 dests=() r
    for r in "${REMOTES[@]}"; do
        if [[ $r == *: ]]; then dests+=("${r}seed"); else dests+=("$r/seed"); fi
    done
    measure "$setup" "seed loop" "$bytes" exact "$WORK/seed-$setup.log" \
        bash "$SELF" __seed_loop "$CONF" "$stream" "$WORK/shard.tmp" "${dests[@]}"
}

run_union() {
    local setup=$1 stream=$2 bytes=$3
    # shellcheck disable=SC2016 # $1..$3 expand in the inner shell
    measure "$setup" "union" "$bytes" exact "$WORK/union-$setup.log" \
        bash -c 'cat "$1" | rclone --config "$2" rcat "$3"' _ "$stream" "$CONF" union:union/stream
}

# stream_file BYTES : a file of BYTES random bytes in the work dir, made once.
stream_file() {
    local f=$WORK/stream-$1.bin
    if [[ ! -f $f ]]; then
        log "writing $(human "$1") of random data to $f"
        head -c "$1" /dev/urandom >"$f"
    fi
    echo "$f"
}

bench_setup() { # local|wan
    local setup=$1 bytes=$2 stream
    stream=$(stream_file "$bytes")
    "setup_$setup"
    run_offsite "$setup" offsite "$stream" "$bytes"
    run_seed_loop "$setup" "$stream" "$bytes"
    run_union "$setup" "$stream" "$bytes"
    stop_servers
}

bench_memory() {
    [[ -x $OFFSITE ]] || return 0
    local sizes=("$GIB") size
    if [[ ${BENCH_MEM:-0} == 1 ]]; then
        sizes+=($((4 * GIB)))
    fi
    setup_local
    for size in "${sizes[@]}"; do
        run_offsite "local (memory)" "offsite" "$(stream_file "$size")" "$size"
    done
}

# ---- the table ----

print_table() {
    local bytes=$1 row setup tool b secs rss ok ref_rate
    declare -A union_rate=()
    for row in "${ROWS[@]}"; do
        IFS='|' read -r setup tool b secs rss ok <<<"$row"
        [[ $tool == union && $ok == 1 ]] && union_rate[$setup]=$(awk -v b="$b" -v s="$secs" 'BEGIN { print b / 2^20 / s }')
    done
    echo
    echo "offsite backup pipeline vs. rclone: $(human "$bytes") of random data to 3 providers," \
        "64 MiB shards, $(date -u +%F), $(rclone version | head -1), $(nproc) CPUs"
    echo
    echo "| setup | tool | bytes | seconds | MiB/s | ratio | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    local limit_shown=0
    for row in "${ROWS[@]}"; do
        IFS='|' read -r setup tool b secs rss ok <<<"$row"
        if [[ $setup == wan && $limit_shown == 0 ]]; then
            limit_shown=1
            printf '| wan | limit: bytes / %d MiB/s | %s | %.2f | %d | 1.00 | - |\n' \
                "${WAN_LIMITS[0]}" "$(human "$b")" \
                "$(awk -v b="$b" -v l="${WAN_LIMITS[0]}" 'BEGIN { print b / 2^20 / l }')" \
                "${WAN_LIMITS[0]}"
        fi
        ref_rate=-
        case $setup in
        wan) ref_rate=${WAN_LIMITS[0]} ;;
        local) ref_rate=${union_rate[local]:--} ;;
        esac
        awk -v setup="$setup" -v tool="$tool" -v b="$b" -v s="$secs" -v rss="$rss" \
            -v ok="$ok" -v ref="$ref_rate" -v h="$(human "$b")" 'BEGIN {
                if (ok != 1) tool = tool " (failed, see notes)"
                rate = (s > 0) ? sprintf("%.1f", b / 2^20 / s) : "-"
                ratio = (ref == "-" || rate == "-") ? "-" : sprintf("%.2f", rate / ref)
                printf "| %s | %s | %s | %.2f | %s | %s | %.0f |\n",
                    setup, tool, h, s, rate, ratio, rss / 1024 }'
    done
    echo
    echo "ratio: MiB/s over the union's (local) or over the slowest server's limit (wan)."
    echo "memory rows: offsite alone on the local setup; peak RSS should not grow with the stream."
    echo "peak RSS: largest single process (GNU time %M), rclone children included."
    if ((${#NOTES[@]})); then
        echo
        echo "Notes:"
        for row in "${NOTES[@]}"; do echo "- $row"; done
    fi
}

main() {
    if [[ ${1:-} == __seed_loop ]]; then
        shift
        seed_loop "$@"
        return
    fi
    local setup=${1:-all} bytes
    case $setup in
    local | wan | all) ;;
    *) die "usage: $0 [local|wan|all]" ;;
    esac
    bytes=$(parse_size "${BENCH_BYTES:-1GiB}")
    ((bytes > 0)) || die "BENCH_BYTES must be more than 0"

    command -v rclone >/dev/null || die "rclone is missing (apt-get install rclone)"
    if [[ ! -x /usr/bin/time ]]; then
        log "installing GNU time"
        apt-get install -y -qq time >&2 || { apt-get update -qq && apt-get install -y -qq time >&2; }
    fi

    WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work dir $WORK"

    if [[ $setup == local || $setup == all ]]; then
        bench_setup local "$bytes"
    fi
    if [[ $setup == wan || $setup == all ]]; then
        bench_setup wan "$bytes"
    fi
    if [[ $setup == local || $setup == all ]]; then
        bench_memory
    fi
    print_table "$bytes"
}

main "$@"
