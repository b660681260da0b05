#!/usr/bin/env bash
# shellcheck disable=SC2034 # URL and SERVER_PIDS are results, read by the sourcing script
# Shared helpers of the benchmark scripts (bench.sh, bench-sync.sh, bench-resume.sh,
# bench-restore.sh, bench-scale.sh, ...). Source it; it defines functions and SERVER_PIDS, nothing runs.
# The caller sets BENCH_NAME (for error messages) before sourcing.

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2
    exit 1
}

# Bytes in a size such as 64MiB, 64M, 1GiB, 512KiB or 1048576 (binary units throughout).
parse_size() {
    local re='^([0-9]+)([KMGT]?)(iB|B)?$'
    [[ $1 =~ $re ]] || die "bad size '$1' (try 128MiB, 1GiB, or bytes)"
    local n=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in
    K) n=$((n << 10)) ;;
    M) n=$((n << 20)) ;;
    G) n=$((n << 30)) ;;
    T) n=$((n << 40)) ;;
    esac
    echo "$n"
}

human() { # bytes -> "1 GiB", "128 MiB", "1.50 GiB"
    awk -v b="$1" 'BEGIN {
        if (b >= 2^30) { u = "GiB"; v = b / 2^30 } else { u = "MiB"; v = b / 2^20 }
        if (v == int(v)) printf "%d %s", v, u; else printf "%.2f %s", v, u }'
}

# A TOML basic string holding $1.
toml_str() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

now() { date +%s.%N; }

# write_providers CONFDIR REMOTE... : CONFDIR/providers.d/p1.toml, p2.toml, ... with those
# remotes, priorities 1, 2, ...
write_providers() {
    local dir=$1 n=0 r
    shift
    mkdir -p "$dir/providers.d"
    for r; do
        n=$((n + 1))
        printf 'remote = %s\npriority = %d\n' "$(toml_str "$r")" "$n" >"$dir/providers.d/p$n.toml"
    done
}

# Total size of the regular files under each directory given, one line per directory.
dir_bytes() {
    local d
    for d; do
        find "$d" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
    done
}

wipe() {
    local d
    for d; do
        find "$d" -mindepth 1 -delete
    done
}

SERVER_PIDS=()

# start_webdav DIR LIMIT_MIB : starts `rclone serve webdav DIR` on a free loopback port with
# --bwlimit LIMIT_MIB (0: none); sets URL. No subshell: the PID must reach SERVER_PIDS so that
# stop_servers (call it from the exit trap) stops it.
URL=
start_webdav() {
    local dir=$1 limit=$2 logf=$1.log i url='' bw=()
    mkdir -p "$dir"
    [[ $limit != 0 ]] && bw=(--bwlimit "${limit}M")
    rclone --config /dev/null serve webdav "$dir" --addr 127.0.0.1:0 "${bw[@]}" >"$logf" 2>&1 &
    SERVER_PIDS+=($!)
    for ((i = 0; i < 100; i++)); do # up to 10 s
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$logf" | head -1) || true
        [[ -n $url ]] && break
        kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $url ]] || die "rclone serve webdav $dir did not start: $(cat "$logf")"
    URL=$url
}

stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SERVER_PIDS=()
}
