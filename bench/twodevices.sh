#!/usr/bin/env bash
# Two devices of one user on one spool server (real binaries on loopback),
# the IMAP stress mix of internal/imapstress on each at once for DUR (or
# on the first alone with IDLE=1). Prints the spool server's answers by
# status, what each device logged (refusals, checkpoints stored and
# refused as stale, rebuilds from a checkpoint, changes queued), each
# stress client's operations and errors, and how long after the clients
# stop both devices are at the head with nothing queued. The clients
# start 35 s after the server: a request signed before its start plus
# 30 s carries the earliest timestamp it accepts, whose nonce is held
# longer (docs/API.md §2, the restart rule).
#
#   DUR=90s bash bench/twodevices.sh
#   IDLE=1 DUR=60s bash bench/twodevices.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-90s}
work=$(mktemp -d /tmp/cspool-bench-two.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP=$(freeport) IMAP1=$(freeport) IMAP2=$(freeport)
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
go build -o "$work/imapstress" ./bench/imapstress
cd "$work"
C=./cspool
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count 50 --size 4096 >/dev/null
$C server --spool-dir spool --users users --spool-key spool.sec --port "$HTTP" 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$HTTP) 2>/dev/null && break; sleep 0.1; done
for d in 1 2; do
	port=$IMAP1
	[ "$d" = 2 ] && port=$IMAP2
	$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server "http://127.0.0.1:$HTTP" --db "dev$d.db" --password-file <(printf pw) --port "$port" --status-addr '' \
		2>"dev$d.log" >/dev/null &
	pids+=($!)
done
sleep 35
./imapstress --addr "127.0.0.1:$IMAP1" --user alice --password pw --duration "$DUR" --clients 10 --seed 1 >s1.json 2>&1 &
c1=$!
c2=
if [ -z "${IDLE:-}" ]; then
	./imapstress --addr "127.0.0.1:$IMAP2" --user alice --password pw --duration "$DUR" --clients 10 --seed 2 >s2.json 2>&1 &
	c2=$!
fi
wait $c1 $c2 || true
echo "clients stopped at $(date -u +%T) (load $(cut -d' ' -f1-3 /proc/loadavg))"
settled=
for i in $(seq 1 150); do
	s1=$($C status --db dev1.db 2>/dev/null || true) s2=$($C status --db dev2.db 2>/dev/null || true)
	if grep -q "up to date" <<<"$s1" && grep -q "up to date" <<<"$s2" &&
		grep -q "^Queued: *none" <<<"$s1" && grep -q "^Queued: *none" <<<"$s2"; then
		settled=$i
		break
	fi
	sleep 1
done
if [ -n "$settled" ]; then
	echo "both devices at the head with nothing queued ${settled} s after"
else
	echo "the devices were not both at the head with nothing queued within 150 s"
fi
echo "spool server's answers by status:"
grep -o 'status=[0-9]*' server.log | sort | uniq -c
for d in 1 2; do
	echo "dev$d: $(grep -c 'answered with an error' "dev$d.log" || true) refusals, $(grep -c 'unreachable' "dev$d.log" || true) unreachable," \
		"checkpoints stored $(grep -c 'checkpoint stored' "dev$d.log" || true), refused as stale $(grep -c 'checkpoint not needed' "dev$d.log" || true)," \
		"rebuilds $(grep -c 'rebuilt from checkpoint' "dev$d.log" || true), queueing lines $(grep -c 'changes queued' "dev$d.log" || true)"
done
python3 - <<'PY'
import json, os
for f in ('s1.json', 's2.json'):
    if not os.path.exists(f):
        continue
    try:
        d = json.load(open(f))
    except ValueError:
        print(f, 'unreadable:', open(f).read()[:300])
        continue
    errs = d.get('first_errors') or []
    kinds = {}
    for e in errs:
        k = 'a new UIDVALIDITY' if 'new UIDVALIDITY' in e else 'did not converge' if 'did not converge' in e else 'other'
        kinds[k] = kinds.get(k, 0) + 1
    print(f, 'errors', d.get('errors'), 'by kind (of the first 100)', kinds, 'ops', d.get('ops'), 'first errors', errs[:2])
PY
