#!/usr/bin/env bash
# The queries of bench/million.sh step 3 against a setup it kept (KEEP=1),
# after a restart: the spool server and `cspool imap-server` started on the
# kept spool and device, then SELECT INBOX, UID FETCH 1:* (FLAGS) and SEARCH
# HEADER Message-ID (the first after the start and the best of RUNS after
# it) and FETCH 1:* (ENVELOPE FLAGS) once (bench/lib/bigbox.py), with the
# daemon's RSS sampled every 0.2 s: the peak (VmHWM) covers its start (the
# INBOX listing loaded) and the queries. OUT (default: none) gets the
# samples, a heap profile and /proc/PID/smaps after the queries.
#
#   M=1000000 bash bench/million-restart.sh /tmp/cspool-bench-million.XXXXXX
#
# The daemon is the tree's, built here; the ports are PORTS (default 24140)
# + 3, 6 and 859, as bench/million.sh's. A daemon that finds a checkpoint
# due (a seeded device's first start writes one of the whole mailbox)
# writes it first: run it once before measuring.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(realpath "$1")
M=${M:-1000000}
RUNS=${RUNS:-3}
P=${PORTS:-24140}
. bench/lib/ports.sh
free_ports $((P + 3)) $((P + 859))
OUT=${OUT:-}
[ -n "$OUT" ] && mkdir -p "$OUT" && OUT=$(realpath "$OUT")
bin=$(mktemp -d "${TMPDIR:-/tmp}/cspool-restart.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	rm -rf "$bin"
}
trap cleanup EXIT
go build -o "$bin/cspool" ./cmd/cspool
C=$bin/cspool
BB="python3 $PWD/bench/lib/bigbox.py"
IB="python3 $PWD/bench/lib/imapbench.py"
cd "$W"
load() { printf '(load %s)' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
mb() { awk -v k="$2:" '$1 == k {printf "%.0f", $2/1024}' "/proc/$1/status"; }
msgid="bench-1-$((M / 2))@example.org"
$C server --spool-dir spool --users users --spool-key spool.sec --port $((P + 859)) 2>>"$bin/server.log" &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$((P + 859))) 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s.%N)
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:$((P + 859)) --db device.db --password pw --port $((P + 3)) \
	--status-addr '' --pprof-addr 127.0.0.1:$((P + 6)) 2>>"$bin/device.log" >/dev/null &
dpid=$!
pids+=($dpid)
# The RSS every 0.2 s, from the start.
(
	while [ -e /proc/$dpid/status ]; do
		r=$(mb $dpid VmRSS 2>/dev/null || echo 0)
		[ -n "$OUT" ] && echo "$(date +%s.%N) $r $(mb $dpid RssAnon) $(mb $dpid RssFile) $(mb $dpid RssShmem)" >>"$OUT/rss-samples.txt"
		sleep 0.2
	done
) 2>/dev/null &
pids+=($!)
$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$M" 600 >/dev/null
echo "cspool started: STATUS shows $M after $(python3 -c "print('%.1f' % ($(date +%s.%N) - $t0))") s, RSS $(mb $dpid VmRSS) MB, peak $(mb $dpid VmHWM) MB $(load)"
cs=$($BB 127.0.0.1 $((P + 3)) alice pw "$RUNS" "$msgid")
echo "cspool queries: $cs"
echo "cspool after the queries: RSS $(mb $dpid VmRSS) MB (anonymous $(mb $dpid RssAnon), file $(mb $dpid RssFile), shared $(mb $dpid RssShmem)), peak since the start $(mb $dpid VmHWM) MB $(load)"
if [ -n "$OUT" ]; then
	curl -sf -o "$OUT/heap.prof" "http://127.0.0.1:$((P + 6))/debug/pprof/heap" || true
	cp "/proc/$dpid/smaps" "$OUT/smaps.txt"
fi
python3 - "$M" "$cs" <<'PY'
import json, sys
m, cs = sys.argv[1], json.loads(sys.argv[2])
print(f"{int(m):,} messages, after a restart: first, then the best of the runs after it; seconds")
for q in ("select", "uid_fetch_flags", "search_msgid", "fetch_envelope_flags"):
    c = cs.get(q)
    if c:
        print(f"{q:<22} {c['first']:>8.4f} {c.get('best', c['first']):>8.4f} {c['lines']:>8}")
if "failed" in cs:
    print(f"failed at {cs['failed']}")
PY
