#!/usr/bin/env bash
# The first sync of a new device, cspool builds against each other in
# turns: N messages of ~10 KB in one spool, one spool server (the first
# build) serving every round, and ROUNDS rounds in which each build's
# daemon in turn starts on a new database and syncs until IMAP STATUS shows
# all N. Prints each round, then each build's median and least time and
# daemon CPU, and the median of its round-by-round ratios to the first
# build's. For a change whose effect is smaller than the machine's
# noise between runs of bench/imap.sh (a spool server started afresh, and
# mbsync, in each): the builds meet the same server, warm, with its log in
# the page cache, one round after the other. It has no peer; the ratio to
# mbsync is bench/imap.sh's.
#
#   N=3000 ROUNDS=10 bash bench/firstsync-turns.sh OLD_BINARY NEW_BINARY
#
# SERVER=FILE runs that binary as the spool server instead of the first
# build (to compare servers: one run per server, the same daemon build).
# The server's CPU over the whole run is printed at its end.
#
# PROFILES=DIR writes each daemon's CPU profile (--cpuprofile) to
# DIR/build-I-round-R.prof (go tool pprof -top BINARY DIR/build-0-*.prof).
#
# Ports: PORTS (default 46140) + 3 for the daemons, + 859 for the server.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash bench/firstsync-turns.sh BINARY..." >&2; exit 2; }
bins=()
[ -n "${PROFILES:-}" ] && { mkdir -p "$PROFILES"; PROFILES=$(realpath "$PROFILES"); }
for b in "$@"; do bins+=("$(realpath "$b")"); done
cd "$(dirname "$0")/.."
source bench/lib/proc.sh
N=${N:-3000}
ROUNDS=${ROUNDS:-10}
P=${PORTS:-46140}
DP=$((P + 3))
SP=$((P + 859))
. bench/lib/ports.sh
free_ports $DP $SP
work=$(mktemp -d /tmp/cspool-bench-turns.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/seed" ./bench/seed
IB="python3 $PWD/bench/lib/imapbench.py"
C=${bins[0]}
cd "$work"
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$N" >/dev/null
sync
S=$C
[ -n "${SERVER:-}" ] && S=$(realpath "$SERVER")
$S server --spool-dir spool --users users --spool-key spool.sec --port $SP 2>server.log &
spid=$!
pids+=($spid)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$SP) 2>/dev/null && break; sleep 0.1; done
sleep 1.1 # past the server's start second (API.md §2), as in bench/imap.sh

# one BINARY: a first sync into a new database; prints seconds and CPU.
one() {
	local bin=$1 prof=() d t0
	[ -n "${PROFILES:-}" ] && prof=(--cpuprofile "$PROFILES/build-$2-round-$3.prof")
	rm -rf device.db device.db-* ready wait.json
	$IB waitcount 127.0.0.1 $DP alice pw "$N" 600 "$work/ready" >wait.json &
	local w=$!
	while [ ! -e ready ]; do sleep 0.01; done
	t0=$(date +%s.%N)
	"$bin" imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server http://127.0.0.1:$SP --db device.db --password pw --port $DP --status-addr '' "${prof[@]}" 2>>device.log >/dev/null &
	d=$!
	pids+=($d)
	wait $w
	echo "$(python3 -c "import json; print('%.3f' % (json.load(open('wait.json'))['reached_at'] - $t0))") $(cpu $d)"
	kill $d
	wait $d 2>/dev/null || true
}

echo "first sync of $N messages, ${#bins[@]} builds in turns, $ROUNDS rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
: >rounds.txt
for r in $(seq 1 "$ROUNDS"); do
	for i in "${!bins[@]}"; do
		read -r t c <<<"$(one "${bins[$i]}" "$i" "$r")"
		echo "round $r build $i: $t s, daemon CPU $c s"
		echo "$i $t $c" >>rounds.txt
	done
done
python3 - "${bins[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open("rounds.txt")]
for i, b in enumerate(sys.argv[1:]):
    t = [float(r[1]) for r in rows if r[0] == str(i)]
    c = [float(r[2]) for r in rows if r[0] == str(i)]
    print(f"build {i} ({b}): time median {statistics.median(t):.3f} s, least {min(t):.3f} s; daemon CPU median {statistics.median(c):.2f} s, least {min(c):.2f} s")
    if i > 0:
        # Round by round against build 0, which ran just before it: the
        # machine's drift over the run falls on both.
        t0 = [float(r[1]) for r in rows if r[0] == "0"]
        c0 = [float(r[2]) for r in rows if r[0] == "0"]
        tr = [a / b for a, b in zip(t, t0)]
        cr = [a / b for a, b in zip(c, c0)]
        print(f"  against build 0, round by round: time {statistics.median(tr):.2f}x (median; {min(tr):.2f}x to {max(tr):.2f}x), "
              f"daemon CPU {statistics.median(cr):.2f}x ({min(cr):.2f}x to {max(cr):.2f}x)")
PY
echo "spool server ($S): CPU $(cpu $spid) s over the run"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
