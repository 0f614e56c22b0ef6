#!/bin/sh
# LMTP delivery rate and append latency of cspool server on PostgreSQL (one
# and two server processes) against the SQLite store, then how the cost of
# an append grows with the log size and the number of users.
#
# Usage (from the repository root):
#   bench/postgres/run.sh [COUNT]            # COUNT messages per run (default 4000)
# Environment:
#   CSPOOL_BENCH_POSTGRES  admin DSN (default postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
#   SKIP_GO_BENCH=1        skip the log-size and user-count benchmarks
# Every run: 8 LMTP connections, 10 KB messages, one recipient. A fresh
# database is created and dropped; nothing else is touched.
set -eu
COUNT=${1:-4000}
ADMIN=${CSPOOL_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
DB=cspool_bench_$$
DSN=$(echo "$ADMIN" | sed "s#/[^/?]*\(?\|\$\)#/$DB\1#")
TMP=$(mktemp -d)
cleanup() {
	stop_servers
	wait 2>/dev/null || true
	psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

go build -o "$TMP/cspool" ./cmd/cspool
go build -o "$TMP/lmtpbench" ./bench/lmtp
psql -q "$ADMIN" -c "CREATE DATABASE $DB" >/dev/null
"$TMP/cspool" gen-keys "$TMP/spool.sec" "$TMP/spool.pub" >/dev/null
"$TMP/cspool" gen-keys "$TMP/user.sec" "$TMP/user.pub" >/dev/null
echo "bench $(grep -o 'cspool-pub-1:[^ ]*' "$TMP/user.pub")" > "$TMP/users"
chmod 600 "$TMP/users"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# server NAME ARGS...: start a server with an LMTP listener; sets ADDR.
server() {
	name=$1; shift
	lp=$(port); hp=$(port)
	"$TMP/cspool" server --port "$hp" --users "$TMP/users" --spool-key "$TMP/spool.sec" \
		--lmtp "127.0.0.1:$lp" "$@" >"$TMP/$name.log" 2>&1 &
	pid=$!
	echo $pid >> "$TMP/pids"
	for _ in $(seq 100); do
		kill -0 $pid 2>/dev/null || break
		if python3 -c "import socket; socket.create_connection(('127.0.0.1',$lp),1)" 2>/dev/null; then
			ADDR="127.0.0.1:$lp"; return
		fi
		sleep 0.1
	done
	echo "server $name did not start:" >&2; cat "$TMP/$name.log" >&2; exit 1
}

stop_servers() {
	if [ -f "$TMP/pids" ]; then
		for p in $(cat "$TMP/pids"); do kill "$p" 2>/dev/null || true; done
		for p in $(cat "$TMP/pids"); do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
		rm -f "$TMP/pids"
	fi
}

load() { # ADDR CONNS COUNT
	"$TMP/lmtpbench" --addr "$1" --conns "$2" --count "$3" --size 10240 --rcpt bench@example.org --max-time 5m
}

echo "== SQLite store, 1 server, 8 connections, $COUNT x 10 KB"
mkdir -m 700 "$TMP/spool"
server sqlite --spool-dir "$TMP/spool"; A=$ADDR
load "$A" 8 "$COUNT"
stop_servers

echo "== PostgreSQL store, 1 server, 8 connections, $COUNT x 10 KB"
server pg1 --store postgres --dsn "$DSN" --spool-dir "$TMP"; A=$ADDR
load "$A" 8 "$COUNT"
stop_servers

echo "== PostgreSQL store, 2 servers, 4 connections each, $COUNT x 10 KB in all"
server pgA --store postgres --dsn "$DSN" --spool-dir "$TMP"; A=$ADDR
server pgB --store postgres --dsn "$DSN" --spool-dir "$TMP"; B=$ADDR
load "$A" 4 $((COUNT / 2)) > "$TMP/a.out" &
LA=$!
load "$B" 4 $((COUNT / 2)) > "$TMP/b.out"
wait $LA
echo "-- server A"; cat "$TMP/a.out"
echo "-- server B"; cat "$TMP/b.out"
echo "(the rate of the pair is the sum of the two rates)"
stop_servers
psql -qtA "$DSN" -c "SELECT 'positions dense: ' || (count(*) = max(pos) AND max(pos) = max(t.tip_head))::text FROM cspool_entries e JOIN cspool_logs l ON l.id = e.log_id, cspool_tip(l.id) t"

if [ "${SKIP_GO_BENCH:-}" != 1 ]; then
	echo "== append cost by log size (1 user) and by number of users; 8 appenders, 10 KB"
	CSPOOL_TEST_POSTGRES="$ADMIN" go test -run XXX -bench 'BenchmarkAppend(LogSize|Users)' -benchtime 3s -timeout 30m ./internal/spool/pgstore/
fi
