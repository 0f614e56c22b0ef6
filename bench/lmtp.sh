#!/usr/bin/env bash
# LMTP delivery rate and append-ack latency: cspool server (SQLite spool,
# synchronous=FULL) against Dovecot's LMTP (Maildir, default fsync), same
# 10 KB messages, same load generator, same machine, one run.
#
#   bash bench/lmtp.sh            # COUNT1=2000 COUNT8=4000 by default
#   PROFILE=cpu.pprof bash bench/lmtp.sh   # also a CPU profile of the server,
#       the first PROFILE_SECONDS (default 4) of its 8-connection run
#   CSPOOL=FILE bash bench/lmtp.sh  # runs that cspool binary instead of
#       building ./cmd/cspool (to measure two builds in turns)
#   ONLY8=1 bash bench/lmtp.sh     # the 8-connection runs alone
#   ENTRY_FORMAT=3 bash bench/lmtp.sh  # the server seals in entry format 3
#       (--entry-format 2, 3 or auto; unset: the server's default, auto,
#       which seals 3 here: the store makes each user's log, and has every
#       read of it recorded from its start; before schema 8 it sealed 2)
set -euo pipefail
[ -n "${CSPOOL:-}" ] && CSPOOL=$(realpath "$CSPOOL")
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
work=$(mktemp -d /tmp/cspool-bench-lmtp.XXXXXX)
chmod 755 "$work" # Dovecot delivers as the vmail user
spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
	dovecot_stop "$work/dovecot"
	rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${CSPOOL:-}" ]; then cp "$CSPOOL" "$work/cspool"; else go build -o "$work/cspool" ./cmd/cspool; fi
go build -o "$work/lmtpload" ./bench/lmtp
C=$work/cspool
$C gen-keys "$work/bench.sec" "$work/bench.pub" >/dev/null
$C gen-keys "$work/spool.sec" "$work/spool.pub" >/dev/null
echo "bench $(grep -v '^#' "$work/bench.pub")" >"$work/users"
$C server --spool-dir "$work/spool" --users "$work/users" --spool-key "$work/spool.sec" \
	--port 23999 --lmtp 127.0.0.1:22424 ${ENTRY_FORMAT:+--entry-format "$ENTRY_FORMAT"} ${PROFILE:+--pprof-addr 127.0.0.1:26060} 2>"$work/server.log" &
spid=$!
dovecot_start "$work/dovecot" 22143 22425 bench pw
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/22424) 2>/dev/null && break; sleep 0.1; done

# cpu_ms PID: the process's user and system CPU time so far, in ms.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }
echo "start $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), cspool $(sha256sum "$C" | cut -c1-12)"

run() { # name addr conns count
	"$work/lmtpload" --addr "$2" --conns "$3" --count "$4" --size 10240 --rcpt bench@example.org --json
}
printf '%-8s %5s %10s %10s %9s %9s %12s\n' peer conns msg/s p50ms p99ms failed cpu-ms/msg
declare -A rate
conn_list="1 8"
[ -n "${ONLY8:-}" ] && conn_list=8
for conns in $conn_list; do
	count=${COUNT1:-2000}
	[ "$conns" = 8 ] && count=${COUNT8:-4000}
	for peer in cspool dovecot; do
		addr=127.0.0.1:22424
		[ "$peer" = dovecot ] && addr=127.0.0.1:22425
		prof=
		if [ -n "${PROFILE:-}" ] && [ "$peer$conns" = cspool8 ]; then
			curl -s -o "$PROFILE" "http://127.0.0.1:26060/debug/pprof/profile?seconds=${PROFILE_SECONDS:-4}" &
			prof=$!
			sleep 0.2
		fi
		cpu0=$(cpu_ms "$spid")
		out=$(run "$peer" "$addr" "$conns" "$count")
		cpu1=$(cpu_ms "$spid")
		[ -n "$prof" ] && wait "$prof"
		r=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f %.1f %.1f %d" % (d["MsgPerSec"], d["P50ms"], d["P99ms"], d["Failed"]))' "$out")
		set -- $r
		rate[$peer$conns]=$1
		# The spool server's CPU per message (cspool only: Dovecot's
		# work is spread over processes it starts).
		per=-
		[ "$peer" = cspool ] && per=$(python3 -c "print('%.3f' % (($cpu1 - $cpu0) / $count))")
		printf '%-8s %5s %10s %10s %9s %9s %12s\n' "$peer" "$conns" "$1" "$2" "$3" "$4" "$per"
	done
done
echo
for conns in $conn_list; do
	python3 -c "print('ratio cspool/dovecot at $conns conns: %.2fx' % (${rate[cspool$conns]}/${rate[dovecot$conns]}))"
done
# Bytes stored on the spool per message versus the plaintext size.
python3 - "$work/spool/spool.db" <<'PY'
import os, sqlite3, sys
db = sys.argv[1]
n, total = sqlite3.connect(db).execute("select count(*), sum(length(data)) from entries").fetchone()
size = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
print("spool: %d entries, %.0f entry bytes per 10240-byte message (%.3fx), %.0f file bytes per message" % (n, total / n, total / n / 10240, size / n))
PY
echo "end $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
