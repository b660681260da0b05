#!/usr/bin/env bash
# shellcheck disable=SC2034 # SECS, CPU, RSS, LOAD are results, read by bench-codec.sh
# Helpers of scripts/bench-codec.sh: timing, rows and their medians, the tables. Source it after
# bench-lib.sh; it defines functions, nothing runs. Uses WORK, DIRS, RUNS, SIF, SHARD_MIB and
# WAN_LIMITS of the caller.

# The suffixes of the shard objects under DIR: "plain", ".zst", ".age", ".zst.age", or several
# of them space-separated (a mix), or "none" (no shard).
object_suffixes() {
    find "$1" -type f -name 's[0-9]*-b[0-9]*' -printf '%f\n' |
        sed -E 's/^s[0-9]+-b[0-9]+//; s/^$/plain/' | sort -u | paste -sd' ' | sed 's/^$/none/'
}

machine_state() {
    printf '%s, %s CPUs, %s GiB RAM, load average %s, %s, offsite %s' "$(date -u '+%F %H:%M UTC')" \
        "$(nproc)" "$(free -g | awk '/^Mem:/ { print $2 }')" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(rclone version | head -1)" "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
}

# timed LOG CMD... : runs CMD under GNU time, output to LOG; sets SECS, CPU (user + sys, the
# children it waited for included), RSS (KiB), RC and LOAD (1-minute load average before).
# With BENCH_PROFILE=1, samples the per-thread CPU of CMD's process into LOG.threads.
SECS='' CPU='' RSS='' RC=0 LOAD=''
timed() {
    local logf=$1 u s tpid
    shift
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    RC=0
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" >"$logf" 2>&1 &
    tpid=$!
    if [[ ${BENCH_PROFILE:-0} == 1 ]]; then sample_threads "$tpid" "$logf.threads"; fi
    wait "$tpid" || RC=$?
    read -r SECS u s RSS < <(tail -1 "$WORK/time.out")
    CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
}

# run_note LOG : empty when the last timed run exited 0, else what went wrong.
run_note() {
    ((RC == 0)) || echo "exit $RC: $(tail -2 "$1" | tr '\n' ' ' | cut -c1-200)"
}

# sample_threads TIME_PID OUT : every 0.5 s until TIME_PID ends, the CPU seconds (user + sys)
# so far of each thread of TIME_PID's child and of that child's children (rclone, cat); the last
# sample is summarised on stderr and kept in OUT. Sampling, not synchronisation.
sample_threads() {
    local tpid=$1 out=$2 pid snap hz
    hz=$(getconf CLK_TCK)
    while kill -0 "$tpid" 2>/dev/null; do
        pid=$(pgrep -P "$tpid" | head -1) || true
        if [[ -n $pid ]]; then
            snap=$(thread_ticks "$pid")
            [[ -z $snap ]] || echo "$snap" >"$out"
        fi
        sleep 0.5
    done
    [[ -s $out ]] || return 0
    log "per-thread CPU seconds (last sample):"
    awk -v hz="$hz" '{ t[$1] += $2 / hz; n[$1]++ }
        END { for (k in t) printf "    %-32s %7.2f s over %d threads\n", k, t[k], n[k] }' "$out" |
        sort -k2 -t'|' >&2
}

