#!/usr/bin/env bash
# bench/tftp.sh: tftpd-hpa (in.tftpd) against airlift's tftpd over loopback.
#
# One run, both servers serving the same directory with the same flags, downloads interleaved
# per repetition (hpa, ours, then ours, hpa, ...), every download verified. Prints medians, the
# time ratio hpa/ours, server CPU seconds per GB (from a cgroup per server), peak RSS under 200
# concurrent downloads, and PASS/FAIL per target. See bench/README.md for every knob and column.
#
# Exit status: 0 when every download verified (whatever the targets say), 1 when a download
# failed, timed out or came back wrong, 2 on a setup error.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME and awk

# ----------------------------------------------------------------------------- knobs
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1}
else
    REPS=${REPS:-6} # even: each server runs first in half the pairs (see README, ABBA)
fi
CONC=${CONC:-200}                    # concurrent downloads in the concurrency row
CONC_REPS=${CONC_REPS:-$((REPS < 3 ? REPS : 3))} # repetitions of the concurrency row (~2 min each)
CLIENT=${CLIENT:-atftp}              # client for the lock-step rows: atftp or curl
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-60} # seconds allowed for one 70 MB download
CONC_TIMEOUT=${CONC_TIMEOUT:-180}    # seconds allowed for each concurrent download
SKIP_APT=${SKIP_APT:-0}              # 1: do not run apt-get (packages already installed)
KEEP=${KEEP:-0}                      # 1: keep the work directories and server logs
RECORD=${RECORD:-auto}               # 1/0: append to bench/RESULTS.md (auto: not with QUICK=1)
CPU_MODE=${CPU_MODE:-auto}           # auto, cgroup1, cgroup2 or proc (see README)
PIN=${PIN:-both}                     # main table CPU placement: both, same, split or none
SERVER_CPU=${SERVER_CPU:-0}          # CPU the servers are pinned to for the main table
OTHER_CPU=${OTHER_CPU:-1}            # CPU the client runs on in the "split" placement

BIG_SIZE=70512640   # bytes of the big file (ap1g8-sized; needs block-number rollover at 512)
CONC_SIZE=16777216  # bytes of the file for the concurrency row (16 MiB)
CONC_BLKSIZE=1468
RSS_TARGET_KB=65536 # 64 MiB
SAMPLE_SECS=0.05    # RSS sampling period

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OURS_BIN=$REPO/target/release/tftpd
HPA_BIN=/usr/sbin/in.tftpd
RESULTS_MD=$HERE/RESULTS.md

die() {
    echo "tftp.sh: $*" >&2
    exit 2
}
log() { echo "== $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS')"
[[ $CONC_REPS =~ ^[1-9][0-9]*$ ]] || die "CONC_REPS must be a positive integer"
if ((REPS > 1 && REPS % 2)); then
    echo "tftp.sh: warning: REPS=$REPS is odd, so tftpd-hpa runs first in one more pair than ours;" \
        "the second download of a pair is measurably slower here (see README), use an even REPS" >&2
fi
[[ $CONC =~ ^[1-9][0-9]*$ ]] || die "CONC must be a positive integer"
[[ $CLIENT == atftp || $CLIENT == curl ]] || die "CLIENT must be atftp or curl"
[[ $(id -u) == 0 ]] || die "run as root (cgroups, chroot, -u root)"
case $PIN in
    both) PLACEMENTS=(same split) ;;
    same | split) PLACEMENTS=("$PIN") ;;
    none) PLACEMENTS=(any) ;;
    *) die "PIN must be both, same, split or none" ;;
esac
if [[ $PIN != none ]]; then
    taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU (SERVER_CPU)"
fi
if [[ $PIN == both || $PIN == split ]]; then
    if [[ $OTHER_CPU == "$SERVER_CPU" ]] || ! taskset -c "$OTHER_CPU" true 2>/dev/null; then
        die "split placement needs a second CPU (OTHER_CPU=$OTHER_CPU); use PIN=same or PIN=none"
    fi
fi
if [[ $RECORD == auto ]]; then
    if [[ $QUICK == 1 ]]; then RECORD=0; else RECORD=1; fi
fi

# ----------------------------------------------------------------------------- install, build
if [[ $SKIP_APT != 1 ]]; then
    log "apt-get update && apt-get install -y tftpd-hpa tftp-hpa atftp curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null || die "apt-get update failed"
    apt-get install -y tftpd-hpa tftp-hpa atftp curl >/dev/null || die "apt-get install failed"
fi
for tool in "$HPA_BIN" atftp curl sha256sum ss timeout awk taskset; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
log "cargo build --release --locked -p tftpd"
(cd "$REPO" && cargo build --release --locked -p tftpd) >&2 || die "cargo build failed"
[[ -x $OURS_BIN ]] || die "no $OURS_BIN after the build"

# The Debian package ships a SysV init script and starts nothing here; stop it if it runs.
if [[ -x /etc/init.d/tftpd-hpa ]] && /etc/init.d/tftpd-hpa status >/dev/null 2>&1; then
    log "stopping the packaged tftpd-hpa service"
    /etc/init.d/tftpd-hpa stop >&2 || true
