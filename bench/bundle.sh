#!/usr/bin/env bash
# bench/bundle.sh: `bundle-tool stage` against `unzip -q` + `sha256sum` on a full-size
# synthetic bundle (the source document's sizes, about 745 MB), same disk, interleaved.
#
# Rows, each REPS times, order rotated per repetition:
#   unzip+sha256     unzip -q B.zip -d OUT && (cd OUT && sha256sum * > SHA256SUMS)
#   unzip+sha+md5    the same plus md5sum (the work bundle-tool does: it also writes MD5s)
#   ours             bundle-tool stage B.zip ROOT  (validate + extract + SHA-256 + MD5 +
#                    manifest, fsync of every file, atomic rename)
#   ours --no-fsync  the same without fsync (unzip does not fsync either)
# Each run starts after `sync` with the zip in the page cache (read once before), so the
# rows compare CPU and write work, not cold reads. Prints medians, ratios and PASS/FAIL for the
# target "ours no slower than unzip + sha256sum", and appends the table to bench/RESULTS.md.
set -euo pipefail
export LC_ALL=C

REPS=${REPS:-3}
SKIP_APT=${SKIP_APT:-0}
KEEP=${KEEP:-0}
RECORD=${RECORD:-1}
SCALE=${SCALE:-1}
WORK_PARENT=${WORK:-${TMPDIR:-/var/tmp}} # the scratch folder is made inside it, and removed

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BIN=$REPO/target/release/bundle-tool

die() { echo "bundle.sh: $*" >&2; exit 2; }
log() { echo "== $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
if [[ $SKIP_APT != 1 ]]; then
    log "apt-get update && apt-get install -y unzip coreutils"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null || die "apt-get update failed"
    apt-get install -y unzip coreutils >/dev/null || die "apt-get install failed"
fi
for t in unzip sha256sum md5sum; do command -v $t >/dev/null || die "$t is missing"; done

log "cargo build --release --locked -p bundle-tool"
(cd "$REPO" && cargo build --release --locked -p bundle-tool) >&2 || die "build failed"

[[ -d $WORK_PARENT ]] || die "WORK=$WORK_PARENT is not a folder"
WORK=$(mktemp -d "$WORK_PARENT/airlift-bundle-bench.XXXXXX") || die "cannot create a folder in $WORK_PARENT"
cleanup() { [[ $KEEP == 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT
need_kb=$(awk -v s="$SCALE" 'BEGIN { printf "%d", s * 745000 * 3.2 }')
avail_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((avail_kb > need_kb)) || die "$WORK has ${avail_kb} kB free, needs about ${need_kb} kB"

ZIP=$WORK/bundle.zip
log "synthesising a bundle at scale $SCALE into $ZIP"
"$BIN" synth --version 17.9.4.27 --scale "$SCALE" --out "$ZIP" >&2
ZIP_BYTES=$(stat -c %s "$ZIP")
cat "$ZIP" >/dev/null # into the page cache: every row starts warm
UNPACKED_BYTES=$("$BIN" --json validate "$ZIP" | awk -F': ' '/"total_bytes"/ { gsub(/,/, "", $2); print $2; exit }')

declare -A TIMES
rows=("unzip+sha256" "unzip+sha+md5" "ours" "ours --no-fsync")

run_row() { # row rep -> seconds on stdout
    local row=$1 rep=$2 out=$WORK/out-$rep t0 t1
    rm -rf "$out"
    mkdir -p "$out"
    sync
    t0=$EPOCHREALTIME
    case $row in
        "unzip+sha256")
            unzip -q "$ZIP" -d "$out/x"
            (cd "$out/x" && sha256sum -- * >SHA256SUMS)
            ;;
        "unzip+sha+md5")
            unzip -q "$ZIP" -d "$out/x"
            (cd "$out/x" && sha256sum -- * >SHA256SUMS && md5sum -- * >MD5SUMS)
            ;;
        "ours") "$BIN" stage "$ZIP" "$out" --name x >/dev/null ;;
        "ours --no-fsync") "$BIN" stage "$ZIP" "$out" --name x --no-fsync >/dev/null ;;
    esac
    t1=$EPOCHREALTIME
    [[ -s $out/x/ap1g8 ]] || die "$row: nothing extracted"
    [[ $(stat -c %s "$out/x/ap1g8") == 70512640 || $SCALE != 1 ]] || die "$row: ap1g8 has the wrong size"
    rm -rf "$out"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

log "rows: ${rows[*]}; $REPS reps, order rotated"
for ((rep = 0; rep < REPS; rep++)); do
    for ((k = 0; k < ${#rows[@]}; k++)); do
        row=${rows[$(((k + rep) % ${#rows[@]}))]}
        s=$(run_row "$row" "$rep")
        TIMES[$row]+="$s "
        log "rep $((rep + 1)) $(printf '%-16s' "$row") $s s"
    done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A MED
for row in "${rows[@]}"; do MED[$row]=$(echo "${TIMES[$row]}" | median); done
base=${MED["unzip+sha256"]}

report() {
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — bundle-tool stage vs unzip + sha256sum"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- bundle: synthetic (bundle-tool synth --scale $SCALE), $ZIP_BYTES-byte zip, $UNPACKED_BYTES bytes unpacked, 11 files; on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($WORK), zip warm in the page cache"
    echo "- git $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet || echo +dirty); REPS=$REPS, order rotated; unzip $(unzip -v | awk 'NR == 1 { print $2 }'), $(sha256sum --version | head -1)"
    echo
    echo "| row | median s | all runs s | MB/s unpacked | ratio (unzip+sha256) / row |"
    echo "|---|---:|---|---:|---:|"
    for row in "${rows[@]}"; do
        awk -v r="$row" -v m="${MED[$row]}" -v all="${TIMES[$row]}" -v b="$base" -v u="$UNPACKED_BYTES" \
            'BEGIN { printf "| %s | %.3f | %s | %.0f | %.2f |\n", r, m, all, u / m / 1e6, b / m }'
    done
    echo
    if awk -v o="${MED[ours]}" -v b="$base" 'BEGIN { exit !(o <= b) }'; then
        echo "- PASS: ours (with fsync) no slower than unzip + sha256sum (${MED[ours]} s vs $base s)"
    else
        echo "- FAIL: ours (with fsync) no slower than unzip + sha256sum (${MED[ours]} s vs $base s)"
    fi
    echo
}
report | tee /dev/stderr >"$WORK/report.md"
if [[ $RECORD == 1 ]]; then
    { echo; cat "$WORK/report.md"; } >>"$HERE/RESULTS.md"
    log "appended to $HERE/RESULTS.md"
fi
