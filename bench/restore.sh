#!/usr/bin/env bash
# A new device bootstrapping from a checkpoint of M messages (default
# 100,000) of about SIZE bytes (2 KB): its peak RSS and its time.
#  1. `seed spool --device --checkpoint` writes the spool's log of M
#     deliveries and a device's database at its head (without a search
#     index, which no checkpoint holds: `--index=false`), and that device's
#     checkpoint at the head into the spool (syncer's WriteCheckpoint);
#  2. the spool server on it; then, for each cspool binary in CSPOOLS
#     (default: the one built from this tree), RUNS times in turns, a new
#     device: `cspool imap-server` on a new database, which reads the
#     checkpoint, restores from it and fetches the M bodies it keeps, until
#     IMAP STATUS shows M; its time and its peak RSS (VmHWM) then, and the
#     largest temporary file it held.
# Every line prints the load average. With DURING=SECONDS, a mail client
# (imapbench.py during) APPENDs a message and STOREs \Flagged on it that
# many seconds after each daemon starts, while it bootstraps, and prints
# how long each took and whether the message is there once, flagged,
# after the restore.
#
# The work folder is WORK (default /tmp), deleted at the end unless KEEP=1;
# ENTRY_FORMAT=3 seals the log's deliveries in entry format 3 (a chain of
# keys, docs/FORMAT.md), as the server's default seals them for a user
# whose devices all read it; the default is 2.
# REUSE=FOLDER takes the keys, log and checkpoint a run with KEEP=1 kept
# there instead of step 1 (and keeps them).
# The ports are PORTS (default 25140) + 3 (IMAP) and SERVER_PORT (the
# spool server; default PORTS + 859).
#
#   M=100000 bash bench/restore.sh
#   CSPOOLS="/tmp/cspool-before /tmp/cspool-after" RUNS=2 bash bench/restore.sh
set -euo pipefail
cd "$(dirname "$0")/.."
M=${M:-100000}
SIZE=${SIZE:-2048}
RUNS=${RUNS:-1}
P=${PORTS:-25140}
SP=${SERVER_PORT:-$((P + 859))}
. bench/lib/ports.sh
free_ports $((P + 3)) $SP
KEEP=${KEEP:-0}
REUSE=${REUSE:-}
if [ -n "$REUSE" ]; then
	work=$(realpath "$REUSE")
	KEEP=1
else
	work=$(mktemp -d "${WORK:-/tmp}/cspool-bench-restore.XXXXXX")
fi
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	[ "$KEEP" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
CSPOOLS=${CSPOOLS:-$work/cspool}
IB="python3 $PWD/bench/lib/imapbench.py"
C=$work/cspool
cd "$work"
load() { printf '(load %s)' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
hwm() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

if [ -z "$REUSE" ]; then
	$C gen-keys user.sec user.pub >/dev/null
	$C gen-keys spool.sec spool.pub >/dev/null
	echo "alice $(grep -v '^#' user.pub)" >users
	t0=$SECONDS
	./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec \
		--count "$M" --size "$SIZE" --batch 5000 --device seeded.db --index=false --user-secret user.sec --checkpoint \
		--entry-format "${ENTRY_FORMAT:-2}" | sed -u 's/^/  /'
	echo "spool log, device and its checkpoint of $M messages of $SIZE bytes: $((SECONDS - t0)) s, log $(du -sm spool | cut -f1) MB $(load)"
fi
$C server --spool-dir spool --users users --spool-key spool.sec --port $SP 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$SP) 2>/dev/null && break; sleep 0.1; done
# A request signed within the second the server started is refused once
# (API.md §2, the restart rule) and asked again in the next second: the
# first run waited up to a second for it (bench/imap.sh waits too).
sleep 1.1

for r in $(seq 1 "$RUNS"); do
	for bin in $CSPOOLS; do
		db=new-$r-$(basename "$bin").db
		# Without DURING, the client that waits for STATUS starts first
		# and the clock once it has (Python's start is not the
		# restore's), and STATUS is asked every 10 ms: the time is
		# taken as bench/imap.sh takes a first sync's.
		rm -f ready "$db.wait"
		if [ -z "${DURING:-}" ]; then
			$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$M" 3600 ready >"$db.wait" &
			wpid=$!
			while [ ! -e ready ]; do sleep 0.01; done
		fi
		t0=$(date +%s.%N)
		"$bin" imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
			--spool-server http://127.0.0.1:$SP --db "$db" --password pw --port $((P + 3)) \
			--status-addr '' 2>"$db.log" >/dev/null &
		dpid=$!
		pids+=($dpid)
		# The largest file the daemon holds open under the database's
		# folder that has no name (the checkpoint's temporary file).
		tmax=0
		if [ -n "${DURING:-}" ]; then
			$IB during 127.0.0.1 $((P + 3)) alice pw "$DURING" "$M" 3600 >"$db.during" &
			wpid=$!
		fi
		# One find a look (it was a readlink and a stat for every open
		# file every 50 ms: some 40 processes started in that time, on
		# the cores the restore needs, which made a restore of 10,000
		# messages of 10 KB read 4.3 to 6 s against 2.7 s unwatched).
		while kill -0 $wpid 2>/dev/null; do
			s=$(find -L /proc/$dpid/fd -maxdepth 1 -type f -links 0 -printf '%s\n' 2>/dev/null | sort -n | tail -1)
			[ -n "$s" ] && [ "$s" -gt "$tmax" ] && tmax=$s
			sleep 0.1
		done
		wait $wpid
		t1=$(date +%s.%N)
		[ -z "${DURING:-}" ] && t1=$(python3 -c "import json; print(json.load(open('$db.wait'))['reached_at'])")
		echo "$bin run $r: STATUS shows $M after $(python3 -c "print('%.2f' % ($t1 - $t0))") s, peak RSS $(hwm $dpid) MB, largest unlinked file $((tmax / 1048576)) MB $(load)"
		grep -o '"msg":"rebuilt from checkpoint"[^}]*\|msg="rebuilt from checkpoint".*' "$db.log" | sed 's/^/  /' || true
		[ -n "${DURING:-}" ] && echo "  client during the bootstrap: $(cat "$db.during")"
		kill $dpid
		wait $dpid 2>/dev/null || true
		# The database, its WAL and the daemon's lock file and socket
		# folder go; its log stays beside a kept (REUSE) work folder.
		rm -rf "$db" "$db"-* "$db".lock "$db".run "$db.wait" ready
	done
done
