#!/usr/bin/env bash
# bench/controller.sh: the controller (`controller serve`, its own process) relaying AP images
# to 1000 simulated APs (`ap-sim`, another process) over CAPWAP on loopback, the images
# fetched from airlift's tftpd, as in use.
#
# Two fresh controllers run one after the other, each with an empty image cache:
#   1. the round-trip probe: RTT_REPS runs of ONE AP. Its transfer time / its Image Data
#      messages is the CAPWAP round trip (stop-and-wait: one Image Data Request and its
#      Response per block), and block size / round trip the stop-and-wait limit of one
#      transfer;
#   2. the fleet: APS APs of every family, max_concurrent = MAX_CONCURRENT. Reported: the wall
#      time of the ap-sim run, per-AP throughput (the AP's image bytes / its transfer time:
#      p10, median, p90) against that limit, aggregate throughput, the controller's CPU
#      (utime + stime from /proc/PID/stat) and peak RSS (VmHWM, read just before stopping it).
# No side-by-side program: Debian packages no CAPWAP controller (nor AP simulator) to run
# against the same APs, so the comparison is the stop-and-wait limit.
#
# Targets: every AP verified; controller peak RSS below 1.5 x (sum of the distinct images)
# + 1 MB (10^6 bytes) per AP, printed PASS/FAIL. Timings are reported, never asserted.
# Exit status: 0 every AP verified and the RSS target passed; 1 an AP did not verify (in the
# probe or the fleet) or the RSS target FAILED; 2 setup error. RECORD=1 appends the report
# to bench/RESULTS.md. Knobs and columns: bench/README.md.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME, awk and printf

APS=${APS:-1000}                      # simulated APs in the fleet run
SCALE=${SCALE:-0.05}                  # image sizes against the real bundle's (1: ~443 MB of AP images)
BLOCK=${BLOCK:-1377}                  # image bytes per Image Data message (the source document's)
MAX_CONCURRENT=${MAX_CONCURRENT:-100} # transfers the controller runs at once (its default)
RTT_REPS=${RTT_REPS:-5}               # 1-AP probe runs; the median round trip is used
LOSS=${LOSS:-0}                       # datagram loss in the fleet run, each way (ap-sim --loss)
DUP=${DUP:-0}                         # datagrams duplicated in the fleet run, each way (ap-sim --dup)
CRASH_AFTER=${CRASH_AFTER:-0}         # >0: each AP dies once after that many image bytes and rejoins
RETRANSMIT_S=${RETRANSMIT_S:-0.05}    # the controller's retransmit_interval_s (RFC 5415: 3)
TIMEOUT=${TIMEOUT:-600}               # seconds allowed for the fleet run (ap-sim --timeout)
SKIP_BUILD=${SKIP_BUILD:-0}           # 1: use the binaries in target/release as they are
RECORD=${RECORD:-0}                   # 1: append the report to bench/RESULTS.md
KEEP=${KEEP:-0}                       # 1: keep the work directory (logs, JSON reports)
VERSION=17.9.4.27                     # the release the network should run
FOLDER=EWC_17_9_4a                    # its folder on the TFTP server

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=$REPO/target/release

die() {
    echo "controller.sh: $*" >&2
    exit 2
}
log() { echo "== $*" >&2; }

