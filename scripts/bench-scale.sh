#!/usr/bin/env bash
# Benchmark of offsite at 10 TiB (issue 15): `status`, `verify` (quick), `list` and a no-op
# `sync` over one backup of BENCH_SHARDS shards of 64 MiB (default 160000: a 10 TiB stream) held
# by three providers. Prints a markdown table on stdout (progress on stderr): wall seconds and
# peak RSS per command against the targets (5 s, 256 MiB).
#
#   scripts/bench-scale.sh
#
# How the 480,000 objects are faked, and why: a mock rclone (written into the work dir) answers
# `lsjson` with listings generated once, and passes everything else to the real rclone; with
# OFFSITE_RCLONE_DAEMON=0 offsite runs one rclone per operation, so every listing goes through
# the mock. Each provider is a real local directory holding only the real manifest, which the
# real rclone reads (`rclone cat`). So what is measured is offsite (parsing 3 x 160,000 listed
# objects, grouping, gaps, the manifest), not a provider: real rclone listing 160,000 sparse
# files on a local disk measures rclone and the file system, and would need 480,000 inodes.
# The listings carry MD5 and SHA-1 (`list_hashes = true`, as S3 or B2 list them), the heavier
# case, and match the manifest, so nothing is corrupt and the sync has nothing to do.
# The manifest and the listings come from `examples/synthetic-catalog.rs`, which writes the
# manifest with offsite's own `Manifest` type, so it cannot drift from the format.
#
# Peak RSS is GNU time's %M: the largest of offsite and each rclone it waited for.
#
# Environment: BENCH_SHARDS, BENCH_RUNS (default 1; the median is shown), BENCH_DIR (work dir
# parent), BENCH_KEEP=1, OFFSITE (the binary; default target/release/offsite),
# SYNTHETIC (the example; default target/release/examples/synthetic-catalog).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OFFSITE=${OFFSITE:-$REPO/target/release/offsite}
SYNTHETIC=${SYNTHETIC:-$REPO/target/release/examples/synthetic-catalog}
unset AWS_CA_BUNDLE
BENCH_NAME=bench-scale.sh
# shellcheck source=bench-lib.sh
source "$REPO/scripts/bench-lib.sh"

[[ -x $OFFSITE ]] || die "no offsite binary at $OFFSITE: run cargo build --release"
[[ -x $SYNTHETIC ]] || die "no $SYNTHETIC: run cargo build --release --example synthetic-catalog"
[[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
SHARDS=${BENCH_SHARDS:-160000}
RUNS=${BENCH_RUNS:-1}
REAL_RCLONE=$(command -v rclone) || die "rclone is missing"
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/offsite-bench-scale.XXXXXX")
cleanup() {
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

HOST=bench
DATASET=stream
DIRS=("$WORK/p1" "$WORK/p2" "$WORK/p3")
CAT=$WORK/catalog
CONF=$WORK/conf
OFFSITE_ARGS=(--config "$CONF/offsite.toml" --no-progress)

# The mock: `lsjson` of a provider's host or dataset folder from the generated listings (with
# hashes when asked), anything else to the real rclone.
write_mock() {
    cat >"$WORK/rclone" <<EOF
#!/usr/bin/env bash
hashed= list=
for a; do
    case \$a in
    lsjson) list=1 ;;
    --hash) hashed=-hashed ;;
    esac
done
if [[ -n \$list ]]; then
    case \${!#} in
    $WORK/p[123]/$HOST) exec cat "$CAT/host\$hashed.json" ;;
    $WORK/p[123]/$HOST/$DATASET) exec cat "$CAT/dataset\$hashed.json" ;;
    esac
fi
exec $(toml_str "$REAL_RCLONE") "\$@"
EOF
    chmod +x "$WORK/rclone"
}

write_config() {
    write_providers "$CONF" "${DIRS[@]}"
    for f in "$CONF"/providers.d/*.toml; do echo 'list_hashes = true' >>"$f"; done
    cat >"$CONF/offsite.toml" <<EOF
host = "$HOST"
state_dir = $(toml_str "$WORK/state")
rclone = $(toml_str "$WORK/rclone")
rclone_config = $(toml_str "$WORK/rclone.conf")

[[dataset]]
name = "$DATASET"
command = "cat /dev/null"
EOF
    : >"$WORK/rclone.conf"
}

# timed LABEL CMD... : runs CMD under GNU time; appends "LABEL wall maxrss_kib" to $WORK/times.
# Any exit but 0 is a failure: the catalog is complete, so status and verify find nothing.
timed() {
    local label=$1 rc=0
    shift
    OFFSITE_RCLONE_DAEMON=0 /usr/bin/time -o "$WORK/time.out" -f '%e %M' "$@" \
        >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
    [[ $rc == 0 ]] || die "$label failed (exit $rc): $(tail -5 "$WORK/last.err")"
    echo "$label $(tail -1 "$WORK/time.out")" >>"$WORK/times"
}

log "synthetic catalog: $SHARDS shards of 64 MiB on 3 providers"
mkdir -p "$CAT"
ID=$("$SYNTHETIC" "$CAT" "$SHARDS" "$HOST" "$DATASET")
for d in "${DIRS[@]}"; do
    mkdir -p "$d/$HOST/$DATASET/$ID"
    cp "$CAT/$ID/manifest.json" "$d/$HOST/$DATASET/$ID/"
done
write_mock
write_config
for ((r = 1; r <= RUNS; r++)); do
    log "run $r of $RUNS"
    timed status "$OFFSITE" "${OFFSITE_ARGS[@]}" status
    timed verify "$OFFSITE" "${OFFSITE_ARGS[@]}" verify
    timed list "$OFFSITE" "${OFFSITE_ARGS[@]}" list "$DATASET"
    timed sync "$OFFSITE" "${OFFSITE_ARGS[@]}" sync
    grep -q '^nothing to copy' "$WORK/last.out" ||
        die "sync was not a no-op: $(head -3 "$WORK/last.out")"
done

# median LABEL FIELD : the median of FIELD (2 wall, 3 peak RSS KiB) over the runs.
median() {
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$WORK/times" |
        sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
row() { # LABEL NAME
    awk -v n="$2" -v w="$(median "$1" 2)" -v k="$(median "$1" 3)" 'BEGIN {
        m = k / 1024
        printf "| %s | %.2f | %s | %.0f | %s |\n", n, w, (w <= 5 ? "yes" : "NO"), m, (m < 256 ? "yes" : "NO") }'
}

manifest_mib=$(awk -v b="$(stat -c %s "$CAT/$ID/manifest.json")" 'BEGIN { printf "%.1f", b / 2^20 }')
echo "### bench-scale.sh: $SHARDS shards of 64 MiB x 3 providers (mock listings), median of $RUNS"
echo
echo "offsite $("$OFFSITE" --version | awk '{ print $2 }'), manifest $manifest_mib MiB, $(nproc) cores, load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| command | seconds | <= 5 s | peak RSS MiB | < 256 MiB |"
echo "|---|---|---|---|---|"
row status "offsite status"
row verify "offsite verify (quick)"
row list "offsite list $DATASET"
row sync "offsite sync (nothing to do)"
