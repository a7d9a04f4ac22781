#!/usr/bin/env bash
# bench/sftp.sh: OpenSSH sshd + internal-sftp against airlift's sftpd over loopback.
#
# One run, both servers started from the SAME sshd_config (only the port differs, given with
# -p), serving the same chroot to the same system user, both running all the time. Every row
# runs both servers in turn per repetition, in ABBA order, with OpenSSH's own `sftp` client.
# Prints medians, the time ratio sshd/ours (> 1: ours faster), server CPU per GB (or per
# login), peak server RSS, and PASS/FAIL per target.
#
# Rows (REPS repetitions each, default 3):
#   1-4  one download of the 70 MB / 301 MB file, cipher chacha20-poly1305 / aes128-gcm
#   5    one 70 MB upload into upload/ (chacha20), checked server side, then removed
#   6-7  20 and 50 concurrent 70 MB downloads: wall time until the last one ends, failures
#   8    login latency: LOGINS sequential `sftp -b` sessions running one `pwd` (key auth)
#   9    50 simultaneous logins, each `sftp -b` running `ls`: failures counted. MaxStartups is
#        left at its default (10:30:100) for both servers: sshd drops some of them at random.
#
# Order: in repetition r of row k the first server is sshd when (r + k) is odd, ours otherwise
# (A B, then B A). Within one row an odd REPS leaves one server first once more; because the
# parity also flips from row to row, over the whole table each server goes first equally
# often (+-1). Row 8 alternates the servers login by login in the same way.
#
# Measurement:
#   wall   $EPOCHREALTIME around the client command(s) (`timeout $CLIENT_TIMEOUT` each).
#   CPU    each server is started inside its own cgroup (v1 cpuacct, else v2); every process it
#          forks or re-executes (sshd's per-connection and privsep children, sftpd's per-session
#          processes) inherits it, so the cgroup's usage counter is the CPU of the whole server
#          process tree; the row's CPU is its delta over the row. Fallback without cgroups
#          (CPU_MODE=proc): utime+stime+cutime+cstime of the listener (fields 14-17 of
#          /proc/PID/stat), which includes every connection process the listener has reaped;
#          read after all clients of the row ended (and the listener reaped them).
#   RSS    a sampler sums VmRSS over all processes of each server (cgroup.procs, or the
#          listener's descendants) every SAMPLE_SECS (50 ms) for the whole run; a row's peak is
#          the largest sum sampled while the row ran. Shared pages (libraries, page cache
#          mappings) count once per process, as in ps.
#   data   every download is size-checked; the sha256 of every sequential download and of
#          every concurrent download of the first repetition is checked (later repetitions
#          of the concurrent rows: size only); uploads are hashed on the server side.
#
# Needs root (useradd, chroot, cgroups). Writes only under /srv/airlift-sftp-bench, two
# mktemp dirs (/run/airlift-sftp-bench.*: config, keys, logs; /dev/shm/airlift-sftp-dl.*:
# downloads) and /run/sshd (sshd's privilege separation directory, removed if we made it);
# the user airliftbench, both servers, the cgroups and the files are removed at exit.
# The config dir is under /run, not /tmp, because sshd (StrictModes) refuses an
# AuthorizedKeysFile below a world-writable directory such as /tmp or /var/tmp.
#
# Knobs: REPS (3), LOGINS (20), CLIENT_TIMEOUT (300), SKIP_APT=1, SKIP_BUILD=1, KEEP=1 (keep
# files and logs), LOG_LEVEL (INFO; LogLevel of both servers), CPU_MODE (auto|cgroup1|cgroup2|proc), PORT_SSHD / PORT_OURS (default: the
# first free ports from 42222 up), RECORD=1 (append the report to bench/RESULTS.md).
#
# Exit status: 0 when every transfer and login of ours succeeded and every download that
# completed (either server) verified, whatever the targets say; 1 otherwise; 2 on a setup error.
# sshd's transfers dropped by its MaxStartups in the concurrent rows are counted in the table
# (they are the expected behaviour of its defaults), not in the exit status.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME and awk