[[ $APS =~ ^[1-9][0-9]*$ ]] || die "APS must be a positive integer"
[[ $RTT_REPS =~ ^[1-9][0-9]*$ ]] || die "RTT_REPS must be a positive integer"
[[ $MAX_CONCURRENT =~ ^[1-9][0-9]*$ ]] || die "MAX_CONCURRENT must be a positive integer"
if ! [[ $BLOCK =~ ^[1-9][0-9]*$ ]] || ((BLOCK < 64 || BLOCK > 8192)); then die "BLOCK must be 64 to 8192"; fi
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive integer (seconds)"
[[ $SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || die "SCALE must be a number (e.g. 0.05)"
[[ $LOSS =~ ^0*\.?[0-9]+$ ]] || die "LOSS must be a number below 1 (e.g. 0.01)"
[[ $DUP =~ ^0*\.?[0-9]+$ ]] || die "DUP must be a number below 1 (e.g. 0.01)"
[[ $CRASH_AFTER =~ ^[0-9]+$ ]] || die "CRASH_AFTER must be a number of bytes (0: no crash)"
[[ $RETRANSMIT_S =~ ^[0-9]*\.?[0-9]+$ ]] || die "RETRANSMIT_S must be a number of seconds (e.g. 0.05)"
command -v python3 >/dev/null || die "python3 not found (it reads the JSON reports)"

if [[ $SKIP_BUILD != 1 ]]; then
    log "building controller, ap-sim, tftpd and bundle-tool (release)"
    (cd "$REPO" && cargo build --release --locked -p controller -p tftpd -p bundle-tool >&2) ||
        die "cargo build failed"
fi
for b in controller ap-sim tftpd bundle-tool; do
    [[ -x $BIN/$b ]] || die "$BIN/$b not found (build it, or drop SKIP_BUILD=1)"
done

WORK=$(mktemp -d /tmp/airlift-controller-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
# shellcheck disable=SC2317 # called by the EXIT trap (ShellCheck 0.9 sees no caller)
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then
        echo "controller.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # pid: no longer ours to kill (waited for)
    local p kept=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# A loopback UDP port nobody holds now (the kernel's pick), and whether one is held.
free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
udp_held() { ! python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
# CPU ticks (utime + stime) of a process: the fields after the command name in /proc/PID/stat.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# children_cpu VAR: CPU seconds (user + sys) of every child this shell has waited for so far.
# `times` must run in this shell, not in a $(...) subshell (a fork starts with no children).
children_cpu() {
    times >"$WORK/times"
    printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } print t }' "$WORK/times")"
}
CLK_TCK=$(getconf CLK_TCK)

# ---- the release: a synthetic bundle (NOT Cisco images) staged on a TFTP root
log "synthesizing and staging release $VERSION at scale $SCALE"
mkdir -p "$WORK/srv"
"$BIN/bundle-tool" synth --version "$VERSION" --scale "$SCALE" --no-controller-image \
    --out "$WORK/bundle.zip" >&2 || die "bundle-tool synth failed"
"$BIN/bundle-tool" stage "$WORK/bundle.zip" "$WORK/srv" --name "$FOLDER" --no-fsync >&2 ||
    die "bundle-tool stage failed"
rm -f "$WORK/bundle.zip"
chmod -R a+rX "$WORK/srv"
MANIFEST=$WORK/srv/$FOLDER/manifest.json
[[ -f $MANIFEST ]] || die "the staged folder has no manifest.json"

P_TFTP=$(free_udp)
TFTPD_FLAGS=(-L -v -a "127.0.0.1:$P_TFTP" -s)
if [[ $(id -u) == 0 ]]; then TFTPD_FLAGS+=(-u root); fi # as root it chroots, then runs as -u
"$BIN/tftpd" "${TFTPD_FLAGS[@]}" "$WORK/srv" 2>"$WORK/tftpd.log" &
TFTPD_PID=$!
PIDS+=("$TFTPD_PID")
for ((i = 0; i < 50; i++)); do
    kill -0 "$TFTPD_PID" 2>/dev/null || die "tftpd exited: $(head -c 500 "$WORK/tftpd.log")"
    if udp_held "$P_TFTP"; then break; fi
    sleep 0.1
done
udp_held "$P_TFTP" || die "tftpd does not hold 127.0.0.1:$P_TFTP"

# ---- controllers
CTL_PID=
CTL_PORT=
start_controller() { # name: a fresh controller with its own port, socket, cache and log
    local name=$1 i
    CTL_PORT=$(free_udp)
    cat >"$WORK/$name.toml" <<EOF
[capwap]
listen = "127.0.0.1:$CTL_PORT"
block_size = $BLOCK
retransmit_interval_s = $RETRANSMIT_S
max_retransmit = 10
ac_name = "airlift-bench"

[image_download]
mode = "tftp"
server = "127.0.0.1"
port = $P_TFTP
path = "$FOLDER"
parallel = true
max_concurrent = $MAX_CONCURRENT
retry_interval_s = 2
retry_count = 3
EOF
    "$BIN/controller" serve --config "$WORK/$name.toml" --socket "$WORK/$name.sock" \
        --cache "$WORK/$name.cache" >"$WORK/$name.log" 2>"$WORK/$name.err" &
    CTL_PID=$!
    PIDS+=("$CTL_PID")
    for ((i = 0; i < 100; i++)); do
        kill -0 "$CTL_PID" 2>/dev/null || die "controller ($name) exited: $(head -c 500 "$WORK/$name.err")"
        if [[ -S $WORK/$name.sock ]] && udp_held "$CTL_PORT"; then return 0; fi
        sleep 0.1
    done
    die "controller ($name) did not open its control socket and CAPWAP port"
}
stop_controller() {
    local i
    kill "$CTL_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$CTL_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$CTL_PID" 2>/dev/null || true
    wait "$CTL_PID" 2>/dev/null || true
    forget_pid "$CTL_PID"
}

APSIM_RC=0
APSIM_WALL=0
APSIM_CPU=0
run_fleet() { # name count timeout extra-flags...: ap-sim against the running controller
    local name=$1 count=$2 timeout=$3 t0 t1 c0 c1 pid
    shift 3
    children_cpu c0
    t0=$EPOCHREALTIME
    # ap-sim stops itself at --timeout; `timeout` is the watchdog should it ever hang.
    timeout --kill-after=10 "$((timeout + 60))" "$BIN/ap-sim" --controller "127.0.0.1:$CTL_PORT" --count "$count" --retransmit-ms 50 \
        --max-retransmit 10 --reset-ms 500 --retry-secs 1 --json --quiet --timeout "$timeout" "$@" \
        >"$WORK/$name.json" 2>"$WORK/$name.apsim.err" &
    pid=$!
    PIDS+=("$pid")
    APSIM_RC=0
    wait "$pid" || APSIM_RC=$?
    t1=$EPOCHREALTIME
    forget_pid "$pid"
    children_cpu c1
    APSIM_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    APSIM_CPU=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
}

# ---- 1. the round trip: one AP at a time against a controller of its own
log "round-trip probe: $RTT_REPS x 1 AP"
start_controller probe
PROBES=()
for ((rep = 1; rep <= RTT_REPS; rep++)); do
    run_fleet "probe$rep" 1 60
    ((APSIM_RC == 0)) || {
        echo "controller.sh: the 1-AP probe did not verify (ap-sim exit $APSIM_RC): $(head -c 500 "$WORK/probe$rep.apsim.err")" >&2
        exit 1
    }
    PROBES+=("$WORK/probe$rep.json")
done
stop_controller

# ---- 2. the fleet
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "fleet: $APS APs, max_concurrent $MAX_CONCURRENT, loss $LOSS (load average $LOAD_START)"
TFTP_LOG_LINES=$(wc -l <"$WORK/tftpd.log") # the probe's fetches are not the fleet's
start_controller fleet
FLEET_CTL=$CTL_PID
RSS_START_KB=$(status_kb "$FLEET_CTL" VmRSS)
TICKS0=$(cpu_ticks "$FLEET_CTL")
UT0=$(sed 's/.*) //' "/proc/$FLEET_CTL/stat" | awk '{ print $12 }')
FLEET_FLAGS=()
if [[ $LOSS != 0 ]]; then FLEET_FLAGS+=(--loss "$LOSS"); fi
if [[ $DUP != 0 ]]; then FLEET_FLAGS+=(--dup "$DUP"); fi
if [[ $CRASH_AFTER != 0 ]]; then FLEET_FLAGS+=(--crash-after-bytes "$CRASH_AFTER"); fi
run_fleet fleet "$APS" "$TIMEOUT" "${FLEET_FLAGS[@]}"
TICKS1=$(cpu_ticks "$FLEET_CTL")
UT1=$(sed 's/.*) //' "/proc/$FLEET_CTL/stat" | awk '{ print $12 }')
HWM_KB=$(status_kb "$FLEET_CTL" VmHWM)
RSS_END_KB=$(status_kb "$FLEET_CTL" VmRSS)
ANON_END_KB=$(status_kb "$FLEET_CTL" RssAnon)
FILE_END_KB=$(status_kb "$FLEET_CTL" RssFile)
THREADS=$(status_kb "$FLEET_CTL" Threads)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
"$BIN/controller" show ap image --json --socket "$WORK/fleet.sock" >"$WORK/show.json" 2>&1 ||
    echo '{}' >"$WORK/show.json"
stop_controller
log "fleet run: ap-sim exit $APSIM_RC after $APSIM_WALL s"

# ---- the report
CTL_CPU=$(awk -v a="$TICKS0" -v b="$TICKS1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
CTL_USER=$(awk -v a="$UT0" -v b="$UT1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
REPORT=$WORK/report.md
VERDICT=$WORK/verdict
export APS SCALE BLOCK MAX_CONCURRENT LOSS DUP CRASH_AFTER RETRANSMIT_S VERSION APSIM_RC APSIM_WALL APSIM_CPU CTL_CPU CTL_USER \
    HWM_KB RSS_START_KB RSS_END_KB ANON_END_KB FILE_END_KB THREADS MANIFEST WORK VERDICT TFTP_LOG_LINES
{
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — controller: $APS simulated APs over CAPWAP (bench/controller.sh)"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r); load average $LOAD_START before the fleet run, $LOAD_END after it (shared machine); git $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- controller 2>/dev/null || echo ' + uncommitted controller changes')"
    echo "- command: \`APS=$APS SCALE=$SCALE BLOCK=$BLOCK MAX_CONCURRENT=$MAX_CONCURRENT RTT_REPS=$RTT_REPS LOSS=$LOSS DUP=$DUP CRASH_AFTER=$CRASH_AFTER RETRANSMIT_S=$RETRANSMIT_S TIMEOUT=$TIMEOUT RECORD=$RECORD bash bench/controller.sh\`"
    python3 - "${PROBES[@]}" <<'PY'
import json, os, re, sys
from statistics import median

env = os.environ
block = int(env["BLOCK"])
aps_asked = int(env["APS"])
work = env["WORK"]

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def q(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, round(p * (len(values) - 1))))
    return values[k]

def mb(b):
    return f"{b / 1e6:.2f} MB"

def rate(bps):
    return f"{bps / 1e6:.2f} MB/s"

def secs(s):
    return "-" if s is None else f"{s:.3f} s"

manifest = load(env["MANIFEST"])
images = {f["name"]: f["size"] for f in manifest["files"] if re.fullmatch(r"ap\d+g\d+[a-z]?", f["name"])}
distinct = sum(images.values())

# 1. the round trip, from the 1-AP probes
rtts = []
for path in sys.argv[1:]:
    r = load(path)
    a = r["aps"][0]
    if a.get("transfer_s") and a["messages"]:
        rtts.append(a["transfer_s"] / a["messages"])
rtt = median(rtts) if rtts else None
limit = block / rtt if rtt else None

# 2. the fleet
fleet = load(os.path.join(work, "fleet.json"))
aps = fleet["aps"] if fleet else []
verified = sum(1 for a in aps if a["verified"])
per_ap = sorted(images[a["family"]] / a["transfer_s"] for a in aps if a.get("transfer_s"))
ap_rtt = sorted(a["transfer_s"] / a["messages"] for a in aps if a.get("transfer_s") and a["messages"])
waits = sorted(a["wait_s"] for a in aps if a.get("wait_s") is not None)
j2v = sorted(a["joined_to_verified_s"] for a in aps if a.get("joined_to_verified_s") is not None)
transfers = sorted(a["transfer_s"] for a in aps if a.get("transfer_s"))
delivered = sum(images[a["family"]] for a in aps if a["verified"])
wire_bytes = fleet["totals"]["bytes"] if fleet else 0
messages = fleet["totals"]["messages"] if fleet else 0
retrans = fleet["totals"]["retransmissions"] if fleet else 0
joins = sum(a["joins"] for a in aps)
wall = float(env["APSIM_WALL"])
cpu = float(env["CTL_CPU"])
user = float(env["CTL_USER"])
hwm = int(env["HWM_KB"]) * 1024
target = 1.5 * distinct + aps_asked * 1e6

show = load(os.path.join(work, "show.json")) or {}
counters = show.get("counters", {})
log_text = open(os.path.join(work, "fleet.log"), errors="replace").read()
fetches = len(re.findall(r"Completed install add", log_text))
fetch_fail = len(re.findall(r"OPERATION_ERROR_MESSAGE", log_text))
succ = len(re.findall(r"AP Image Download Success", log_text))
fail = len(re.findall(r"AP Image Download Failed", log_text))
with open(os.path.join(work, "tftpd.log"), errors="replace") as f:
    tftp_lines = f.read().splitlines()[int(env["TFTP_LOG_LINES"]):]
tftp_rrq = sum(1 for l in tftp_lines if re.fullmatch(r"RRQ from .* filename \S*/ap\d+g\d+[a-z]?", l))

def frac(x):
    return f"{100 * x / limit:.1f}%" if limit and x is not None else "-"

def trio(v, fmt):
    return " / ".join(fmt(q(v, p)) if v else "-" for p in (0.1, 0.5, 0.9))

fams = ", ".join(f"{k} {mb(v)}" for k, v in sorted(images.items()))
print(f"- release: synthetic {env['VERSION']} at scale {env['SCALE']} (bundle-tool synth + stage: NOT Cisco images), "
      f"{len(images)} distinct images, {mb(distinct)} together ({fams}); served by airlift tftpd on loopback; "
      f"the controller fetches each family once (`mode = \"tftp\"`), block_size {block}, retransmit {env['RETRANSMIT_S']} s x 10, "
      f"max_concurrent {env['MAX_CONCURRENT']}")
print(f"- APs: `ap-sim --count {aps_asked} --retransmit-ms 50 --max-retransmit 10 --reset-ms 500 --retry-secs 1"
      f"{' --loss ' + env['LOSS'] if env['LOSS'] not in ('0', '') else ''}"
      f"{' --dup ' + env['DUP'] if env['DUP'] not in ('0', '') else ''}"
      f"{' --crash-after-bytes ' + env['CRASH_AFTER'] if env['CRASH_AFTER'] not in ('0', '') else ''}`, models cycling over the 7 families, each "
      f"AP on 17.3.3.26: join, download at join, check size + MD5 + tar, reset, rejoin on {env['VERSION']}")
print(f"- round trip: {len(rtts)} runs of 1 AP against a controller of its own (transfer time / Image Data messages): "
      + ", ".join(f"{r * 1e6:.0f} µs" for r in rtts))
print()
print("| measure | value |")
print("|---|---:|")
print(f"| CAPWAP round trip, 1 AP (median) | {rtt * 1e6:.0f} µs |" if rtt else "| CAPWAP round trip, 1 AP | - |")
print(f"| stop-and-wait limit of one transfer (block / round trip) | {rate(limit)} |" if limit else "| stop-and-wait limit | - |")
print(f"| APs verified | {verified} of {aps_asked} |")
print(f"| total time (ap-sim run: start, every AP joined, downloaded, reset, rejoined verified) | {wall:.1f} s |")
print(f"| image bytes delivered / on the wire | {delivered:,} / {wire_bytes:,} ({messages:,} Image Data messages) |")
print(f"| aggregate throughput (delivered / total time) | {rate(delivered / wall) if wall else '-'}"
      f"{f' = {delivered / wall / limit:.1f} x the 1-AP limit' if limit and wall else ''} |")
print(f"| per-AP throughput p10 / median / p90 (image bytes / its transfer time) | {trio(per_ap, lambda x: f'{x / 1e6:.2f}')} MB/s |")
print(f"| … as a fraction of the stop-and-wait limit | {trio(per_ap, frac)} |")
print(f"| per-AP transfer time p10 / median / p90 (Image Data Response to EOF checked) | {trio(transfers, lambda x: f'{x:.2f}')} s |")
print(f"| per-AP round trip in the fleet, p10 / median / p90 (transfer time / messages) | {trio(ap_rtt, lambda x: f'{x * 1e6:.0f}')} µs |")
print(f"| wait for admission + upstream fetch, p10 / median / p90 / max (Image Data Request to Response) | "
      f"{trio(waits, lambda x: f'{x:.2f}')} / {waits[-1]:.2f} s |" if waits else "| wait | - |")
print(f"| first join to verified, p10 / median / p90 / max | {trio(j2v, lambda x: f'{x:.2f}')} / {j2v[-1]:.2f} s |" if j2v else "| join to verified | - |")
print(f"| joins / AP retransmissions (mostly Image Data Requests waiting for admission) | {joins:,} / {retrans:,} |")
print(f"| upstream fetches: tftpd RRQs for images / controller `Completed install add` / fetch errors | {tftp_rrq} / {fetches} / {fetch_fail} |")
print(f"| controller log: AP Image Download Success / Failed | {succ} / {fail} |")
if counters:
    print(f"| `show ap image`: Total / Completed downloading / Downloading / Initiated / Not Supported | "
          f"{counters.get('total')} / {counters.get('completed_downloading')} / {counters.get('downloading')} / "
          f"{counters.get('initiated')} / {counters.get('not_supported')} |")
print(f"| controller CPU, user + sys (fleet run) | {cpu:.2f} s ({user:.2f} + {cpu - user:.2f}) = "
      f"{cpu / wall if wall else 0:.2f} CPU; {cpu / (wire_bytes / 1e9) if wire_bytes else 0:.2f} s/GB; "
      f"{1e6 * cpu / messages if messages else 0:.1f} µs per Image Data message |")
print(f"| ap-sim CPU, user + sys | {float(env['APSIM_CPU']):.2f} s = {float(env['APSIM_CPU']) / wall if wall else 0:.2f} CPU |")
print(f"| controller peak RSS (VmHWM) | {hwm / 2**20:.1f} MiB ({int(env['HWM_KB']):,} kB) |")
print(f"| controller RSS at start / at the end (anon + file), threads | {int(env['RSS_START_KB']) / 1024:.1f} / "
      f"{int(env['RSS_END_KB']) / 1024:.1f} MiB ({int(env['ANON_END_KB']) / 1024:.1f} + {int(env['FILE_END_KB']) / 1024:.1f}), {env['THREADS']} |")
print(f"| (peak − RSS at start − the distinct images) / APs | {(hwm - int(env['RSS_START_KB']) * 1024 - distinct) / aps_asked / 1024:.1f} KiB |")
print()
all_ok = verified == aps_asked and env["APSIM_RC"] == "0"
rss_ok = hwm < target
print("Targets:")
print()
print(f"- {'PASS' if all_ok else 'FAIL'}: every AP verified ({verified} of {aps_asked}; ap-sim exit {env['APSIM_RC']})")
print(f"- {'PASS' if rss_ok else 'FAIL'}: controller peak RSS {hwm / 1e6:.1f} MB < 1.5 x {distinct / 1e6:.2f} MB "
      f"(the distinct images) + {aps_asked} x 1 MB = {target / 1e6:.1f} MB ({100 * hwm / target:.1f}% of it)")
if fleet:
    bad = [a for a in aps if not a["verified"]][:10]
    for a in bad:
        print(f"  - {a['name']}: {a.get('problem')}")
with open(env["VERDICT"], "w") as f:
    f.write(f"{int(all_ok)} {int(rss_ok)}\n")
PY
    echo
} >"$REPORT" || die "the report could not be made (see $WORK, KEEP=1 keeps it)"
cat "$REPORT"
if [[ $RECORD == 1 ]]; then cat "$REPORT" >>"$HERE/RESULTS.md"; fi
read -r ALL_OK RSS_OK <"$VERDICT"
if [[ $ALL_OK == 1 && $RSS_OK == 1 ]]; then exit 0; fi
exit 1