fi
if stray=$(pgrep -a -x in.tftpd); then
    log "note: other in.tftpd processes run (left alone; our ports are checked free):"
    echo "$stray" >&2
fi

# ----------------------------------------------------------------------------- state, cleanup
SRV=""              # served directory (on disk, so our mapping shows as RssFile, not shmem)
DL=""               # downloads (tmpfs when available: no writeback noise)
OUT=""              # logs and per-row samples
declare -A PID=()   # server -> listener PID (ours: its root monitor; the server is a child)
declare -A PORT=()  # server -> UDP port
declare -A CG=()    # server -> cgroup directory (cgroup modes)
SAMPLERS=()         # background sampler PIDs
BROKEN=0            # set to 1 when a download fails verification or times out

server_procs() { # server -> PIDs of the listener and its transfer processes, one per line
    local s=$1
    if [[ -n ${CG[$s]:-} && -r ${CG[$s]}/cgroup.procs ]]; then
        cat "${CG[$s]}/cgroup.procs"
    elif [[ -n ${PID[$s]:-} ]]; then
        echo "${PID[$s]}"
        pgrep -P "${PID[$s]}" || true
    fi
}

stop_server() {
    local s=$1 p n
    [[ -n ${PID[$s]:-} ]] || return 0
    # The listener, then any transfer children it forked (all of them ours).
    mapfile -t procs < <(server_procs "$s")
    kill "${PID[$s]}" 2>/dev/null || true
    for p in "${procs[@]}"; do
        [[ $p == "${PID[$s]}" ]] || kill "$p" 2>/dev/null || true
    done
    for ((n = 0; n < 50; n++)); do
        kill -0 "${PID[$s]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "${PID[$s]}" 2>/dev/null || true
    wait "${PID[$s]}" 2>/dev/null || true
    PID[$s]=""
}

# shellcheck disable=SC2317 # called from the EXIT trap as well
stop_samplers() {
    local p
    for p in "${SAMPLERS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    SAMPLERS=()
}

