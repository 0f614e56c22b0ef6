#!/usr/bin/env bash
# bench/imap.sh's part 3 alone, without Dovecot: the daemon's RSS with BIG
# messages (N of ~10 KB, the rest of 2 KB, as bench/imap.sh seeds them) over
# the first sync, then idle 2 s after it, then at its peak over a FETCH 1:*
# (ENVELOPE FLAGS) and a SEARCH BODY (bench/lib/imapbench.py fetch; the
# search index is being built meanwhile, so SEARCH reads the messages it
# does not hold yet). bench/lib/memsample.py samples what the RSS is made
# of every 2 s into DIR/samples.jsonl, and the script describes the
# largest sample over the sync, after it, and of the whole run. The seeded spool is kept in SPOOLDIR
# (made once) so that builds can take turns on the same log:
#
#   PORTS=43140 SPOOLDIR=/tmp/bigspool bash bench/bigrss.sh CSPOOL_BINARY LABEL
#
# Ports: PORTS + 5 (IMAP), + 6 (pprof), SERVER_PORT (the spool server; default
# PORTS + 859). KEEPDIR=DIR copies the samples, with the smaps and heap
# profile of the largest one (memsample.py), and the daemon's log there as
# LABEL.*. GOSTATS=0 has memsample.py ask the daemon for no Go figures nor
# profiles (which make more of the binary's pages resident).
set -euo pipefail
BIN=$(realpath "$1")
LABEL=$2
N=${N:-10000}
BIG=${BIG:-100000}
P=${PORTS:-24140}
S=${SPOOLDIR:?SPOOLDIR: a directory for the seeded spool, kept between runs}
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib/ports.sh
SP=${SERVER_PORT:-$((P + 859))}
K=${KEEPDIR:-}
free_ports $((P + 5)) $((P + 6)) "$SP"
IB="python3 $PWD/bench/lib/imapbench.py"
MS="python3 $PWD/bench/lib/memsample.py"
if [ ! -e "$S/users" ]; then
	mkdir -p "$S"
	go build -o "$S/seed" ./bench/seed
	"$BIN" gen-keys "$S/user.sec" "$S/user.pub" >/dev/null
	"$BIN" gen-keys "$S/spool.sec" "$S/spool.pub" >/dev/null
	"$S/seed" spool --spool-dir "$S/spool" --user alice --user-key "$S/user.pub" --spool-key "$S/spool.sec" --count "$N" >/dev/null
	"$S/seed" spool --spool-dir "$S/spool" --user alice --user-key "$S/user.pub" --spool-key "$S/spool.sec" --count "$((BIG - N))" --size 2048 --seed 2 >/dev/null
	echo "alice $(grep -v '^#' "$S/user.pub")" >"$S/users"
fi
W=$(mktemp -d /tmp/cspool-bench-bigrss.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	if [ -n "$K" ]; then
		mkdir -p "$K"
		for f in samples.jsonl samples.jsonl.peak-smaps samples.jsonl.peak-heap big.log binpages.txt; do
			[ -e "$W/$f" ] && cp "$W/$f" "$K/$LABEL.$f"
		done
	fi
	rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
echo "$LABEL: $BIN, $(uptime)"
"$BIN" server --spool-dir "$S/spool" --users "$S/users" --spool-key "$S/spool.sec" --port $SP 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$SP) 2>/dev/null && break; sleep 0.1; done
sleep 1.1 # past the spool server's first second (API.md §2)
hwm() { awk '/VmHWM/ {print $2/1024}' "/proc/$1/status"; }
cur() { awk '/VmRSS/ {print $2/1024}' "/proc/$1/status"; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; } # user and system
t0=$(date +%s.%N)
"$BIN" imap-server --user alice --user-key "$S/user.sec" --user-public-key "$S/user.pub" --spool-key "$S/spool.pub" \
	--spool-server http://127.0.0.1:$SP --db big.db --password pw --port $((P + 5)) --status-addr '' \
	--pprof-addr 127.0.0.1:$((P + 6)) 2>big.log >/dev/null &
bpid=$!
pids+=($bpid)
$MS $((P + 6)) samples.jsonl &
pids+=($!)
$IB waitcount 127.0.0.1 $((P + 5)) alice pw "$BIG" 1200 >/dev/null
t1=$(date +%s.%N)
sync_hwm=$(hwm $bpid)
sync_cpu=$(cpu $bpid)
sleep 2
idle=$(cur $bpid)
$IB fetch 127.0.0.1 $((P + 5)) alice pw quarterly >fetch.json
[ -n "$K" ] && python3 "$ROOT/bench/lib/binpages.py" "$bpid" 12 >binpages.txt 2>&1 || true
python3 - "$LABEL" "$t0" "$t1" "$sync_hwm" "$idle" "$(hwm $bpid)" "$sync_cpu" "$(cpu $bpid)" <<'PY'
import json, sys
label, t0, t1, sync_hwm, idle, peak, sync_cpu, all_cpu = sys.argv[1:]
def describe(what, pk):
    conns = [x for x in pk["wasm"] if x > 0]
    sm = pk["smaps"]
    print(f"{label}: {what} {pk['t']}, RSS {pk['rss']} MB (anonymous {pk.get('anon')}, files {pk.get('file')}, shared {pk.get('shmem')}): "
          f"the binary {sm.get('binary', 0)} MB (code {sm.get('bin_text')}, read-only data {sm.get('bin_ro')}, data {sm.get('bin_rw')}), other files {sm.get('otherfile', 0)} MB, "
          f"Go heap arena {sm.get('goheap')} MB (allocated {pk['go'].get('HeapAlloc')}, next collection at {pk['go'].get('NextGC')}, runtime total {pk['go'].get('Sys')}, released {pk['go'].get('HeapReleased')}), "
          f"SQLite connections {conns} MB, -shm {sm.get('shm', 0)} MB, the rest {sm.get('anon_small', 0):.1f} MB")
d = json.load(open("fetch.json"))
print(f"{label}: sync {float(t1) - float(t0):.1f} s, peak over the sync {float(sync_hwm):.0f} MB, RSS idle {float(idle):.0f} MB, "
      f"peak (sync, FETCH and SEARCH) {float(peak):.0f} MB; FETCH 1:* {d['fetch_seconds']:.2f} s, SEARCH BODY {d['search_seconds']:.2f} s; "
      f"the daemon's CPU {float(sync_cpu):.1f} s over the sync, {float(all_cpu):.1f} s in all")
rows = [json.loads(l) for l in open("samples.jsonl")]
sync = [r for r in rows if r.get("ts", 0) <= float(t1)]
if sync:
    describe("largest sample over the sync", max(sync, key=lambda r: r["rss"]))
after = [r for r in rows if r.get("ts", 0) > float(t1)]
if after:
    describe("largest sample after the sync", max(after, key=lambda r: r["rss"]))
describe("largest sample", max(rows, key=lambda r: r["rss"]))
PY
echo "$LABEL: done, $(uptime)"
