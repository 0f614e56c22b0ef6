#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md in one run, on one machine, output
# in bench/out/ (one file per part). Peers (Dovecot, mbsync) come from
# Debian: apt-get install -y dovecot-imapd dovecot-lmtpd isync.
#
#   bash bench/run-all.sh          # hours on 2 cores; atrest alone takes about one
#   PARTS="lmtp imap" bash bench/run-all.sh   # only the parts named
set -uo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
run() { # name command...
	local name=$1
	shift
	case " ${PARTS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
	echo "== $name: $*"
	{ echo "# $*"; echo "# $(date -u +%FT%TZ) $(nproc) cores, $(go version), load average $(cut -d' ' -f1-3 /proc/loadavg)"; "$@"; } >"$out/$name.txt" 2>&1
	echo "# $(date -u +%FT%TZ) done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/$name.txt"
	tail -n 12 "$out/$name.txt"
}
run entry bash bench/entry.sh
run padding go test -run '^$' -bench 'BenchmarkPaddingShare' -benchtime 1x ./internal/entry/
run lmtp bash bench/lmtp.sh
run push bash bench/push.sh
run imap env N=10000 BIG=100000 bash bench/imap.sh
# Figure 2 at 3,000 in both entry formats, and at 10,000 in format 3: what
# the server's default (--entry-format auto) seals for a user of an
# upgraded installation until every device of the user has read format 3
# for 30 days, and after (and for a user whose log is new, at once).
run firstsync-3k env N=3000 SYNC_ONLY=1 bash bench/imap.sh
run firstsync-3k-format3 env ENTRY_FORMAT=3 N=3000 SYNC_ONLY=1 bash bench/imap.sh
run firstsync-10k-format3 env ENTRY_FORMAT=3 N=10000 SYNC_ONLY=1 bash bench/imap.sh
run atrest env N=10000 BIG=100000 bash bench/atrest.sh
run imapstress env N=50 DUR=30 ROUNDS=3 bash bench/imapstress.sh
run million-100k env M=100000 bash bench/million.sh
run restore-100k env M=100000 bash bench/restore.sh
# A new device of a user whose devices write checkpoints restores from the
# newest instead of replaying the log: figure 2's mailbox that way, in
# both entry formats (docs/BENCHMARKS.md, "A new device's restore on all
# cores"); RUNS=3 for the spread.
run restore-10k env M=10000 SIZE=10240 RUNS=3 bash bench/restore.sh
run restore-10k-format3 env ENTRY_FORMAT=3 M=10000 SIZE=10240 RUNS=3 bash bench/restore.sh
# One user's 1,000,000 messages against Dovecot: about 20 GB in /tmp and
# more than an hour on 2 cores (docs/BENCHMARKS.md); MILLION=1 runs it.
[ "${MILLION:-0}" = 1 ] && run million env M=1000000 RUNS=2 bash bench/million.sh
run churn go run ./bench/churn -n 10000 -flags 100000
run api go test -run '^$' -bench 'BenchmarkRead10k' -benchtime 3x ./internal/api/
run flood go run ./bench/flood -rounds 5 -phase 10s -keys 5000
run flood-unheld go run ./bench/flood -rounds 5 -phase 10s -keys 5000 -refusal-rate -1
run integrity go test -run '^$' -bench 'BenchmarkIntegrityCost' -benchtime 4x ./internal/hostile/
run chain go test -run '^$' -bench 'BenchmarkChainPerEntry' ./internal/hostile/
run restorecheck go test -run '^$' -bench 'BenchmarkRestoreCheck' -benchtime 5x ./internal/mailstore/
run recover go test -run '^$' -bench 'BenchmarkRecover' -benchtime 3x ./internal/recovery/
run offline go test -run '^$' -bench 'BenchmarkOfflineDrain' -benchtime 3x ./internal/syncer/
run postgres sh bench/postgres/run.sh 2000
run server bash bench/server.sh
run idle bash bench/idle.sh
# 10,000 devices long-polling one server, then two on PostgreSQL; raises its
# open-file limit to the hard limit, which must be at least 11,000. The
# first also restarts the server and measures the devices' return.
if CGO_ENABLED=0 go build -o /tmp/cspool-devices ./cmd/cspool; then
	run devices go run ./bench/devices --cspool /tmp/cspool-devices --users 10000 --idle 60s --restart
	run devices-postgres go run ./bench/devices --cspool /tmp/cspool-devices --users 10000 --idle 60s --store postgres --servers 2
fi