# thread_ticks PID : "NAME TICKS" for each thread of PID ("offsite/<thread name>") and each child
# process of PID ("child/<command>"), TICKS = utime + stime (names with spaces get underscores).
thread_ticks() {
    local pid=$1 c
    cat /proc/"$pid"/task/*/stat 2>/dev/null | stat_ticks offsite/
    for c in $(pgrep -P "$pid"); do
        stat_ticks child/ 2>/dev/null <"/proc/$c/stat" || true
    done
}

# stat_ticks PREFIX : /proc stat lines on stdin -> "PREFIX<comm> utime+stime".
stat_ticks() {
    awk -v pfx="$1" '{
        i = index($0, "("); j = length($0)
        while (j > i && substr($0, j, 1) != ")") j--
        name = substr($0, i + 1, j - i - 1); gsub(/ /, "_", name)
        split(substr($0, j + 2), f, " ")
        print pfx name, f[12] + f[13] }'
}

# servers_ticks : CPU ticks (user + sys) used so far by the webdav servers (SERVER_PIDS).
servers_ticks() {
    local pid sum=0 t
    for pid in "${SERVER_PIDS[@]}"; do
        t=$(stat_ticks '' 2>/dev/null <"/proc/$pid/stat" | awk '{ print $2 }') || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

ticks_secs() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }

# The median of the servers' CPU seconds over the runs of VARIANT (wan section).
servers_cpu() {
    awk -F'|' -v v="$1" '$1 == v { print $2 }' "$WORK/server_cpu" 2>/dev/null | sort -n |
        awk '{ a[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print a[(NR + 1) / 2];
            else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# add_row SECTION VARIANT OP RUN BYTES STORED NOTE : one measurement, from the last `timed`.
add_row() {
    printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" "$5" "$SECS" "$CPU" "$RSS" \
        "$6" "$LOAD" "$7" >>"$WORK/rows"
}

# The rows grouped by section, variant and operation, in first-seen order, one line each:
# section|variant|op|bytes|median s|runs "s (load), ..."|median CPU|max RSS KiB|median stored|notes
groups() {
    [[ -s $WORK/rows ]] || return 0
    awk -F'|' '
        function med(s,    a, n, i, j, x) {
            n = split(s, a, " ")
            for (i = 2; i <= n; i++) {
                x = a[i]
                for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]
                a[j + 1] = x
            }
            if (a[1] == "-") return "-"
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            k = $1 "|" $2 "|" $3
            if (!(k in bytes)) { order[++n] = k; bytes[k] = $5 }
            secs[k] = secs[k] " " $6; cpu[k] = cpu[k] " " $7; stored[k] = stored[k] " " $9
            runs[k] = runs[k] (runs[k] == "" ? "" : ", ") $6 " (" $10 ")"
            if ($8 + 0 > rss[k] + 0) rss[k] = $8
            if ($11 != "") notes[k] = notes[k] "run " $4 ": " $11 "; "
        }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]
                printf "%s|%s|%.2f|%s|%.2f|%s|%s|%s\n", k, bytes[k], med(secs[k]), runs[k],
                    med(cpu[k]), rss[k], med(stored[k]), notes[k]
            }
        }' "$WORK/rows"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 2^20 }'; }

table_wan() {
    local s v op b secs runs cpu rss stored notes target
    echo
    echo "### WAN: backup of a compressible stream (3 webdav servers at ${WAN_LIMITS[*]} MiB/s)"
    echo
    echo "| variant | stream | stored, one provider | ratio | seconds (median) | runs: s (load) | CPU s | servers' CPU s | CPU floor s | target s | s / target | peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    while IFS='|' read -r s v op b secs runs cpu rss stored notes; do
        [[ $s == wan ]] || continue
        target=$(awk -v b="$stored" -v l="${WAN_LIMITS[0]}" 'BEGIN { printf "%.2f", b / 2^20 / l * 1.05 }')
        srv=$(servers_cpu "$v")
        printf '| %s | %s | %s MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$(human "$b")" \
            "$(mib "$stored")" "$(awk -v b="$b" -v s="$stored" 'BEGIN { printf "%.2f", b / s }')" \
            "$secs" "$runs" "$cpu" "$srv" \
            "$(awk -v c="$cpu" -v s="$srv" -v n="$(nproc)" 'BEGIN { printf "%.2f", (c + s) / n }')" "$target" \
            "$(awk -v s="$secs" -v t="$target" 'BEGIN { printf "%.2f", s / t }')" "$(mib "$((rss << 10))")"
        [[ -z $notes ]] || NOTES+=("wan / $v: $notes")
    done < <(groups)
    echo
    echo "ratio: stream bytes / stored bytes (one provider's objects, manifest included)."
    echo "target: stored bytes / ${WAN_LIMITS[0]} MiB/s x 1.05 (every byte must reach the slowest server)."
    echo "servers' CPU: user + sys of the three webdav servers during the run (same machine)."
    echo "CPU floor: (CPU + servers' CPU) / $(nproc) cores, the run's time if every core were busy throughout."
}

table_local() {
    local s v op b secs runs cpu rss stored notes
    declare -A plain=()
    echo
    local size
    size=$(awk -F'|' '$1 == "local" { print $5; exit }' "$WORK/rows")
    echo "### Local: $(human "$size") of random data, three directories"
    echo
    echo "| variant | operation | seconds (median) | runs: s (load) | MiB/s | share of plain | CPU s | CPU floor s | peak RSS MiB |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|"
    while IFS='|' read -r s v op b secs runs cpu rss stored notes; do
        [[ $s == local ]] || continue
        [[ $v == plain ]] && plain[$op]=$secs
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$op" "$secs" "$runs" \
            "$(awk -v b="$b" -v s="$secs" 'BEGIN { printf "%.1f", b / 2^20 / s }')" \
            "$(awk -v p="${plain[$op]:-}" -v s="$secs" \
                'BEGIN { if (p == "") print "-"; else printf "%.0f%%", p / s * 100 }')" \
            "$cpu" "$(awk -v c="$cpu" -v n="$(nproc)" 'BEGIN { printf "%.2f", c / n }')" \
            "$(mib "$((rss << 10))")"
        [[ -z $notes ]] || NOTES+=("local / $v / $op: $notes")
    done < <(groups)
    echo
    echo "share of plain: plain's seconds / this row's seconds for the same operation (target >= 80%)."
    echo "CPU floor: CPU / $(nproc) cores, the row's time if every core were busy throughout."
}

table_rss() {
    local s v op b secs runs cpu rss stored notes bound=$((SIF * SHARD_MIB * 2 + 64))
    echo
    echo "### Peak RSS of the zstd+age backup (random data, three directories)"
    echo
    echo "| stream | seconds (median) | runs: s (load) | peak RSS MiB (max of runs) | bound MiB | share of bound |"
    echo "|---|---:|---|---:|---:|---:|"
    while IFS='|' read -r s v op b secs runs cpu rss stored notes; do
        [[ $s == rss ]] || continue
        printf '| %s | %s | %s | %s | %s | %s |\n' "$(human "$b")" "$secs" "$runs" \
            "$(mib "$((rss << 10))")" "$bound" \
            "$(awk -v r="$rss" -v b="$bound" 'BEGIN { printf "%.0f%%", r / 1024 / b * 100 }')"
        [[ -z $notes ]] || NOTES+=("rss / $v: $notes")
    done < <(groups)
    echo
    echo "bound: shards_in_flight ($SIF) x shard_size ($SHARD_MIB MiB) x 2 + 64 MiB."
}

table_restic() {
    local s v op b secs runs cpu rss stored notes
    echo
    echo "### offsite vs restic: the WAN section's tar stream, one local repository/directory"
    echo
    echo "| tool | seconds (median) | runs: s (load) | CPU s | stored MiB | stored / stream | peak RSS MiB |"
    echo "|---|---:|---|---:|---:|---:|---:|"
    while IFS='|' read -r s v op b secs runs cpu rss stored notes; do
        [[ $s == restic ]] || continue
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$v" "$secs" "$runs" "$cpu" "$(mib "$stored")" \
            "$(awk -v b="$b" -v s="$stored" 'BEGIN { printf "%.3f", s / b }')" "$(mib "$((rss << 10))")"
        [[ -z $notes ]] || NOTES+=("restic / $v: $notes")
    done < <(groups)
    echo
    echo "stored: du -sb of the restic repository / of offsite's one provider directory."
}

NOTES=()
print_tables() {
    local n
    echo
    echo "## offsite compression and encryption, $RUNS runs per row"
    echo
    echo "At the start: $START_STATE."
    printf 'Config: shard_size %sMiB, shards_in_flight %s, concurrency 2 (default)%s.\n' \
        "$SHARD_MIB" "$SIF" "${BENCH_OFFSITE_TOML:+, $BENCH_OFFSITE_TOML}"
    grep -q '^wan|' "$WORK/rows" 2>/dev/null && table_wan
    grep -q '^local|' "$WORK/rows" 2>/dev/null && table_local
    grep -q '^rss|' "$WORK/rows" 2>/dev/null && table_rss
    grep -q '^restic|' "$WORK/rows" 2>/dev/null && table_restic
    if ((${#NOTES[@]})); then
        echo
        echo "Notes:"
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
}
