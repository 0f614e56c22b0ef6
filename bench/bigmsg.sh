#!/usr/bin/env bash
# One large message, as a user would mail and read it: a spool server with
# LMTP and a device daemon, each a process of its own, fresh for each size;
# bench/lib/bigmsg.py mails one message of SIZE MB over LMTP (smtplib), waits
# until the device's INBOX has it, then FETCHes it whole (imaplib), sampling
# both processes' VmRSS and VmHWM every 0.2 s (docs/BENCHMARKS.md, "Large
# messages"):
#
#   PORTS=46000 SIZES="16 49" bash bench/bigmsg.sh CSPOOL_BINARY LABEL
#
# Ports: PORTS (HTTP API), +1 (LMTP), +2 (IMAP), +3 (the daemon's pprof),
# +4 (the server's pprof); where one of them cannot be bound, the next
# group of five, 10 ports up. SETTLE seconds (default 40) are sampled after the
# apply and after the FETCH. PROFDIR=DIR keeps the allocation profiles of the
# daemon (-0) and the server (-1) before the delivery, after the apply and
# after the FETCH, as DIR/LABEL-SIZE-{before,applied,fetched}-{0,1}.allocs
# (go tool pprof -sample_index=alloc_space -base ...before-0.allocs ...applied-0.allocs).
set -euo pipefail
BIN=$(realpath "$1")
LABEL=$2
P=${PORTS:-46000}
# bindable P...: whether each port can be bound now. A port of the
# ephemeral range held in TIME_WAIT by another program's connections is
# free to connect to and still refused to bind.
bindable() {
	python3 - "$@" <<'PY'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}
SIZES=${SIZES:-16 49}
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib/ports.sh
free_ports "$P" $((P + 1)) $((P + 2)) $((P + 3)) $((P + 4))
pids=()
W=
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	pids=()
	[ -n "$W" ] && rm -rf "$W"
}
trap cleanup EXIT
for size in $SIZES; do
	# The first group of five ports from PORTS on (in steps of 10, at
	# most 100 tries) that can all be bound.
	for try in $(seq 1 100); do
		bindable "$P" $((P + 1)) $((P + 2)) $((P + 3)) $((P + 4)) && break
		P=$((P + 10))
	done
	W=$(mktemp -d /tmp/cspool-bench-bigmsg.XXXXXX)
	"$BIN" gen-keys "$W/user.sec" "$W/user.pub" >/dev/null
	"$BIN" gen-keys "$W/spool.sec" "$W/spool.pub" >/dev/null
	echo "alice $(grep -v '^#' "$W/user.pub")" >"$W/users"
	echo "$LABEL $size MB: $(date -u +%FT%TZ), $(uptime)"
	"$BIN" server --spool-dir "$W/spool" --users "$W/users" --spool-key "$W/spool.sec" --port "$P" \
		--lmtp 127.0.0.1:$((P + 1)) --pprof-addr 127.0.0.1:$((P + 4)) 2>"$W/server.log" &
	spid=$!
	pids+=($spid)
	for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
	sleep 1.1 # past the spool server's first second (API.md §2)
	"$BIN" imap-server --user alice --user-key "$W/user.sec" --user-public-key "$W/user.pub" --spool-key "$W/spool.pub" \
		--spool-server http://127.0.0.1:$P --db "$W/dev.db" --password pw --port $((P + 2)) --status-addr '' \
		--pprof-addr 127.0.0.1:$((P + 3)) 2>"$W/daemon.log" >/dev/null &
	dpid=$!
	pids+=($dpid)
	for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$((P + 2))) 2>/dev/null && break; sleep 0.1; done
	sleep 5 # the daemon's first sync of an empty log, and its start, settle
	[ -n "${PROFDIR:-}" ] && export PPROF=$((P + 3)),$((P + 4))
	PROFDIR=${PROFDIR:+$PROFDIR/$LABEL-$size} python3 "$ROOT/bench/lib/bigmsg.py" $((P + 1)) $((P + 2)) pw "$spid" "$dpid" "$size" "${SETTLE:-40}"
	cleanup
	W=
done
echo "$LABEL: done, $(date -u +%FT%TZ), $(uptime)"