# ----------------------------------------------------------------------------- knobs
REPS=${REPS:-3}
LOGINS=${LOGINS:-20}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-300}
SKIP_APT=${SKIP_APT:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
CPU_MODE=${CPU_MODE:-auto}
RECORD=${RECORD:-0}
LOG_LEVEL=${LOG_LEVEL:-INFO} # LogLevel in the shared config (VERBOSE shows sftpd's penalty drops)
SAMPLE_SECS=0.05

BENCH_USER=airliftbench
BENCH_GECOS="airlift sftp bench (bench/sftp.sh)"
CHROOT=/srv/airlift-sftp-bench
SMALL_SIZE=70512640
BIG_SIZE=301257756
CHACHA=chacha20-poly1305@openssh.com
AESGCM=aes128-gcm@openssh.com

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OURS_BIN=$REPO/target/release/sftpd
SSHD_BIN=/usr/sbin/sshd
RESULTS_MD=$HERE/RESULTS.md

die() {
    echo "sftp.sh: $*" >&2
    exit 2
}
log() { echo "== $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS')"
[[ $LOGINS =~ ^[1-9][0-9]*$ ]] || die "LOGINS must be a positive integer"
[[ $CLIENT_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "CLIENT_TIMEOUT must be a positive integer"
[[ $(id -u) == 0 ]] || die "must run as root: it creates the system user $BENCH_USER (useradd, chpasswd), a root-owned chroot under /srv and cgroups"

# ----------------------------------------------------------------------------- install, build
if [[ $SKIP_APT != 1 ]]; then
    log "apt-get update && apt-get install -y openssh-server openssh-client sshpass"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null || die "apt-get update failed"
    apt-get install -y openssh-server openssh-client sshpass >/dev/null || die "apt-get install failed"
fi
# Debian's ssh service is never started by us; if the package's postinst started it (SysV
# init, no systemd here), stop it again so only the two benchmark servers run.
if [[ -x /etc/init.d/ssh ]] && /etc/init.d/ssh status >/dev/null 2>&1; then
    log "stopping the packaged ssh service"
    /etc/init.d/ssh stop >&2 || true
fi
for tool in "$SSHD_BIN" sftp ssh ssh-keygen sshpass useradd userdel chpasswd sha256sum ss timeout awk; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release --locked -p sftpd"
    (cd "$REPO" && cargo build --release --locked -p sftpd) >&2 || die "cargo build failed"
fi
[[ -x $OURS_BIN ]] || die "no $OURS_BIN (build it, or unset SKIP_BUILD)"

# ----------------------------------------------------------------------------- state, cleanup
WORK=""           # config, keys, logs, tables
DL=""             # downloads (tmpfs)
MADE_RUN_SSHD=0
MADE_USER=0
MADE_CHROOT=0
SAMPLER=""
declare -A PID=() PORT=() CG=()
BROKEN=0
declare -A GONE=() # server -> set once its listener is found dead (nothing here restarts it)
ALERTS=()

server_procs() { # server -> its PIDs, one per line
    local s=$1
    if [[ -n ${CG[$s]:-} && -r ${CG[$s]}/cgroup.procs ]]; then
        cat "${CG[$s]}/cgroup.procs"
    elif [[ -n ${PID[$s]:-} ]]; then
        # the listener and all its descendants
        ps -e -o pid=,ppid= | awk -v root="${PID[$s]}" '{ par[$1] = $2 }
            END { for (p in par) { q = p; while (q in par && q != root && q > 1) q = par[q]; if (q == root) print p } }'
    fi
}

# shellcheck disable=SC2317 # called from the EXIT trap as well
stop_server() {
    local s=$1 p n
    [[ -n ${PID[$s]:-} ]] || return 0
    mapfile -t procs < <(server_procs "$s")
    kill "${PID[$s]}" 2>/dev/null || true
    for ((n = 0; n < 50; n++)); do
        kill -0 "${PID[$s]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "${PID[$s]}" 2>/dev/null || true
    wait "${PID[$s]}" 2>/dev/null || true
    for p in "${procs[@]}"; do
        [[ $p == "${PID[$s]}" ]] || kill -KILL "$p" 2>/dev/null || true
    done
    PID[$s]=""
}

# shellcheck disable=SC2317 # only called from the EXIT trap
cleanup() {
    local rc=$? s n j
    trap - EXIT INT TERM
    if [[ -n $SAMPLER ]]; then kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; fi
    for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
    for s in sshd ours; do stop_server "$s"; done
    for s in sshd ours; do
        [[ -n ${CG[$s]:-} && -d ${CG[$s]} ]] || continue
        for ((n = 0; n < 30; n++)); do
            rmdir "${CG[$s]}" 2>/dev/null && break
            sleep 0.1
        done
    done
    if ((MADE_USER)); then userdel "$BENCH_USER" 2>/dev/null || echo "sftp.sh: userdel $BENCH_USER failed" >&2; fi
    if ((MADE_RUN_SSHD)); then rmdir /run/sshd 2>/dev/null || true; fi
    if [[ $KEEP == 1 ]]; then
        echo "kept: chroot $CHROOT, work dir (config, logs) $WORK, downloads $DL" >&2
    else
        ((MADE_CHROOT)) && rm -rf "$CHROOT"
        [[ -n $DL ]] && rm -rf "$DL"
        [[ -n $WORK ]] && rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- user, chroot, files
if id "$BENCH_USER" >/dev/null 2>&1; then
    # Left over by an earlier run that was killed (recognised by its comment field)?
    if [[ $(getent passwd "$BENCH_USER" | cut -d: -f5) == "$BENCH_GECOS" ]]; then
        log "removing the user $BENCH_USER left over by an earlier run"
        userdel "$BENCH_USER" || die "userdel $BENCH_USER failed"
    else
        die "a user $BENCH_USER exists and was not made by this script; refusing to touch it"
    fi
fi
WORK=$(mktemp -d /run/airlift-sftp-bench.XXXXXX)
chmod 755 "$WORK"
if [[ -d /dev/shm && -w /dev/shm ]]; then
    DL=$(mktemp -d /dev/shm/airlift-sftp-dl.XXXXXX)
else
    DL=$(mktemp -d /tmp/airlift-sftp-dl.XXXXXX)
fi
if [[ ! -d /run/sshd ]]; then
    mkdir -m 755 /run/sshd
    MADE_RUN_SSHD=1
fi

PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
useradd --system --no-create-home --home-dir /upload --shell /usr/sbin/nologin \
    --comment "$BENCH_GECOS" "$BENCH_USER" || die "useradd failed"
MADE_USER=1
echo "$BENCH_USER:$PASSWORD" | chpasswd || die "chpasswd failed"

ssh-keygen -q -t ed25519 -N '' -C "$BENCH_USER@bench" -f "$WORK/userkey" || die "ssh-keygen (user key) failed"
ssh-keygen -q -t ed25519 -N '' -C "bench host key" -f "$WORK/hostkey" || die "ssh-keygen (host key) failed"
mkdir -m 755 "$WORK/authkeys"
install -m 644 "$WORK/userkey.pub" "$WORK/authkeys/$BENCH_USER"

# Chroot: every component root-owned and not group/other writable (sshd checks it).
[[ -e $CHROOT ]] && { log "removing $CHROOT left over by an earlier run"; rm -rf "$CHROOT"; }
mkdir -m 755 "$CHROOT" "$CHROOT/images"
MADE_CHROOT=1
mkdir -m 755 "$CHROOT/upload"
chown "$BENCH_USER:" "$CHROOT/upload"
log "generating $SMALL_SIZE- and $BIG_SIZE-byte random files in $CHROOT/images"
head -c "$SMALL_SIZE" /dev/urandom >"$CHROOT/images/small.bin"
head -c "$BIG_SIZE" /dev/urandom >"$CHROOT/images/big.bin"
chmod 644 "$CHROOT"/images/*.bin
declare -A SIZE=([small]=$SMALL_SIZE [big]=$BIG_SIZE) SHA=()
SHA[small]=$(sha256sum "$CHROOT/images/small.bin" | cut -d' ' -f1)
SHA[big]=$(sha256sum "$CHROOT/images/big.bin" | cut -d' ' -f1)

# ----------------------------------------------------------------------------- config (shared)
CONFIG=$WORK/sshd_config
cat >"$CONFIG" <<EOF
# bench/sftp.sh: read by both sshd and sftpd; the port is given with -p.
ListenAddress 127.0.0.1
HostKey $WORK/hostkey
PidFile none
PasswordAuthentication yes
PubkeyAuthentication yes
AuthorizedKeysFile $WORK/authkeys/%u
UsePAM no
LogLevel $LOG_LEVEL
# MaxStartups deliberately left at its default (10:30:100) for both servers.
Subsystem sftp internal-sftp

Match User $BENCH_USER
    ChrootDirectory $CHROOT
    ForceCommand internal-sftp
EOF
"$SSHD_BIN" -t -f "$CONFIG" || die "sshd -t rejects $CONFIG"

# ----------------------------------------------------------------------------- CPU accounting
cg_usable() { # mode -> 0 when a process can be put in a fresh cgroup and its CPU read
    local mode=$1 dir ok=1
    case $mode in
        cgroup1) dir=/sys/fs/cgroup/cpuacct/airlift-sftp-probe-$$ ;;
        cgroup2) dir=/sys/fs/cgroup/unified/airlift-sftp-probe-$$ ;;
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
    cgroup1) CPU_HOW="cgroup v1 cpuacct.usage, one cgroup per server (all forked/re-executed connection processes inherit it)" ;;
    cgroup2) CPU_HOW="cgroup v2 cpu.stat usage_usec, one cgroup per server (all connection processes inherit it)" ;;
    proc) CPU_HOW="FALLBACK (no usable cgroup): utime+stime+cutime+cstime of the listener from /proc/PID/stat, which includes the connection processes it reaped" ;;
    *) die "CPU_MODE must be auto, cgroup1, cgroup2 or proc" ;;
esac
log "server CPU from: $CPU_HOW"
CLK_TCK=$(getconf CLK_TCK)

cpu_ns() { # server -> CPU nanoseconds used so far by the server's process tree
    local s=$1
    case $CPU_MODE in
        cgroup1) cat "${CG[$s]}/cpuacct.usage" ;;
        cgroup2) awk '$1 == "usage_usec" { printf "%.0f\n", $2 * 1000 }' "${CG[$s]}/cpu.stat" ;;
        proc) awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13 + $14 + $15) * 1e9 / hz }' "/proc/${PID[$s]}/stat" ;;
    esac
}

# ----------------------------------------------------------------------------- servers
port_free() { [[ -z $(ss -Hltn "sport = :$1") ]]; }
p=42222
for s in sshd ours; do
    var=PORT_${s^^}
    if [[ -n ${!var:-} ]]; then
        PORT[$s]=${!var}
    else
        while ! port_free "$p"; do p=$((p + 1)); done
        PORT[$s]=$p
        p=$((p + 1))
    fi
done

start_server() { # server
    local s=$1 n dir
    local -a cmd
    if [[ $s == sshd ]]; then cmd=("$SSHD_BIN"); else cmd=("$OURS_BIN"); fi
    # Same flags for both: sftpd takes sshd's.
    cmd+=(-D -f "$CONFIG" -p "${PORT[$s]}" -E "$WORK/$s.log")
    port_free "${PORT[$s]}" || die "port ${PORT[$s]} is taken: $(ss -Hltnp "sport = :${PORT[$s]}")"
    : >>"$WORK/$s.log"
    if [[ $CPU_MODE == proc ]]; then
        "${cmd[@]}" >>"$WORK/$s.stderr" 2>&1 &
    else
        if [[ $CPU_MODE == cgroup1 ]]; then dir=/sys/fs/cgroup/cpuacct/airlift-sftp-$s-$$; else dir=/sys/fs/cgroup/unified/airlift-sftp-$s-$$; fi
        mkdir "$dir" || die "cannot create cgroup $dir"
        CG[$s]=$dir
        # Join the cgroup, then exec the server: every process it starts inherits the cgroup.
        bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$dir" "${cmd[@]}" >>"$WORK/$s.stderr" 2>&1 &
    fi
    PID[$s]=$!
    for ((n = 0; n < 100; n++)); do
        grep -q "Server listening on 127.0.0.1 port ${PORT[$s]}\." "$WORK/$s.log" && break
        kill -0 "${PID[$s]}" 2>/dev/null || die "$s exited at start: $(tail -5 "$WORK/$s.log" "$WORK/$s.stderr")"
        sleep 0.1
    done
    ((n < 100)) || die "$s did not log 'Server listening on 127.0.0.1 port ${PORT[$s]}.' within 10 s"
}

rss_sampler() { # every SAMPLE_SECS: "epoch rss_sshd rss_ours" (kB, summed over each tree)
    local s tot line
    while :; do
        line=$EPOCHREALTIME
        for s in sshd ours; do
            tot=$(server_procs "$s" | sed 's|.*|/proc/&/status|' | xargs -r cat 2>/dev/null |
                awk '/^VmRSS:/ { r += $2 } END { print r + 0 }' || echo 0)
            line+=" $tot"
        done
        echo "$line"
        sleep "$SAMPLE_SECS"
    done
}

peak_rss() { # server t0 t1 -> max summed RSS (kB) sampled in [t0, t1]
    local col=2
    [[ $1 == ours ]] && col=3
    awk -v c="$col" -v a="$2" -v b="$3" '$1 >= a && $1 <= b && $c > m { m = $c } END { print m + 0 }' "$WORK/rss.samples"
}

# ----------------------------------------------------------------------------- clients
SFTP_OPTS=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes
    -o LogLevel=ERROR -i "$WORK/userkey")

sftp_batch() { # server batchfile cipher logfile -> exit status of `timeout sftp -b`
    local s=$1 batch=$2 cipher=$3 out=$4 rc=0
    timeout "$CLIENT_TIMEOUT" sftp "${SFTP_OPTS[@]}" -c "$cipher" -b "$batch" -P "${PORT[$s]}" \
        "$BENCH_USER@127.0.0.1" >>"$out" 2>&1 </dev/null || rc=$?
    return "$rc"
}

check_file() { # path file(small|big) hash(0|1) -> "" when right, else a reason
    local path=$1 f=$2 hash=$3 size
    size=$(stat -c %s "$path" 2>/dev/null || echo missing)
    if [[ $size != "${SIZE[$f]}" ]]; then
        echo "size $size, want ${SIZE[$f]}"
    elif ((hash)) && [[ $(sha256sum "$path" | cut -d' ' -f1) != "${SHA[$f]}" ]]; then
        echo "sha256 mismatch"
    fi
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

# one transfer: server kind(get|put) file cipher -> prints seconds; returns 1 with a reason
transfer_one() {
    local s=$1 kind=$2 f=$3 cipher=$4 t0 t1 rc=0 bad
    local batch=$WORK/batch.$s.$kind.$f dest=$DL/$s.$f.out upname=up-$s-$$.bin
    rm -f "$dest"
    if [[ $kind == get ]]; then
        echo "get /images/$f.bin $dest" >"$batch"
    else
        echo "put $CHROOT/images/$f.bin /upload/$upname" >"$batch"
    fi
    t0=$EPOCHREALTIME
    sftp_batch "$s" "$batch" "$cipher" "$WORK/client-$s.log" || rc=$?
    t1=$EPOCHREALTIME
    if [[ $kind == get ]]; then
        bad=$(check_file "$dest" "$f" 1)
        rm -f "$dest"
    else
        bad=$(check_file "$CHROOT/upload/$upname" "$f" 1)
        rm -f "$CHROOT/upload/$upname"
    fi
    if ((rc == 124)); then
        echo "timeout after ${CLIENT_TIMEOUT}s"
        return 1
    elif ((rc != 0)); then
        echo "sftp exit $rc${bad:+, $bad}"
        return 1
    elif [[ -n $bad ]]; then
        echo "$bad"
        return 1
    fi
    elapsed "$t0" "$t1"
}

# n concurrent downloads: server n hash(0|1) -> prints "seconds failures"
transfer_conc() {
    local s=$1 n=$2 hash=$3 i t0 t1 fails=0 bad
    local -a pids=()
    t0=$EPOCHREALTIME
    for ((i = 1; i <= n; i++)); do
        echo "get /images/small.bin $DL/c$i.$s" >"$WORK/batch.conc.$s.$i"
        sftp_batch "$s" "$WORK/batch.conc.$s.$i" "$CHACHA" "$WORK/client-$s-conc.log" &
        pids+=($!)
    done
    for ((i = 1; i <= n; i++)); do
        if ! wait "${pids[i - 1]}"; then
            fails=$((fails + 1))
            rm -f "$DL/c$i.$s"
        fi
    done
    t1=$EPOCHREALTIME
    for ((i = 1; i <= n; i++)); do
        [[ -e $DL/c$i.$s ]] || continue
        bad=$(check_file "$DL/c$i.$s" small "$hash")
        if [[ -n $bad ]]; then
            fails=$((fails + 1))
            echo "   $s concurrent download $i: $bad" >&2
            echo "$s $i $bad" >>"$WORK/wrong-data"
        fi
        rm -f "$DL/c$i.$s"
    done
    echo "$(elapsed "$t0" "$t1") $fails"
}

login_one() { # server -> prints seconds; returns 1 on failure
    local s=$1 t0 t1 rc=0
    t0=$EPOCHREALTIME
    sftp_batch "$s" "$WORK/batch.pwd" "$CHACHA" "$WORK/client-$s-login.log" || rc=$?
    t1=$EPOCHREALTIME
    if ((rc != 0)); then
        echo "sftp exit $rc"
        return 1
    fi
    elapsed "$t0" "$t1"
}

logins_burst() { # server n -> prints "seconds failures"
    local s=$1 n=$2 i t0 t1 fails=0
    local -a pids=()
    t0=$EPOCHREALTIME
    for ((i = 1; i <= n; i++)); do
        sftp_batch "$s" "$WORK/batch.ls" "$CHACHA" "$WORK/client-$s-burst.log" &
        pids+=($!)
    done
    for ((i = 1; i <= n; i++)); do wait "${pids[i - 1]}" || fails=$((fails + 1)); done
    t1=$EPOCHREALTIME
    echo "$(elapsed "$t0" "$t1") $fails"
}
echo "pwd" >"$WORK/batch.pwd"
echo "ls /images" >"$WORK/batch.ls"

median() { # file of numbers -> median, or "-" when empty
    sort -g "$1" 2>/dev/null | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }

# ----------------------------------------------------------------------------- start
log "ports: sshd ${PORT[sshd]}, ours ${PORT[ours]}; config $CONFIG; downloads in $DL"
start_server sshd
start_server ours
rss_sampler >"$WORK/rss.samples" 2>/dev/null &
SAMPLER=$!
SSHD_VERSION=$("$SSHD_BIN" -V 2>&1 | head -1 || true)
[[ -n $SSHD_VERSION && $SSHD_VERSION != *illegal* ]] || SSHD_VERSION=$(dpkg-query -W -f '${Package} ${Version}' openssh-server 2>/dev/null)
OURS_VERSION=$("$OURS_BIN" -V 2>&1 | head -1 || true)
GIT_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$REPO" && git status --porcelain -- sftpd Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    GIT_REV="$GIT_REV+dirty"
fi

# Pre-flight (not timed): key login and password login (sshpass) against both servers.
declare -A PWAUTH=()
for s in sshd ours; do
    login_one "$s" >/dev/null || die "$s: key login (sftp -b pwd) failed: $(tail -3 "$WORK/client-$s-login.log"; tail -5 "$WORK/$s.log")"
    # sftp -b forces BatchMode (no password prompt), so the password check feeds stdin instead.
    if echo pwd | timeout 60 sshpass -p "$PASSWORD" sftp -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o PubkeyAuthentication=no -o PreferredAuthentications=password -o LogLevel=ERROR -P "${PORT[$s]}" \
        "$BENCH_USER@127.0.0.1" >"$WORK/pw-$s.log" 2>&1 && grep -q 'Remote working directory' "$WORK/pw-$s.log"; then
        PWAUTH[$s]=ok
    else
        PWAUTH[$s]="FAILED ($(tr '\n' ' ' <"$WORK/pw-$s.log" | cut -c1-120))"
    fi
done
log "pre-flight: key login ok on both; password login: sshd ${PWAUTH[sshd]}, ours ${PWAUTH[ours]}"

# ----------------------------------------------------------------------------- rows
# name | kind (get, put, conc, login, burst) | file | cipher | clients
ROWS=(
    "get 70 MB chacha20|get|small|$CHACHA|1"
    "get 70 MB aes128-gcm|get|small|$AESGCM|1"
    "get 301 MB chacha20|get|big|$CHACHA|1"
    "get 301 MB aes128-gcm|get|big|$AESGCM|1"
    "put 70 MB chacha20|put|small|$CHACHA|1"
    "20 x get 70 MB chacha20|conc|small|$CHACHA|20"
    "50 x get 70 MB chacha20|conc|small|$CHACHA|50"
    "login + pwd ($LOGINS sequential)|login|-|$CHACHA|1"
    "50 logins at once (sftp ls)|burst|-|$CHACHA|50"
)

TABLE=$WORK/table.md
{
    echo "| # | row | sshd median s | ours median s | ratio sshd/ours | sshd CPU | ours CPU | sshd peak RSS MiB | ours peak RSS MiB | sshd failed | ours failed | notes |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
} >"$TABLE"
declare -A MED=() FAILS=()
RATIO_PASS=()
RATIO_FAIL=()
START_ALL=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
k=0
for row in "${ROWS[@]}"; do
    k=$((k + 1))
    IFS='|' read -r rname kind f cipher n <<<"$row"
    log "row $k '$rname' ($REPS reps)"
    declare -A cpu=() ok=() failed=() bytes=() rss=() nfail=()
    notes=()
    for s in sshd ours; do
        : >"$WORK/times.$s"
        cpu[$s]=0 ok[$s]=0 failed[$s]="" bytes[$s]=0 rss[$s]=0 nfail[$s]=0
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        if (((rep + k) % 2)); then order=(sshd ours); else order=(ours sshd); fi
        if [[ $kind == login ]]; then
            # Login by login, alternating the servers (ABBA per pair).
            c0s=$(cpu_ns sshd) c0o=$(cpu_ns ours) t0=$EPOCHREALTIME
            for ((i = 1; i <= LOGINS; i++)); do
                if (((i + rep + k) % 2)); then lorder=(sshd ours); else lorder=(ours sshd); fi
                for s in "${lorder[@]}"; do
                    if res=$(login_one "$s"); then
                        echo "$res" >>"$WORK/times.$s"
                        ok[$s]=$((ok[$s] + 1))
                    else
                        nfail[$s]=$((nfail[$s] + 1))
                        failed[$s]="rep $rep login $i: $res"
                        [[ $s != ours ]] || BROKEN=1
                    fi
                done
            done
            t1=$EPOCHREALTIME
            cpu[sshd]=$((cpu[sshd] + $(cpu_ns sshd) - c0s))
            cpu[ours]=$((cpu[ours] + $(cpu_ns ours) - c0o))
            for s in sshd ours; do
                r=$(peak_rss "$s" "$t0" "$t1")
                ((r > rss[$s])) && rss[$s]=$r
            done
            printf '   rep %d: %d logins each, sshd median so far %s s, ours %s s\n' "$rep" "$LOGINS" \
                "$(median "$WORK/times.sshd")" "$(median "$WORK/times.ours")" >&2
            continue
        fi
        for s in "${order[@]}"; do
            [[ -z ${failed[$s]} || $kind == conc || $kind == burst ]] || continue # a failed server is not retried
            c0=$(cpu_ns "$s")
            t0=$EPOCHREALTIME
            case $kind in
                get | put)
                    if res=$(transfer_one "$s" "$kind" "$f" "$cipher"); then
                        echo "$res" >>"$WORK/times.$s"
                        ok[$s]=$((ok[$s] + 1))
                        bytes[$s]=$((bytes[$s] + SIZE[$f]))
                        printf '   rep %d %-4s %8.3f s\n' "$rep" "$s" "$res" >&2
                    else
                        failed[$s]="rep $rep: $res"
                        nfail[$s]=$((nfail[$s] + 1))
                        [[ $s != ours && $res != size* && $res != sha* ]] || BROKEN=1
                        echo "   rep $rep $s FAILED: $res" >&2
                    fi
                    ;;
                conc)
                    read -r secs fl <<<"$(transfer_conc "$s" "$n" $((rep == 1)))"
                    echo "$secs" >>"$WORK/times.$s"
                    ok[$s]=$((ok[$s] + 1))
                    bytes[$s]=$((bytes[$s] + (n - fl) * SIZE[$f]))
                    nfail[$s]=$((nfail[$s] + fl))
                    if ((fl > 0)); then
                        failed[$s]="rep $rep: $fl of $n failed"
                        [[ $s != ours ]] || BROKEN=1
                    fi
                    printf '   rep %d %-4s %8.3f s, %d of %d failed\n' "$rep" "$s" "$secs" "$fl" "$n" >&2
                    ;;
                burst)
                    read -r secs fl <<<"$(logins_burst "$s" "$n")"
                    echo "$secs" >>"$WORK/times.$s"
                    ok[$s]=$((ok[$s] + n - fl))
                    nfail[$s]=$((nfail[$s] + fl))
                    ((fl == 0)) || [[ $s != ours ]] || BROKEN=1
                    printf '   rep %d %-4s %8.3f s, %d of %d logins failed\n' "$rep" "$s" "$secs" "$fl" "$n" >&2
                    ;;
            esac
            t1=$EPOCHREALTIME
            sleep 0.2 # let the listener reap the last connection processes (proc CPU mode)
            cpu[$s]=$((cpu[$s] + $(cpu_ns "$s") - c0))
            r=$(peak_rss "$s" "$t0" "$t1")
            ((r > rss[$s])) && rss[$s]=$r
        done
    done
    declare -A cpucol=()
    for s in sshd ours; do
        MED[$k,$s]=$(median "$WORK/times.$s")
        FAILS[$k,$s]=${nfail[$s]}
        case $kind in
            login | burst)
                # CPU per successful login, in ms
                cpucol[$s]=$(awk -v ns="${cpu[$s]}" -v n="${ok[$s]}" 'BEGIN { if (n == 0) print "-"; else printf "%.1f ms/login", ns / n / 1e6 }')
                ;;
            *)
                # ns per byte == s per GB (1e9 bytes)
                cpucol[$s]=$(awk -v ns="${cpu[$s]}" -v b="${bytes[$s]}" 'BEGIN { if (b == 0) print "-"; else printf "%.2f s/GB", ns / b }')
                ;;
        esac
        [[ -z ${failed[$s]} ]] || notes+=("$s: ${failed[$s]}")
    done
    # A listener that died is reported, not restarted (this script signals servers only at exit).
    for s in sshd ours; do
        if [[ -z ${GONE[$s]:-} ]] && ! kill -0 "${PID[$s]}" 2>/dev/null; then
            GONE[$s]=$k
            a="$s listener (pid ${PID[$s]}) EXITED during row $k; last line of its log: '$(tail -1 "$WORK/$s.log")'; stderr: '$(tail -3 "$WORK/$s.stderr" | tr '\n' ' ')'"
            ALERTS+=("$a")
            notes+=("$a")
            [[ $s != ours ]] || BROKEN=1
            log "$a"
        fi
    done
    # A row whose every run failed has no median: FAIL in the table.
    ms=${MED[$k,sshd]} mo=${MED[$k,ours]}
    if [[ $kind == get || $kind == put ]]; then
        [[ -z ${failed[sshd]} ]] || ms=FAIL
        [[ -z ${failed[ours]} ]] || mo=FAIL
    fi
    r=$(ratio "$ms" "$mo")
    # No ratio when ours failed anything in the row (its times would not be comparable).
    if [[ $ms == FAIL || $mo == FAIL ]] || ((nfail[ours] > 0)); then r="-"; fi
    if ((nfail[sshd] > 0)) && [[ $kind == conc || $kind == burst ]]; then
        notes+=("sshd's wall covers only its clients that got through")
    fi
    MED[$k,ratio]=$r
    if [[ $kind == get || $kind == put || $kind == conc ]]; then
        # bytes actually delivered / total time of the runs (failed clients deliver nothing)
        mbs=()
        for s in sshd ours; do
            mbs+=("$(awk -v b="${bytes[$s]}" '{ t += $1 } END { if (t == 0 || b == 0) print "-"; else printf "%.0f", b / t / 1e6 }' "$WORK/times.$s")")
        done
        notes=("MB/s delivered ${mbs[0]} vs ${mbs[1]}" "${notes[@]}")
        # When sshd dropped clients its wall time covers less work: compare what was delivered.
        if [[ $kind == conc ]] && ((nfail[sshd] > 0)) && [[ $r != "-" ]]; then
            r=$(ratio "${mbs[1]}" "${mbs[0]}")
            MED[$k,ratio]=$r
            notes=("ratio = ours/sshd MB/s delivered, since sshd dropped clients" "${notes[@]}")
        fi
    fi
    if [[ $kind == login ]]; then notes=("median of $((LOGINS * REPS)) logins per server" "${notes[@]}"); fi
    if [[ $kind == burst ]]; then notes=("wall until the last of the $n ended; failures summed over $REPS reps" "${notes[@]}"); fi
    if awk -v r="$r" 'BEGIN { exit !(r != "-" && r + 0 >= 1.0) }'; then RATIO_PASS+=("$k"); else RATIO_FAIL+=("$k ($r)"); fi
    note_text=$(printf '%s; ' "${notes[@]}")
    printf '| %d | %s | %s | %s | %s | %s | %s | %.1f | %.1f | %d | %d | %s |\n' "$k" "$rname" "$ms" "$mo" "$r" \
        "${cpucol[sshd]}" "${cpucol[ours]}" "$(awk -v x="${rss[sshd]}" 'BEGIN { print x / 1024 }')" \
        "$(awk -v x="${rss[ours]}" 'BEGIN { print x / 1024 }')" "${nfail[sshd]}" "${nfail[ours]}" "${note_text%; }" >>"$TABLE"
    BURST_ROW=$k
    unset cpu ok failed bytes rss nfail cpucol
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(awk -v a="$START_ALL" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

# What ours logged about refused/failed connections (sshd's drops are logged the same way).
DROPS_SSHD=$(grep -c -i 'drop connection\|MaxStartups' "$WORK/sshd.log" || true)
DROPS_OURS=$(grep -c -i 'drop connection\|MaxStartups' "$WORK/ours.log" || true)
ERR_OURS=$(grep -i -E 'error|fatal|panic' "$WORK/ours.log" | sort | uniq -c | sort -rn | head -5 || true)
# Ours' log without the routine per-connection lines (ports and ids stripped, counted).
ODD_OURS=$(grep -v -E '^(Accepted publickey|Accepted password|Starting session|session opened|session closed|Received disconnect|Disconnected from|Connection closed by|Close session|Server listening|Connection from)' "$WORK/ours.log" |
    sed -E 's/port [0-9]+/port N/g; s/#[0-9]+/#N/g; s/\]:[0-9]+/]:N/g' | sort | uniq -c | sort -rn | head -12 || true)
WRONG=$(cat "$WORK/wrong-data" 2>/dev/null || true)
[[ -z $WRONG ]] || BROKEN=1

# ----------------------------------------------------------------------------- report
# ----------------------------------------------------------------------------- refused logins
# A wrong password for an existing user and any password for an unknown user must take the
# same time (no user enumeration by timing). Measured per server, interleaved, with sshpass
# and one password prompt. Ours runs as a second instance with `-o PerSourcePenalties=no`
# (otherwise the fourth failure would be refused at the door); sshd 9.2 has no penalties.
fail_login() { # port user -> seconds of one refused password login
    local t0 t1
    t0=$EPOCHREALTIME
    echo pwd | timeout 60 sshpass -p wrong-password sftp -q -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o PubkeyAuthentication=no \
        -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 -o LogLevel=QUIET \
        -P "$1" "$2@127.0.0.1" >/dev/null 2>&1 || true
    t1=$EPOCHREALTIME
    elapsed "$t0" "$t1"
}
TPORT=$((PORT[ours] + 100))
while ! port_free "$TPORT"; do TPORT=$((TPORT + 1)); done
"$OURS_BIN" -D -f "$CONFIG" -p "$TPORT" -E "$WORK/ours-timing.log" -o PerSourcePenalties=no \
    >>"$WORK/ours-timing.stderr" 2>&1 &
TPID=$!
for ((n = 0; n < 100; n++)); do
    grep -q "Server listening" "$WORK/ours-timing.log" 2>/dev/null && break
    sleep 0.1
done
FAIL_N=${FAIL_N:-15}
declare -A TPORTS=([sshd]=${PORT[sshd]} [ours]=$TPORT)
for s in sshd ours; do : >"$WORK/fail-$s-known"; : >"$WORK/fail-$s-unknown"; done
for ((i = 1; i <= FAIL_N; i++)); do
    for s in sshd ours; do
        if ((i % 2)); then order=(known unknown); else order=(unknown known); fi
        for k in "${order[@]}"; do
            if [[ $k == known ]]; then u=$BENCH_USER; else u=nosuchuser$i; fi
            fail_login "${TPORTS[$s]}" "$u" >>"$WORK/fail-$s-$k"
        done
    done
done
kill "$TPID" 2>/dev/null || true
wait "$TPID" 2>/dev/null || true
FAIL_LINE=""
for s in sshd ours; do
    fk=$(median "$WORK/fail-$s-known") fu=$(median "$WORK/fail-$s-unknown")
    FAIL_LINE+="$s: wrong password $fk s, unknown user $fu s (ratio $(ratio "$fu" "$fk")); "
done
log "refused logins (median of $FAIL_N each): $FAIL_LINE"

REPORT=$WORK/report.md
{
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — sftpd vs OpenSSH sshd + internal-sftp"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r); load average $LOAD_START before the rows, $LOAD_END after"
    echo "- servers: \`$SSHD_VERSION\` vs \`$OURS_VERSION\` (git $GIT_REV); both \`-D -f sshd_config -p PORT -E LOG\` with one shared sshd_config (chroot $CHROOT, ForceCommand internal-sftp, MaxStartups default)"
    echo "- client: $(ssh -V 2>&1) \`sftp -q -b BATCH -c CIPHER\`, key auth (ed25519), \`timeout $CLIENT_TIMEOUT\` each; files $SMALL_SIZE and $BIG_SIZE bytes random, downloads to $(df --output=fstype "$DL" | tail -1) and verified (size always, sha256 sequential rows always, concurrent rows rep 1)"
    echo "- REPS=$REPS per row, ABBA order (first server flips per rep and per row); password login pre-flight (sshpass): sshd ${PWAUTH[sshd]}, ours ${PWAUTH[ours]}"
    echo "- ratio = sshd median / ours median (> 1: ours faster). CPU: $CPU_HOW; s/GB = server CPU s / (bytes moved / 1e9); login rows: CPU ms per successful login"
    echo "- peak RSS: sum of VmRSS over all the server's processes, sampled every ${SAMPLE_SECS}s during the row (max over reps)"
    echo
    cat "$TABLE"
    echo
    echo "Targets (reported, not enforced):"
    echo
    if ((${#RATIO_FAIL[@]} == 0)); then
        echo "- PASS: ratio >= 1.0 on every row (${RATIO_PASS[*]})"
    else
        echo "- FAIL: ratio >= 1.0 on every row — met on rows: ${RATIO_PASS[*]:-none}; not met on rows: ${RATIO_FAIL[*]}"
    fi
    bo=${FAILS[$BURST_ROW,ours]} bs=${FAILS[$BURST_ROW,sshd]}
    if ((bo == 0)); then v=PASS; else v=FAIL; fi
    echo "- $v: 50 simultaneous logins, zero failures (ours $bo failed, sshd $bs failed, over $REPS reps of 50; log lines mentioning drop/MaxStartups: sshd $DROPS_SSHD, ours $DROPS_OURS)"
    echo "- refused password logins, median of $FAIL_N each, interleaved (equal times = no user enumeration by timing): $FAIL_LINE"
    for a in "${ALERTS[@]}"; do
        echo
        echo "ALERT: $a. The rows after it measure a dead server."
    done
    if [[ -n $WRONG ]]; then
        echo
        echo "WRONG DATA (server, client #, what): $WRONG"
    fi
    if [[ -n $ODD_OURS ]]; then
        echo
        echo "Ours' log ($WORK/ours.log, LogLevel $LOG_LEVEL) without the routine per-connection lines, counted:"
        echo
        echo '```'
        echo "$ODD_OURS"
        echo '```'
    fi
    if [[ -n $ERR_OURS ]]; then
        echo
        echo "Most frequent error lines in ours' log:"
        echo
        echo '```'
        echo "$ERR_OURS"
        echo '```'
    fi
    echo
    echo "Run took ${ELAPSED}s after setup$([[ $BROKEN == 1 ]] && echo '; SOME TRANSFERS FAILED, see notes')."
    echo
} >"$REPORT"

echo
cat "$REPORT"
if [[ $RECORD == 1 ]]; then
    cat "$REPORT" >>"$RESULTS_MD"
    log "appended to $RESULTS_MD"
fi
exit "$BROKEN"
