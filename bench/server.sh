#!/usr/bin/env bash
# The spool server at scale (issue 17, points 4 to 7), each figure beside
# its reference in the same run:
#  1. many idle devices long-polling (bench/devices): 1,000 and 10,000 on
#     SQLite, 10,000 on PostgreSQL with one server and with two; the server's
#     RSS and idle CPU, and push latency, with what grows per device;
#  2. the cost of an append with 10 to 100,000 users in one store, SQLite and
#     PostgreSQL (BenchmarkAppendUsers), as a ratio to 10 users, and
#     PostgreSQL's WAL bytes per append, after a checkpoint;
#  3. what a new device reads against the live mailbox (bench/bootstrap).
# LMTP delivery against Dovecot is bench/lmtp.sh. The machine's load
# average is printed before and after: the figures move with it.
#
#   bash bench/server.sh                    # about 30 minutes on 2 cores
#   IDLE=60s PUSHES=200 DEVICES=10000 bash bench/server.sh
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/cspool-bench-server.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/cspool" ./cmd/cspool || exit 1
go build -o "$work/devices" ./bench/devices || exit 1
N=${DEVICES:-10000}
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for spec in "sqlite 1 1000" "sqlite 1 $N" "postgres 1 $N" "postgres 2 $N"; do
	set -- $spec
	echo
	echo "== $3 devices, store $1, $2 server(s) ($(date -u +%T), load $(cut -d' ' -f1 /proc/loadavg))"
	timeout 30m "$work/devices" --cspool "$work/cspool" --store "$1" --servers "$2" --users "$3" \
		--idle "${IDLE:-60s}" --pushes "${PUSHES:-200}"
done

# ratio NAME FILE: the time per append at each user count against 10 users.
ratio() {
	awk -v what="$1" '/^BenchmarkAppendUsers\/users=/ {
		split($1, a, "="); sub(/-[0-9]+$/, "", a[2]); ms = $3 / 1e6
		if (a[2] == 10) base = ms
		printf "%s: %7d users: %.3f ms per append, %.2fx the 10-user figure\n", what, a[2], ms, (base ? ms / base : 0)
	}' "$2"
}
echo
echo "== append cost by number of users: 8 appenders, 10 KB, logs of 10 entries ($(date -u +%T), load $(cut -d' ' -f1 /proc/loadavg))"
go test -run '^$' -bench 'BenchmarkAppendUsers' -benchtime 2000x -timeout 60m ./internal/spool/sqlitestore/ | tee "$work/sqlite.txt"
# A CHECKPOINT before each PostgreSQL figure: every page the appends change
# then pays its full-page image, the same in every run (docs/BENCHMARKS.md,
# "PostgreSQL's WAL per append with 100,000 users").
CSPOOL_BENCH_CHECKPOINT=1 go test -run '^$' -bench 'BenchmarkAppendUsers' -benchtime 2000x -timeout 60m ./internal/spool/pgstore/ | tee "$work/pg.txt"
ratio SQLite "$work/sqlite.txt"
ratio PostgreSQL "$work/pg.txt"
# PostgreSQL's WAL bytes per append against 10 users.
awk 'NF > 3 && /^BenchmarkAppendUsers\/users=/ {
	split($1, a, "="); sub(/-[0-9]+$/, "", a[2])
	for (i = 1; i < NF; i++) if ($(i + 1) == "walbytes/op") w = $i
	if (a[2] == 10) base = w
	printf "PostgreSQL WAL: %7d users: %d bytes per append, %.2fx the 10-user figure\n", a[2], w, (base ? w / base : 0)
}' "$work/pg.txt"

echo
echo "== a new device's bootstrap against the live mailbox ($(date -u +%T), load $(cut -d' ' -f1 /proc/loadavg))"
go run ./bench/bootstrap -n 10000 -flags 5000
echo
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