# shellcheck disable=SC2317 # only called from the EXIT trap
cleanup() {
    local rc=$? s n j
    trap - EXIT INT TERM
    stop_samplers
    for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
    for s in hpa ours; do stop_server "$s"; done
    for s in hpa ours; do
        [[ -n ${CG[$s]:-} && -d ${CG[$s]} ]] || continue
        for ((n = 0; n < 20; n++)); do
            rmdir "${CG[$s]}" 2>/dev/null && break
            sleep 0.1
        done
    done
    if [[ $KEEP == 1 ]]; then
        echo "kept: served $SRV, downloads $DL, logs $OUT" >&2
    else
        [[ -n $SRV ]] && rm -rf "$SRV"
        [[ -n $DL ]] && rm -rf "$DL"
        [[ -n $OUT ]] && rm -rf "$OUT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- files
SRV=$(mktemp -d /var/tmp/airlift-bench-srv.XXXXXX)
if [[ -d /dev/shm && -w /dev/shm ]]; then
    DL=$(mktemp -d /dev/shm/airlift-bench-dl.XXXXXX)
else
    DL=$(mktemp -d /tmp/airlift-bench-dl.XXXXXX)
fi
OUT=$(mktemp -d /tmp/airlift-bench-out.XXXXXX)
chmod 755 "$SRV"
log "generating test files in $SRV"
head -c "$BIG_SIZE" /dev/urandom >"$SRV/big.bin"
head -c "$CONC_SIZE" /dev/urandom >"$SRV/conc.bin"
head -c 1000 /dev/urandom >"$SRV/ready.bin"
chmod 644 "$SRV"/*.bin # world-readable: neither server needs -p
BIG_SHA=$(sha256sum "$SRV/big.bin" | cut -d' ' -f1)
CONC_SHA=$(sha256sum "$SRV/conc.bin" | cut -d' ' -f1)

# ----------------------------------------------------------------------------- CPU accounting
cg_make() { # server -> creates and records its cgroup; fails if not possible
    local s=$1 dir
    case $CPU_MODE in
        cgroup1) dir=/sys/fs/cgroup/cpuacct/airlift-bench-$s-$$ ;;
        cgroup2) dir=/sys/fs/cgroup/unified/airlift-bench-$s-$$ ;;
        *) return 1 ;;
    esac
    mkdir "$dir" 2>/dev/null || return 1
    CG[$s]=$dir
}

cg_usable() { # mode -> 0 when a process can be put in a fresh cgroup and its CPU read
    local mode=$1 dir ok=1
    case $mode in
        cgroup1) dir=/sys/fs/cgroup/cpuacct/airlift-bench-probe-$$ ;;
        cgroup2) dir=/sys/fs/cgroup/unified/airlift-bench-probe-$$ ;;
    esac
    mkdir "$dir" 2>/dev/null || return 1
    if bash -c 'echo $$ >"$1/cgroup.procs" && x=0 && for ((i = 0; i < 200000; i++)); do x=$((x + i)); done' _ "$dir" 2>/dev/null; then
        if [[ $mode == cgroup1 ]]; then
            [[ $(cat "$dir/cpuacct.usage") -gt 0 ]] && ok=0
        else
            [[ $(awk '$1 == "usage_usec" { print $2 }' "$dir/cpu.stat") -gt 0 ]] && ok=0
        fi
    fi
    rmdir "$dir" 2>/dev/null || true
    return "$ok"
}

if [[ $CPU_MODE == auto ]]; then
    if [[ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]] && cg_usable cgroup1; then
        CPU_MODE=cgroup1
    elif [[ -f /sys/fs/cgroup/unified/cgroup.procs ]] && cg_usable cgroup2; then
        CPU_MODE=cgroup2
    else
        CPU_MODE=proc
    fi
fi
case $CPU_MODE in
    cgroup1) CPU_HOW="cgroup v1 cpuacct.usage (one cgroup per server; transfer children inherit it)" ;;
    cgroup2) CPU_HOW="cgroup v2 cpu.stat usage_usec (one cgroup per server; children inherit it)" ;;
    proc) CPU_HOW="FALLBACK: sum of utime+stime of the listener and its children sampled every 20 ms (misses short-lived processes; cgroups unusable)" ;;
    *) die "CPU_MODE must be auto, cgroup1, cgroup2 or proc" ;;
esac
log "server CPU from: $CPU_HOW"
CLK_TCK=$(getconf CLK_TCK)

proc_cpu_sampler() { # server listener-pid file: appends "pid ticks" every 20 ms
    local pid=$1 file=$2 p
    while kill -0 "$pid" 2>/dev/null; do
        for p in "$pid" $(pgrep -P "$pid"); do
            awk -v p="$p" '{ sub(/^.*\) /, ""); print p, $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
        done >>"$file"
        sleep 0.02
    done
}

cpu_ns() { # server -> CPU nanoseconds its processes used so far
    local s=$1
    case $CPU_MODE in
        cgroup1) cat "${CG[$s]}/cpuacct.usage" ;;
        cgroup2) awk '$1 == "usage_usec" { printf "%.0f\n", $2 * 1000 }' "${CG[$s]}/cpu.stat" ;;
        proc)
            # Each process's counter only grows: its largest sample is its CPU so far. Samples
            # from earlier instances of the server stay in the file, so the total only grows.
            awk -v hz="$CLK_TCK" '{ if ($2 > m[$1]) m[$1] = $2 }
                END { for (p in m) t += m[p]; printf "%.0f\n", t * 1e9 / hz }' \
                "$OUT/cpu-$s.samples"
            ;;
    esac
}

# ----------------------------------------------------------------------------- servers
port_free() { [[ -z $(ss -Hlun "sport = :$1") ]]; }

pick_ports() {
    local p=$((20000 + RANDOM % 40000)) s
    for s in hpa ours; do
        while ! port_free "$p"; do p=$((p + 1)); done
        PORT[$s]=$p
        p=$((p + 1))
    done
}

fetch_ready() { # port -> 0 when the server answers a small download
    timeout 2 curl -sS -o "$DL/ready.out" "tftp://127.0.0.1:$1/ready.bin" 2>/dev/null &&
        [[ $(stat -c %s "$DL/ready.out") == 1000 ]]
}

start_server() { # server [cpu] -- pinned to that CPU (with its children) when given
    local s=$1 cpu=${2:-} bin n holders
    local -a cmd=()
    if [[ $s == hpa ]]; then bin=$HPA_BIN; else bin=$OURS_BIN; fi
    port_free "${PORT[$s]}" || die "port ${PORT[$s]} is taken: $(ss -Hlunp "sport = :${PORT[$s]}")"
    if [[ -n $cpu ]]; then cmd=(taskset -c "$cpu"); fi
    cmd+=("$bin" -L -v -u root -a "127.0.0.1:${PORT[$s]}" -s "$SRV")
    if [[ $CPU_MODE == proc ]]; then
        : >>"$OUT/cpu-$s.samples"
        "${cmd[@]}" >>"$OUT/$s.log" 2>&1 &
    else
        [[ -n ${CG[$s]:-} ]] || cg_make "$s" || die "cannot create a cgroup for $s"
        # Join the cgroup first, then exec the server: every transfer it forks inherits it.
        bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "${CG[$s]}" "${cmd[@]}" >>"$OUT/$s.log" 2>&1 &
    fi
    PID[$s]=$!
    for ((n = 0; n < 50; n++)); do
        fetch_ready "${PORT[$s]}" && break
        kill -0 "${PID[$s]}" 2>/dev/null || die "$s exited at start: $(tail -5 "$OUT/$s.log")"
        sleep 0.1
    done
    ((n < 50)) || die "$s does not answer on port ${PORT[$s]}"
    # The port must be held by this server (ours splits into a root monitor and a server child).
    holders=$(ss -Hlunp "sport = :${PORT[$s]}" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
    if [[ -z $holders ]] || [[ -n $(comm -23 <(echo "$holders") <(server_procs "$s" | sort -u)) ]]; then
        die "port ${PORT[$s]} is not held by our $s (pid ${PID[$s]}): $(ss -Hlunp "sport = :${PORT[$s]}")"
    fi
    if [[ $CPU_MODE == proc ]]; then
        proc_cpu_sampler "${PID[$s]}" "$OUT/cpu-$s.samples" &
        SAMPLERS+=($!)
    fi
}

# ----------------------------------------------------------------------------- downloads
# client_cmd client port file out blksize window -> the command line, in array CMD
client_cmd() {
    local client=$1 port=$2 file=$3 out=$4 bs=$5 win=$6
    if [[ $client == curl ]]; then
        CMD=(curl -sS --tftp-blksize "$bs" -o "$out" "tftp://127.0.0.1:$port/$file")
    else
        CMD=(atftp -g -r "$file" -l "$out" --option "blksize $bs")
        if ((win > 0)); then CMD+=(--option "windowsize $win"); fi
        CMD+=(127.0.0.1 "$port")
    fi
}

# fetch_one server client blksize window placement -> prints seconds; returns 1 on any failure
fetch_one() {
    local s=$1 client=$2 bs=$3 win=$4 pl=$5 out t0 t1 rc=0 size sha
    out=$DL/$s.out
    rm -f "$out"
    client_cmd "$client" "${PORT[$s]}" big.bin "$out" "$bs" "$win"
    case $pl in
        same) CMD=(taskset -c "$SERVER_CPU" "${CMD[@]}") ;;
        split) CMD=(taskset -c "$OTHER_CPU" "${CMD[@]}") ;;
    esac
    t0=$EPOCHREALTIME
    timeout "$CLIENT_TIMEOUT" "${CMD[@]}" >>"$OUT/client.log" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    size=$(stat -c %s "$out" 2>/dev/null || echo 0)
    if ((rc == 124)); then
        echo "timeout after ${CLIENT_TIMEOUT}s ($size bytes)"
        return 1
    elif ((rc != 0)); then
        echo "client exit $rc ($size bytes)"
        return 1
    elif [[ $size != "$BIG_SIZE" ]]; then
        echo "wrong size $size"
        return 1
    fi
    # Every repetition is hashed (a 70 MB sha256 takes well under a second).
    sha=$(sha256sum "$out" | cut -d' ' -f1)
    rm -f "$out"
    if [[ $sha != "$BIG_SHA" ]]; then
        echo "wrong sha256 $sha"
        return 1
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

minimum() { # file of numbers -> smallest, or "-" when empty
    sort -g "$1" 2>/dev/null | awk 'NR == 1 { printf "%.3f\n", $1; found = 1 } END { if (!found) print "-" }'
}

median() { # file of numbers -> median, or "-" when empty
    sort -g "$1" 2>/dev/null | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { # a b -> a/b or "-"
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

ours_logged() { # log-from-line -> "retransmissions windowsizes" ours logged for big.bin since then
    tail -n +"$1" "$OUT/ours.log" | awk '/^sent big\.bin .* retransmissions/ {
        for (i = 1; i <= NF; i++) {
            if ($i == "retransmissions") t += $(i - 1)
            if ($i == "windowsize") { w = $(i + 1); sub(/,$/, "", w); ws[w] = 1 }
        } }
        END { l = ""; for (w in ws) l = l (l == "" ? "" : "/") w; print t + 0, (l == "" ? "?" : l) }'
}

# ----------------------------------------------------------------------------- rows
# name | blksize | windowsize (0 = lock-step) | client
ROWS=("lock-step 512|512|0|$CLIENT" "lock-step 1468|1468|0|$CLIENT")
if [[ $QUICK != 1 ]]; then
    ROWS+=("lock-step 8192|8192|0|$CLIENT" "lock-step 65464|65464|0|$CLIENT")
fi
ROWS+=("window 8 @1468|1468|8|atftp" "window 32 @1468|1468|32|atftp" "window 64 @1468|1468|64|atftp")

pick_ports
log "ports: tftpd-hpa ${PORT[hpa]}, ours ${PORT[ours]}; served dir $SRV; downloads in $DL"
# Main table: servers pinned to SERVER_CPU (unless PIN=none); each placement then puts the
# client on that CPU too ("same") or on another one ("split").
MAIN_CPU=$SERVER_CPU
[[ $PIN != none ]] || MAIN_CPU=""
start_server hpa "$MAIN_CPU"
start_server ours "$MAIN_CPU"
HPA_VERSION=$("$HPA_BIN" -V 2>&1 | head -1)
OURS_VERSION=$("$OURS_BIN" -V 2>&1 | head -1)
GIT_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$REPO" && git status --porcelain -- tftpd Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    GIT_REV="$GIT_REV+dirty"
fi

# Pre-flight: curl at the largest block size on loopback, and what each server grants.
log "pre-flight: curl --tftp-blksize 65464, and the windowsize each server grants"
declare -A GRANT=()
for s in hpa ours; do
    client_cmd curl "${PORT[$s]}" big.bin "$DL/pre.out" 65464 0
    timeout "$CLIENT_TIMEOUT" "${CMD[@]}" 2>>"$OUT/client.log" || die "curl at 65464 from $s failed"
    [[ $(sha256sum "$DL/pre.out" | cut -d' ' -f1) == "$BIG_SHA" ]] || die "curl at 65464 from $s: wrong data"
    rm -f "$DL/pre.out"
    timeout 10 atftp --trace -g -r ready.bin -l "$DL/pre.out" --option "blksize 1468" \
        --option "windowsize 32" 127.0.0.1 "${PORT[$s]}" >"$OUT/grant-$s.log" 2>&1 || die "atftp windowsize probe of $s failed"
    GRANT[$s]=$(awk '/received OACK/ { if (match($0, /windowsize: [0-9]+/)) print substr($0, RSTART + 12, RLENGTH - 12); else print "none"; exit }' "$OUT/grant-$s.log")
    rm -f "$DL/pre.out"
done
log "curl 65464 OK from both; windowsize 32 requested -> granted: tftpd-hpa ${GRANT[hpa]:-?}, ours ${GRANT[ours]:-?}"

TABLE=$OUT/table.md
{
    echo "| row | client | client CPU | tftpd-hpa median s | ours median s | ratio hpa/ours | hpa CPU s/GB | ours CPU s/GB | notes |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---|"
} >"$TABLE"
declare -A MED=() CPUGB=()
LOCKSTEP_ROWS=()
START_ALL=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

placement_label() {
    case $1 in
        same) echo "same as server ($SERVER_CPU)" ;;
        split) echo "other ($OTHER_CPU; server $SERVER_CPU)" ;;
        *) echo "unpinned" ;;
    esac
}

for pl in "${PLACEMENTS[@]}"; do
    : >"$OUT/hpa-1468-all.$pl"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r rname bs win client <<<"$row"
        name="$rname|$pl"
        log "row '$rname', client CPU: $(placement_label "$pl") ($client, $REPS reps)"
        for s in hpa ours; do : >"$OUT/times.$s"; done
        declare -A cpu0=() ok=() failed=()
        notes=()
        for s in hpa ours; do
            cpu0[$s]=$(cpu_ns "$s")
            ok[$s]=0
            failed[$s]=""
        done
        ours_log_line=$(($(wc -l <"$OUT/ours.log") + 1))
        for ((rep = 1; rep <= REPS; rep++)); do
            # A B, then B A: a drift inside one repetition hits both servers alike.
            if ((rep % 2)); then order=(hpa ours); else order=(ours hpa); fi
            for s in "${order[@]}"; do
                [[ -z ${failed[$s]} ]] || continue # a server that failed this row is not retried
                if res=$(fetch_one "$s" "$client" "$bs" "$win" "$pl"); then
                    echo "$res" >>"$OUT/times.$s"
                    ok[$s]=$((ok[$s] + 1))
                    printf '   rep %d %-4s %8.3f s\n' "$rep" "$s" "$res" >&2
                else
                    failed[$s]="rep $rep: $res"
                    BROKEN=1
                    echo "   rep $rep $s FAILED: $res" >&2
                fi
            done
        done
        for s in hpa ours; do
            used=$(($(cpu_ns "$s") - cpu0[$s]))
            MED[$name,$s]=$(median "$OUT/times.$s")
            if ((ok[$s] > 0)); then
                # ns per byte == s per GB (1e9 bytes)
                CPUGB[$name,$s]=$(awk -v ns="$used" -v b="$((ok[$s] * BIG_SIZE))" 'BEGIN { printf "%.2f\n", ns / b }')
            else
                CPUGB[$name,$s]="-"
            fi
            [[ -z ${failed[$s]} ]] || notes+=("$s FAILED ${failed[$s]}")
        done
        read -r rx wgrant <<<"$(ours_logged "$ours_log_line")"
        if ((win > 0)); then
            notes+=("ours ran windowsize $wgrant; tftpd-hpa has none (OACK: ${GRANT[hpa]:-?}), so lock-step")
        else
            LOCKSTEP_ROWS+=("$name")
        fi
        if ((bs == 512)); then notes+=("block numbers roll over (137,721 blocks)"); fi
        ((rx == 0)) || notes+=("ours logged $rx retransmissions")
        r=$(ratio "${MED[$name,hpa]}" "${MED[$name,ours]}")
        MED[$name,ratio]=$r
        mbs_h=$(awk -v m="${MED[$name,hpa]}" -v b="$BIG_SIZE" 'BEGIN { if (m == "-") print "-"; else printf "%.0f", b / m / 1e6 }')
        mbs_o=$(awk -v m="${MED[$name,ours]}" -v b="$BIG_SIZE" 'BEGIN { if (m == "-") print "-"; else printf "%.0f", b / m / 1e6 }')
        notes=("MB/s $mbs_h vs $mbs_o; min s $(minimum "$OUT/times.hpa") vs $(minimum "$OUT/times.ours"); n=${ok[hpa]}/${ok[ours]}" "${notes[@]}")
        if ((bs == 1468)); then cat "$OUT/times.hpa" >>"$OUT/hpa-1468-all.$pl"; fi
        note_text=$(printf '%s; ' "${notes[@]}")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$rname" "$client" "$(placement_label "$pl")" "${MED[$name,hpa]}" \
            "${MED[$name,ours]}" "$r" "${CPUGB[$name,hpa]}" "${CPUGB[$name,ours]}" "${note_text%; }" >>"$TABLE"
        unset cpu0 ok failed
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Ours' memory after the rows above, per process (the 70 MB file is mapped: RssFile).
OURS_MAIN_RSS=$(server_procs ours | while read -r p; do
    awk -v p="$p" '/^(VmHWM|RssAnon|RssFile):/ { v = v " " $1 " " $2 " kB" } END { printf "pid %s%s; ", p, v }' "/proc/$p/status" 2>/dev/null || true
done)
OURS_MAIN_RSS=${OURS_MAIN_RSS%; }
stop_server hpa
stop_server ours

# ----------------------------------------------------------------------------- concurrency
rss_sampler() { # server file: every SAMPLE_SECS, "nprocs rss anon file maps" (kB, summed;
    # maps = mappings of conc.bin over the server's processes: how many copies ours holds)
    local s=$1 file=$2 maps
    while :; do
        mapfile -t procs < <(server_procs "$s")
        ((${#procs[@]} > 0)) || break
        maps=$(printf '/proc/%s/maps\n' "${procs[@]}" | xargs cat 2>/dev/null | grep -c 'conc\.bin' || true)
        printf '/proc/%s/status\n' "${procs[@]}" | xargs cat 2>/dev/null |
            awk -v maps="${maps:-0}" '/^Pid:/ { n++ } /^VmRSS:/ { r += $2 } /^RssAnon:/ { a += $2 }
                 /^RssFile:/ { f += $2 } END { print n + 0, r + 0, a + 0, f + 0, maps + 0 }' >>"$file" || true
        sleep "$SAMPLE_SECS"
    done
}

CONC_TABLE=$OUT/conc.md
{
    echo "| server | reps | wall s (median) | total MB/s | peak RSS MiB | peak RssAnon MiB | peak RssFile MiB | peak processes | peak conc.bin mappings | server CPU s/GB | failed downloads |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$CONC_TABLE"
declare -A CONC_WALL=() CONC_RSS=() CONC_FAIL=() CONC_CPU=() CONC_ANON=() CONC_FILE=() CONC_NPROC=() CONC_MAPS=()
for s in hpa ours; do
    : >"$OUT/conc-times.$s"
    : >"$OUT/conc-rss.$s"
    CONC_FAIL[$s]=0
    CONC_CPU[$s]=0
done

for ((rep = 1; rep <= CONC_REPS; rep++)); do
    if ((rep % 2)); then order=(hpa ours); else order=(ours hpa); fi
    for s in "${order[@]}"; do
        # A fresh server for every repetition: VmHWM cannot be reset, and nothing carries over.
        # Not pinned: 200 clients and the server share all CPUs.
        start_server "$s"
        samples=$OUT/rss-$s-$rep
        : >"$samples"
        rss_sampler "$s" "$samples" &
        sampler=$!
        c0=$(cpu_ns "$s")
        pids=()
        t0=$EPOCHREALTIME
        for ((i = 1; i <= CONC; i++)); do
            timeout "$CONC_TIMEOUT" curl -sS --tftp-blksize "$CONC_BLKSIZE" -o "$DL/c$i" \
                "tftp://127.0.0.1:${PORT[$s]}/conc.bin" 2>>"$OUT/conc-client.log" &
            pids+=($!)
        done
        declare -A badset=()
        for ((i = 1; i <= CONC; i++)); do wait "${pids[i - 1]}" || badset[$i]="client exit"; done
        t1=$EPOCHREALTIME
        c1=$(cpu_ns "$s")
        # Sum of the peaks of the processes still alive (ours: monitor + server; tftpd-hpa:
        # only the listener, its children are gone); the sampled sum catches the rest.
        hwm=$(server_procs "$s" | sed 's|.*|/proc/&/status|' | xargs cat 2>/dev/null | awk '/^VmHWM:/ { t += $2 } END { print t + 0 }')
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        stop_server "$s"
        # Verify every download: size, then sha256 of each file of the right size.
        for ((i = 1; i <= CONC; i++)); do
            if [[ $(stat -c %s "$DL/c$i" 2>/dev/null || echo 0) != "$CONC_SIZE" ]]; then
                badset[$i]="size"
                rm -f "$DL/c$i"
            fi
        done
        while read -r i; do badset[$i]="sha256"; done < <(cd "$DL" &&
            find . -maxdepth 1 -name 'c[0-9]*' -type f -print0 | xargs -0 -r -P "$(nproc)" -n 25 sha256sum |
            awk -v want="$CONC_SHA" '$1 != want { sub(/^\.\/c/, "", $2); print $2 }')
        bad=${#badset[@]}
        unset badset
        rm -f "$DL"/c[0-9]*
        CONC_FAIL[$s]=$((CONC_FAIL[$s] + bad))
        ((bad == 0)) || BROKEN=1
        CONC_CPU[$s]=$((CONC_CPU[$s] + c1 - c0))
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }')
        echo "$wall" >>"$OUT/conc-times.$s"
        # peak of the summed VmRSS (hpa: over all its processes); ours: also VmHWM, exact.
        peak=$(awk -v h="${hwm:-0}" '{ if ($2 > r) r = $2; if ($3 > a) a = $3; if ($4 > f) f = $4; if ($1 > n) n = $1; if ($5 > m) m = $5 }
            END { if (h > r) r = h; print r + 0, a + 0, f + 0, n + 0, m + 0 }' "$samples")
        echo "$peak" >>"$OUT/conc-rss.$s"
        read -r pr pa pf pn pm <<<"$peak"
        printf '   rep %d %-4s %8.3f s  peak RSS %d kB (anon %d, file %d) over up to %d processes, %d mappings of conc.bin, %d failed\n' \
            "$rep" "$s" "$wall" "$pr" "$pa" "$pf" "$pn" "$pm" "$bad" >&2
    done
done
for s in hpa ours; do
    CONC_WALL[$s]=$(median "$OUT/conc-times.$s")
    read -r CONC_RSS[$s] CONC_ANON[$s] CONC_FILE[$s] CONC_NPROC[$s] CONC_MAPS[$s] < <(awk '{ for (i = 1; i <= 5; i++) if ($i > m[i]) m[i] = $i }
        END { print m[1] + 0, m[2] + 0, m[3] + 0, m[4] + 0, m[5] + 0 }' "$OUT/conc-rss.$s")
    mbs=$(awk -v w="${CONC_WALL[$s]}" -v b="$((CONC * CONC_SIZE))" 'BEGIN { printf "%.0f", b / w / 1e6 }')
    cpugb=$(awk -v ns="${CONC_CPU[$s]}" -v b="$((CONC_REPS * CONC * CONC_SIZE))" 'BEGIN { printf "%.2f", ns / b }')
    if [[ $s == ours ]]; then label=ours; else label=tftpd-hpa; fi
    maps=${CONC_MAPS[$s]}
    if [[ $s == hpa ]]; then maps="- (reads, no mapping)"; fi
    printf '| %s | %d | %s | %s | %.1f | %.1f | %.1f | %d | %s | %s | %d |\n' "$label" "$CONC_REPS" "${CONC_WALL[$s]}" "$mbs" \
        "$(awk -v k="${CONC_RSS[$s]}" 'BEGIN { print k / 1024 }')" "$(awk -v k="${CONC_ANON[$s]}" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="${CONC_FILE[$s]}" 'BEGIN { print k / 1024 }')" "${CONC_NPROC[$s]}" "$maps" "$cpugb" "${CONC_FAIL[$s]}" >>"$CONC_TABLE"
done
ELAPSED=$(awk -v a="$START_ALL" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

# ----------------------------------------------------------------------------- targets
TARGETS=$OUT/targets.md
verdict() { if [[ $1 == 1 ]]; then echo PASS; else echo FAIL; fi; }
{
    fails=()
    for name in "${LOCKSTEP_ROWS[@]}"; do
        awk -v r="${MED[$name,ratio]}" 'BEGIN { exit !(r != "-" && r + 0 >= 1.0) }' || fails+=("${name/|/ }: ${MED[$name,ratio]}")
    done
    if ((${#fails[@]} == 0)); then
        echo "- $(verdict 1): ratio >= 1.0 on every lock-step row"
    else
        echo "- $(verdict 0): ratio >= 1.0 on every lock-step row (below: $(printf '%s, ' "${fails[@]}" | sed 's/, $//'))"
    fi

    # tftpd-hpa runs the same lock-step 1468 transfer in the window rows (it has no windowsize),
    # so all its 1468 downloads of a placement are samples of its lock-step 1468: their median.
    for pl in "${PLACEMENTS[@]}"; do
        w32=${MED[window 32 @1468|$pl,ours]:-"-"}
        h1468=${MED[lock-step 1468|$pl,hpa]:-"-"}
        pooled=$(median "$OUT/hpa-1468-all.$pl")
        r4=$(ratio "$pooled" "$w32")
        pass=$(awk -v r="$r4" 'BEGIN { print (r != "-" && r + 0 >= 4.0) ? 1 : 0 }')
        echo "- $(verdict "$pass"): [client CPU $pl] ours at blksize 1468 windowsize 32 >= 4x tftpd-hpa lock-step 1468 (got ${r4}x: median of all $(wc -l <"$OUT/hpa-1468-all.$pl") tftpd-hpa 1468 downloads $pooled s vs ours $w32 s; against the lock-step 1468 row alone, $h1468 s: $(ratio "$h1468" "$w32")x)"
    done

    fails=()
    for pl in "${PLACEMENTS[@]}"; do
        for row in "${ROWS[@]}"; do
            name="${row%%|*}|$pl"
            awk -v h="${CPUGB[$name,hpa]}" -v o="${CPUGB[$name,ours]}" \
                'BEGIN { exit !(h != "-" && o != "-" && o + 0 <= h + 0) }' || fails+=("${name/|/ }: ${CPUGB[$name,ours]} vs ${CPUGB[$name,hpa]}")
        done
    done
    ch=$(awk -v ns="${CONC_CPU[hpa]}" -v b="$((CONC_REPS * CONC * CONC_SIZE))" 'BEGIN { printf "%.2f", ns / b }')
    co=$(awk -v ns="${CONC_CPU[ours]}" -v b="$((CONC_REPS * CONC * CONC_SIZE))" 'BEGIN { printf "%.2f", ns / b }')
    awk -v h="$ch" -v o="$co" 'BEGIN { exit !(o + 0 <= h + 0) }' || fails+=("concurrency $co vs $ch")
    if ((${#fails[@]} == 0)); then
        echo "- $(verdict 1): server CPU per GB <= tftpd-hpa's on every row"
    else
        echo "- $(verdict 0): server CPU per GB <= tftpd-hpa's on every row (above, ours vs hpa s/GB: $(printf '%s, ' "${fails[@]}" | sed 's/, $//'))"
    fi

    pass=$(((CONC_RSS[ours] > 0 && CONC_RSS[ours] < RSS_TARGET_KB && CONC_FAIL[ours] == 0) ? 1 : 0))
    echo "- $(verdict "$pass"): $CONC concurrent transfers in under 64 MiB RSS (ours peak ${CONC_RSS[ours]} kB over its ${CONC_NPROC[ours]} processes = $(awk -v k="${CONC_RSS[ours]}" 'BEGIN { printf "%.1f", k / 1024 }') MiB, of which RssFile up to ${CONC_FILE[ours]} kB; ${CONC_FAIL[ours]} failed downloads)"
} >"$TARGETS"

# ----------------------------------------------------------------------------- report
REPORT=$OUT/report.md
{
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC')$([[ $QUICK == 1 ]] && echo ' (QUICK smoke run)')"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), $(awk -F= '$1 == "PRETTY_NAME" { gsub(/"/, "", $2); print $2 }' /etc/os-release); load average $LOAD_START before the rows, $LOAD_END after them (shared machine)"
    echo "- servers: \`$HPA_VERSION\` vs \`$OURS_VERSION\` (git $GIT_REV), both \`-L -v -u root -a 127.0.0.1:PORT -s DIR\`"
    echo "- file: $BIG_SIZE bytes of random data, same directory for both; REPS=$REPS per row, interleaved hpa/ours then ours/hpa; every download size- and sha256-checked"
    if [[ $PIN == none ]]; then
        echo "- CPU placement: nothing pinned (PIN=none): lock-step times depend on whether the scheduler puts client and server on one CPU"
    else
        echo "- CPU placement (PIN=$PIN): both servers pinned to CPU $SERVER_CPU for the main table; the client on the same CPU (\"same\") or on CPU $OTHER_CPU (\"other\"); the concurrency row pins nothing"
    fi
    echo "- packages: $(dpkg-query -W -f '${Package} ${Version}, ' tftpd-hpa atftp curl 2>/dev/null | sed 's/, $//')"
    echo "- clients: lock-step rows $CLIENT; window rows atftp (\`--option \"windowsize N\"\`; tftpd-hpa ignores it and runs lock-step); concurrency row curl"
    echo "- server CPU: $CPU_HOW"
    echo "- ratio = tftpd-hpa median / ours median (> 1: ours faster). CPU s/GB = server CPU seconds / (bytes delivered / 1e9)"
    echo
    cat "$TABLE"
    echo
    echo "Ours after the rows above (big.bin mapped; per process): $OURS_MAIN_RSS"
    echo
    echo "Concurrency: $CONC downloads started at once with curl --tftp-blksize $CONC_BLKSIZE of a $CONC_SIZE-byte (16 MiB) file, $CONC_REPS reps, a fresh server each; peak RSS = the larger of the sum of VmRSS over all the server's processes sampled every ${SAMPLE_SECS}s and the sum of VmHWM of the processes alive at the end (ours: monitor + server, so exact; tftpd-hpa: its transfer children are gone by then, so sampled):"
    echo
    cat "$CONC_TABLE"
    echo
    echo "Targets (reported, not enforced):"
    echo
    cat "$TARGETS"
    echo
    echo "Run took ${ELAPSED}s after setup$([[ $BROKEN == 1 ]] && echo '; SOME DOWNLOADS FAILED, see notes')."
    echo
} >"$REPORT"

echo
cat "$REPORT"
if [[ $RECORD == 1 ]]; then
    if [[ ! -f $RESULTS_MD ]]; then
        printf '# tftp benchmark results\n\nProduced by bench/tftp.sh (see README.md); newest last.\n\n' >"$RESULTS_MD"
    fi
    cat "$REPORT" >>"$RESULTS_MD"
    log "appended to $RESULTS_MD"
fi
if [[ $BROKEN == 1 ]]; then
    echo "tftp.sh: some downloads failed or came back wrong (see the notes above)" >&2
    exit 1
fi
exit 0
