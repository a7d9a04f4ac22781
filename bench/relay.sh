#!/usr/bin/env bash
# bench/relay.sh: `relay fetch` against curl fetching the same 70 MB image, on loopback.
#
# Rows (each interleaved per repetition, ABBA, every download checked with cmp):
#   1  tftpd-hpa, blksize 1468: curl vs relay (tftpd-hpa has no windowsize: both lock-step)
#   2  curl from tftpd-hpa (blksize 1468) vs relay with windowsize 16 from airlift's tftpd
#   3  OpenSSH sshd (internal-sftp, password login, host key pinned by both clients):
#      curl sftp:// vs relay
# Runs as root: row 3 logs in as a throwaway system user (removed at exit).
# Prints medians and the ratio curl/ours (> 1: relay faster). RECORD=1 appends to RESULTS.md.
# Exit 0 when every download verified, 1 when one failed, 2 on a setup error.
set -euo pipefail
export LC_ALL=C

REPS=${REPS:-6}
SKIP_APT=${SKIP_APT:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
RECORD=${RECORD:-0}
SIZE=70512640
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RELAY=$REPO/target/release/relay
OURS_TFTPD=$REPO/target/release/tftpd
HPA=/usr/sbin/in.tftpd

die() { echo "relay.sh: $*" >&2; exit 2; }
log() { echo "== $*" >&2; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"

if [[ $SKIP_APT != 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing tftpd-hpa, openssh-server and curl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        tftpd-hpa openssh-server openssh-client passwd curl >/dev/null
    # Debian may start a system tftpd-hpa on port 69 and sshd on 22; this script uses neither.
fi
SSHD_BIN=/usr/sbin/sshd
[[ -x $SSHD_BIN ]] || die "sshd not found (apt-get install openssh-server)"
[[ $(id -u) == 0 ]] || die "run as root: the SFTP row logs in as a throwaway system user"
BENCH_USER=airlift-relay-bench
BENCH_GECOS="airlift bench/relay.sh (safe to delete)"
if id "$BENCH_USER" >/dev/null 2>&1; then
    [[ $(getent passwd "$BENCH_USER" | cut -d: -f5) == "$BENCH_GECOS" ]] ||
        die "a user $BENCH_USER exists and was not made by this script; refusing to touch it"
    userdel "$BENCH_USER" || die "userdel $BENCH_USER failed"
fi
[[ -x $HPA ]] || die "in.tftpd not found (apt-get install tftpd-hpa)"
command -v curl >/dev/null || die "curl not found"
if [[ $SKIP_BUILD != 1 ]]; then
    log "building relay and tftpd (release)"
    (cd "$REPO" && cargo build --release --locked -p relay -p tftpd -p bundle-tool >&2)
fi

WORK=$(mktemp -d /tmp/airlift-relay-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
MADE_USER=0
MADE_RUN_SSHD=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if ((MADE_USER)); then userdel "$BENCH_USER" 2>/dev/null || true; fi
    if ((MADE_RUN_SSHD)); then rmdir /run/sshd 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/srv" "$WORK/out"
# The image: bundle-tool's synthetic ap1g8 (a tar with info members around incompressible
# bytes, the real image's size), so relay checks it as an AP image, as it does in use.
"$REPO/target/release/bundle-tool" synth --version 17.9.4.27 --families ap1g8 --scale 1 \
    --no-controller-image --out "$WORK/synth.zip" >/dev/null || die "bundle-tool synth failed"
python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("ap1g8"))' \
    "$WORK/synth.zip" >"$WORK/srv/ap1g8"
rm -f "$WORK/synth.zip"
[[ $(stat -c %s "$WORK/srv/ap1g8") == "$SIZE" ]] || die "the synthetic ap1g8 is not $SIZE bytes"
chmod -R a+rX "$WORK/srv"

# SFTP: a system user with a random password; sshd with its own config on a loopback port.
PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
useradd --system --no-create-home --home-dir "$WORK/srv" --shell /usr/sbin/nologin \
    --comment "$BENCH_GECOS" "$BENCH_USER" || die "useradd failed"
MADE_USER=1
echo "$BENCH_USER:$PASSWORD" | chpasswd || die "chpasswd failed"
printf '%s\n' "$PASSWORD" >"$WORK/password"
chmod 600 "$WORK/password"
ssh-keygen -q -t ed25519 -N '' -C "bench host key" -f "$WORK/hostkey" || die "ssh-keygen failed"
FP=$(ssh-keygen -l -E sha256 -f "$WORK/hostkey.pub" | awk '{ print $2 }')
if [[ ! -d /run/sshd ]]; then
    mkdir -m 755 /run/sshd
    MADE_RUN_SSHD=1
fi
printf '%s\n' "ListenAddress 127.0.0.1" "HostKey $WORK/hostkey" "PidFile none" \
    "PasswordAuthentication yes" "PubkeyAuthentication no" "UsePAM no" \
    "Subsystem sftp internal-sftp" "Match User $BENCH_USER" "    ForceCommand internal-sftp" \
    >"$WORK/sshd_config"
"$SSHD_BIN" -t -f "$WORK/sshd_config" || die "sshd -t rejects the bench config"

free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_HPA=$(free_udp)
P_OURS=$(free_udp)
P_SSH=$(free_tcp)
"$SSHD_BIN" -D -e -f "$WORK/sshd_config" -p "$P_SSH" 2>"$WORK/sshd.log" &
PIDS+=($!)
"$HPA" -L -a "127.0.0.1:$P_HPA" -s -u root "$WORK/srv" &
PIDS+=($!)
"$OURS_TFTPD" -L -a "127.0.0.1:$P_OURS" -s -u root "$WORK/srv" &
PIDS+=($!)
sleep 0.5

FAILED=0
run() { # name command... -> prints seconds, checks the output file
    local name=$1 t0 t1
    shift
    rm -f "$WORK/out/got"
    t0=$EPOCHREALTIME
    if ! timeout 120 "$@" >/dev/null 2>"$WORK/out/err"; then
        echo "FAIL $name: $(head -c 300 "$WORK/out/err")" >&2
        FAILED=1
        echo "-"
        return
    fi
    t1=$EPOCHREALTIME
    if ! cmp -s "$WORK/out/got" "$WORK/srv/ap1g8"; then
        echo "FAIL $name: wrong content" >&2
        FAILED=1
        echo "-"
        return
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { grep -v '^-$' "$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

curl_hpa() { run curl curl -sS --tftp-blksize 1468 -o "$WORK/out/got" "tftp://127.0.0.1:$P_HPA/ap1g8"; }
relay_hpa() { run relay "$RELAY" fetch -q --blksize 1468 -o "$WORK/out/got" "tftp://127.0.0.1:$P_HPA/ap1g8"; }
relay_ours() { run relay-window "$RELAY" fetch -q --blksize 1468 --windowsize 16 -o "$WORK/out/got" "tftp://127.0.0.1:$P_OURS/ap1g8"; }
# Both pin the host key (curl's --hostpubsha256 takes the base64 without "SHA256:").
curl_ssh() { run curl-sftp curl -sS -u "$BENCH_USER:$PASSWORD" --hostpubsha256 "${FP#SHA256:}" -o "$WORK/out/got" "sftp://127.0.0.1:$P_SSH$WORK/srv/ap1g8"; }
relay_ssh() { run relay-sftp "$RELAY" fetch -q --password-file "$WORK/password" --host-key-fingerprint "$FP" -o "$WORK/out/got" "sftp://$BENCH_USER@127.0.0.1:$P_SSH$WORK/srv/ap1g8"; }

for row in 1 2 3; do
    : >"$WORK/r$row.curl"
    : >"$WORK/r$row.ours"
    for ((rep = 1; rep <= REPS; rep++)); do
        case $row in
            1) theirs=curl_hpa ours=relay_hpa ;;
            2) theirs=curl_hpa ours=relay_ours ;;
            3) theirs=curl_ssh ours=relay_ssh ;;
        esac
        if ((rep % 2)); then
            $theirs >>"$WORK/r$row.curl"
            $ours >>"$WORK/r$row.ours"
        else
            $ours >>"$WORK/r$row.ours"
            $theirs >>"$WORK/r$row.curl"
        fi
    done
done

REPORT=$WORK/report.md
{
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — relay fetch vs curl (bench/relay.sh)"
    echo
    echo "- $(nproc) CPUs, REPS=$REPS, ABBA order, 70,512,640-byte synthetic ap1g8 (relay also checks it as an image: tar structure and info members), every download compared with cmp; git $(cd "$REPO" && git rev-parse --short HEAD)"
    echo "- ratio = curl median / relay median (> 1: relay faster)"
    echo
    echo "| # | row | curl median s | relay median s | ratio |"
    echo "|---|---|---:|---:|---:|"
    for row in 1 2 3; do
        c=$(median "$WORK/r$row.curl")
        o=$(median "$WORK/r$row.ours")
        r=$(awk -v a="$c" -v b="$o" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }')
        case $row in
            1) name="tftpd-hpa, blksize 1468: curl vs relay (both lock-step)" ;;
            2) name="curl from tftpd-hpa (blksize 1468) vs relay windowsize 16 from airlift tftpd" ;;
            3) name="OpenSSH sshd (internal-sftp): curl sftp:// vs relay" ;;
        esac
        echo "| $row | $name | $c | $o | $r |"
    done
    echo
    echo "- $(curl --version | head -1); $("$SSHD_BIN" -V 2>&1 | head -1)"
    echo
} >"$REPORT"
cat "$REPORT"
if [[ $RECORD == 1 ]]; then cat "$REPORT" >>"$HERE/RESULTS.md"; fi
exit "$FAILED"
