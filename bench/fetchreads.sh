#!/usr/bin/env bash
# The warm and cold FETCH figures of bench/imap.sh (part 2') on mailboxes
# made once, so that a quiet hour is spent measuring, not syncing:
#
#   bash bench/fetchreads.sh prepare DIR
#       keys; a spool of N messages of ~10 KB (as bench/imap.sh seeds
#       them, DIR/spool-n) and two device databases synced to it
#       (encrypted at rest, and plaintext by a -tags cspool_bench_plaintext
#       build); a spool of the same N and BIG - N more of 2 KB
#       (DIR/spool) and two databases synced to it; each daemon stopped
#       once its search index is complete; two Dovecot Maildirs of the same
#       N and BIG messages, indexed by doveadm. What DIR holds already is
#       kept. SIZES=n prepares the N alone (default "n big"). The reads serve each database from its own spool, so that a
#       database of N never syncs the BIG.
#   bash bench/fetchreads.sh reads DIR SIZE BUILD CLIENT [CSPOOL]
#       SIZE n or big, BUILD enc or plain, CLIENT imaplib or socket:
#       bench/imap.sh's reads (each of its six FETCH 1:* items after a
#       restart of both servers, then RUNS more in turns on one connection
#       each) of that database against Dovecot; CSPOOL is the daemon's
#       binary (default DIR/cspool, or DIR/cspool-plain for plain), so
#       that another build reads the same database in turn. ITEMS is
#       one of the six to read alone, such as ITEMS=BODYSTRUCTURE (its
#       name without the parentheses). With DROP=1
#       the operating system's file cache is dropped (as root, echo 3 >
#       /proc/sys/vm/drop_caches) once both servers are up and idle,
#       before the first FETCH of each item: cold as after a reboot, for
#       both. DB is another database file to serve (default
#       DIR/BUILD-SIZE.db), such as one made by place.
#   bash bench/fetchreads.sh place DIR SIZE BUILD CSPOOL
#       copies DIR/BUILD-SIZE.db to DIR/BUILD-SIZE-placed.db, starts the
#       daemon CSPOOL on the copy until it logs that it placed the forms
#       together on disk (Store.Relocate, docs/MAILSTORE.md "Placement"),
#       and stops it: the database of a daemon that has been idle once
#       after its sync.
#   bash bench/fetchreads.sh atrest DIR SIZE CSPOOL CSPOOL_PLAIN
#       FETCH 1:* (ENVELOPE FLAGS) of the encrypted and the plaintext
#       database of SIZE, in turns on one connection each after a restart
#       of both, as imaplib times it (bench/atrest.sh's FETCH, which
#       times each build on a database it has just synced).
#   bash bench/fetchreads.sh cpu DIR SIZE BUILD ITEMS COUNT CSPOOL...
#       the daemon's CPU per warm FETCH 1:* ITEMS of the BUILD database of
#       SIZE (from /proc, COUNT FETCHes on one connection by bigbox.py's
#       socket client after one untimed), each CSPOOL in turn started on
#       it, and the wall clock's best and median.
#   bash bench/fetchreads.sh turns DIR SIZE BUILD CSPOOL_A CSPOOL_B
#       two builds and Dovecot read in turns (for a change whose effect is
#       smaller than what other work on the machine does to one run): A
#       serves DIR/BUILD-SIZE.db, B a copy of it made now; per item (ITEMS
#       as for reads) RUNS rounds of imaplib's FETCH 1:* on each, the order
#       rotating (imapbench.py trio: medians, and the medians of the
#       rounds' ratios B/A, A/Dovecot, B/Dovecot), then when each server's
#       answer arrives at a socket that does not parse (imapbench.py
#       arrival: first byte, half, last). Run it again with A and B
#       swapped: each has its own database file.
#   bash bench/fetchreads.sh bytes DIR SIZE BUILD [CSPOOL]
#       each server's whole answer to each of the six FETCH 1:* items
#       (after LOGIN and EXAMINE INBOX, warm: the second of two), written
#       to DIR/bytes-SIZE/cspool-ITEMS and dovecot-ITEMS, and how they
#       differ (bytes, lines, literals, lines that differ); ITEMS as for
#       reads. bench/lib/imapreplay.py times imaplib reading them.
#
# The ports are PORTS (default 46140) + 3 to 6 and PORTS + 859 (the spool
# server, started by each command and stopped at its end).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
source bench/lib/proc.sh
N=${N:-10000}
BIG=${BIG:-100000}
RUNS=${RUNS:-5}
P=${PORTS:-46140}
. bench/lib/ports.sh
free_ports $((P + 3)) $((P + 4)) $((P + 5)) $((P + 6)) $((P + 859))
IB="python3 $PWD/bench/lib/imapbench.py"
READS=("(ENVELOPE FLAGS)" "(ENVELOPE)" "(FLAGS)" "(BODYSTRUCTURE)" "(RFC822.SIZE)" "(UID)")
[ -n "${ITEMS:-}" ] && READS=("($ITEMS)")
SIZES=${SIZES:-n big}
cmd=$1 dir=$(realpath -m "$2")
shift 2
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$dir/dv-n"
	dovecot_stop "$dir/dv-big"
}
trap cleanup EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

# server SPOOL: start the spool server on DIR/SPOOL (its pid in spid).
server() {
	"$dir/cspool" server --spool-dir "$dir/$1" --users "$dir/users" --spool-key "$dir/spool.sec" \
		--port $((P + 859)) 2>>"$dir/server.log" &
	spid=$!
	pids+=($spid)
	local i
	for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$((P + 859))) 2>/dev/null && break; sleep 0.1; done
	sleep 1.1 # past the server's start second (API.md §2)
}

# daemon BIN DB PORT LOG: start a daemon (its pid in dpid).
daemon() {
	"$1" imap-server --user alice --user-key "$dir/user.sec" --user-public-key "$dir/user.pub" \
		--spool-key "$dir/spool.pub" --spool-server http://127.0.0.1:$((P + 859)) --db "$2" \
		--password pw --port "$3" --status-addr '' 2>>"$4" >/dev/null &
	dpid=$!
	pids+=($dpid)
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# synced BIN DB COUNT: sync DB to COUNT messages, wait for its search
# index, stop the daemon.
synced() {
	local t0=$SECONDS
	daemon "$1" "$2" $((P + 3)) "$2.log"
	$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$3" 3600 >/dev/null
	echo "$(basename "$2"): synced $3 in $((SECONDS - t0)) s (load $(load))"
	until [ "$("$dir/cspool" status --db "$2" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["search"]["unindexed"])')" = 0 ]; do
		[ $((SECONDS - t0)) -lt 3600 ] || { echo "no complete index after an hour" >&2; exit 1; }
		sleep 2
	done
	echo "$(basename "$2"): indexed in $((SECONDS - t0)) s (load $(load))"
	stop "$dpid"
}

case $cmd in
prepare)
	mkdir -p "$dir"
	chmod 755 "$dir"
	go build -o "$dir/cspool" ./cmd/cspool
	go build -tags cspool_bench_plaintext -o "$dir/cspool-plain" ./cmd/cspool
	go build -o "$dir/seed" ./bench/seed
	cd "$dir"
	if [ ! -e user.sec ]; then
		./cspool gen-keys user.sec user.pub >/dev/null
		./cspool gen-keys spool.sec spool.pub >/dev/null
		echo "alice $(grep -v '^#' user.pub)" >users
	fi
	for s in $SIZES; do
		sp=spool-n
		[ $s = big ] && sp=spool
		count=$N
		[ $s = big ] && count=$BIG
		if [ ! -e "$sp" ]; then
			./seed spool --spool-dir "$sp" --user alice --user-key user.pub --spool-key spool.sec --count "$N" >/dev/null
			[ $s = big ] && ./seed spool --spool-dir "$sp" --user alice --user-key user.pub --spool-key spool.sec \
				--count "$((BIG - N))" --size 2048 --seed 2 >/dev/null
		fi
		[ -e "enc-$s.db" ] && [ -e "plain-$s.db" ] && continue
		server "$sp"
		[ -e "enc-$s.db" ] || synced "$dir/cspool" "$dir/enc-$s.db" "$count"
		[ -e "plain-$s.db" ] || synced "$dir/cspool-plain" "$dir/plain-$s.db" "$count"
		stop "$spid"
	done
	for s in $SIZES; do
		[ -e "dv-$s/mail/alice/Maildir" ] && continue
		dovecot_start "$dir/dv-$s" $((P + 4)) $((P + 285)) alice pw
		./seed maildir --dir "$dir/dv-$s/mail/alice/Maildir" --count "$N" >/dev/null
		[ $s = big ] && ./seed maildir --dir "$dir/dv-$s/mail/alice/Maildir" --count "$((BIG - N))" \
			--size 2048 --seed 2 --first "$N" >/dev/null
		chown -R vmail:vmail "$dir/dv-$s/mail"
		doveadm -c "$dir/dv-$s/dovecot.conf" index -u alice INBOX 2>/dev/null || true
		dovecot_stop "$dir/dv-$s"
	done
	echo "prepared $dir (load $(load))"
	;;
reads)
	size=$1 build=$2 client=$3
	bin=${4:-$dir/cspool}
	[ "$build" = plain ] && bin=${4:-$dir/cspool-plain}
	bin=$(realpath "$bin")
	case $client in imaplib) pair=pair ;; socket) pair=sockpair ;; *) echo "CLIENT is imaplib or socket" >&2; exit 2 ;; esac
	count=$N
	[ "$size" = big ] && count=$BIG
	db=${DB:-$dir/$build-$size.db}
	out=$(mktemp)
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	for item in "${READS[@]}"; do
		daemon "$bin" "$db" $((P + 3)) "$dir/reads.log"
		dovecot_start "$dir/dv-$size" $((P + 4)) $((P + 285)) alice pw
		$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$count" 600 >/dev/null
		$IB waitcount 127.0.0.1 $((P + 4)) alice pw "$count" 600 >/dev/null
		idle "$dpid" 300
		[ "${DROP:-0}" = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
		$IB $pair 127.0.0.1 $((P + 3)) $((P + 4)) alice pw "$RUNS" "$item" >"$out.pair"
		echo "{\"server\": \"cspool\", \"r\": $(sed -n 1p "$out.pair")}" >>"$out"
		echo "{\"server\": \"dovecot\", \"r\": $(sed -n 2p "$out.pair")}" >>"$out"
		stop "$dpid"
		dovecot_stop "$dir/dv-$size"
	done
	python3 - "$out" "$count" "$RUNS" "$(load)" "$client" "$build" "$bin" "$db" "$([ "${DROP:-0}" = 1 ] && echo " and a drop of the file cache")" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["r"]["items"], {})[r["server"]] = r["r"]
print(f"FETCH 1:* at {sys.argv[2]} messages, {sys.argv[6]} database {sys.argv[8]}, {sys.argv[7]}, client {sys.argv[5]}: cold = first after a restart of both{sys.argv[9]}, warm = best of {sys.argv[3]} after it on one connection (load average {sys.argv[4]})")
print(f"{'items':<18} {'cspool cold':>11} {'Dovecot cold':>12} {'ratio':>6} {'cspool warm':>11} {'Dovecot warm':>12} {'ratio':>6} {'median ratio':>12} {'answered':>17}")
for items, d in by.items():
    c, v = d["cspool"], d["dovecot"]
    print(f"{items:<18} {c['cold_seconds']:>11.3f} {v['cold_seconds']:>12.3f} {c['cold_seconds']/v['cold_seconds']:>6.2f} "
          f"{c['warm_seconds']:>11.3f} {v['warm_seconds']:>12.3f} {c['warm_seconds']/v['warm_seconds']:>6.2f} "
          f"{c['warm_median_seconds']/v['warm_median_seconds']:>12.2f} {c['answered']:>8}/{v['answered']:<8}")
PY
	rm -f "$out" "$out.pair"
	;;
place)
	size=$1 build=$2 bin=$(realpath "$3")
	count=$N
	[ "$size" = big ] && count=$BIG
	placed=$dir/$build-$size-placed.db
	rm -f "$placed" "$placed-wal" "$placed-shm"
	cp "$dir/$build-$size.db" "$placed"
	[ -e "$dir/$build-$size.db-wal" ] && cp "$dir/$build-$size.db-wal" "$placed-wal"
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	: >"$placed.log"
	t0=$SECONDS
	daemon "$bin" "$placed" $((P + 3)) "$placed.log"
	until grep -q "placed the messages' forms together on disk" "$placed.log"; do
		[ $((SECONDS - t0)) -lt 1800 ] || { echo "not placed after 30 minutes" >&2; exit 1; }
		sleep 1
	done
	grep "placed the messages' forms" "$placed.log"
	stop "$dpid"
	echo "$(basename "$placed"): placed in $((SECONDS - t0)) s of the daemon's start (load $(load))"
	;;
atrest)
	size=$1 enc=$(realpath "$2") plain=$(realpath "$3")
	count=$N
	[ "$size" = big ] && count=$BIG
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	daemon "$enc" "$dir/enc-$size.db" $((P + 3)) "$dir/atrest.log"
	e=$dpid
	daemon "$plain" "$dir/plain-$size.db" $((P + 6)) "$dir/atrest.log"
	p=$dpid
	$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$count" 600 >/dev/null
	$IB waitcount 127.0.0.1 $((P + 6)) alice pw "$count" 600 >/dev/null
	idle "$e" 300
	idle "$p" 300
	r=$($IB pair 127.0.0.1 $((P + 3)) $((P + 6)) alice pw "$RUNS" "(ENVELOPE FLAGS)")
	python3 - "$r" "$count" "$RUNS" "$(load)" "$enc" "$plain" <<'PY'
import json, sys
e, p = [json.loads(l) for l in sys.argv[1].splitlines()]
print(f"FETCH 1:* (ENVELOPE FLAGS) of {sys.argv[2]}, encrypted ({sys.argv[5]}) against plaintext ({sys.argv[6]}), imaplib, in turns (load average {sys.argv[4]}):")
print(f"  cold {e['cold_seconds']:.3f} s against {p['cold_seconds']:.3f} s ({e['cold_seconds']/p['cold_seconds']:.2f}x); "
      f"warm best of {sys.argv[3]} {e['warm_seconds']:.3f} s against {p['warm_seconds']:.3f} s ({e['warm_seconds']/p['warm_seconds']:.2f}x); "
      f"medians {e['warm_median_seconds']:.3f} s against {p['warm_median_seconds']:.3f} s ({e['warm_median_seconds']/p['warm_median_seconds']:.2f}x)")
PY
	;;
cpu)
	size=$1 build=$2 items=$3 count=$4
	shift 4
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	for bin in "$@"; do
		bin=$(realpath "$bin")
		daemon "$bin" "$dir/$build-$size.db" $((P + 3)) "$dir/cpu.log"
		$IB waitcount 127.0.0.1 $((P + 3)) alice pw 1 600 >/dev/null
		idle "$dpid" 300
		python3 - "$PWD/bench/lib" $((P + 3)) "$items" "$count" "$dpid" "$bin" "$build" "$size" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[1])
import bigbox
port, items, count, pid, bin, build, size = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
c = bigbox.Conn("127.0.0.1", port)
c.cmd("LOGIN alice pw")
c.cmd("EXAMINE INBOX")
c.cmd("FETCH 1:* " + items)
c0, ts = cpu(), []
for _ in range(count):
    ts.append(c.cmd("FETCH 1:* " + items)[0])
c1 = cpu()
c.cmd("LOGOUT")
ts.sort()
load = " ".join(open("/proc/loadavg").read().split()[:3])
print(f"{bin} on the {build} database of {size}: FETCH 1:* {items} x{count}: daemon CPU {1000 * (c1 - c0) / count:.1f} ms a FETCH, "
      f"wall best {ts[0]:.4f} s, median {ts[len(ts) // 2]:.4f} s (load average {load})")
PY
		stop "$dpid"
	done
	;;
turns)
	size=$1 build=$2 a=$(realpath "$3") b=$(realpath "$4")
	count=$N
	[ "$size" = big ] && count=$BIG
	db=$dir/$build-$size.db copy=$dir/$build-$size-turns.db
	rm -f "$copy" "$copy-wal" "$copy-shm"
	cp "$db" "$copy"
	[ -e "$db-wal" ] && cp "$db-wal" "$copy-wal"
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	daemon "$a" "$db" $((P + 3)) "$dir/turns.log"
	apid=$dpid
	daemon "$b" "$copy" $((P + 6)) "$dir/turns.log"
	bpid=$dpid
	dovecot_start "$dir/dv-$size" $((P + 4)) $((P + 285)) alice pw
	for port in $((P + 3)) $((P + 6)) $((P + 4)); do $IB waitcount 127.0.0.1 $port alice pw "$count" 600 >/dev/null; done
	idle "$apid" 300
	idle "$bpid" 300
	echo "A $a on $(basename "$db"), B $b on $(basename "$copy"), Dovecot; $count messages, $RUNS rounds (load $(load))"
	for item in "${READS[@]}"; do
		echo "imaplib: $($IB trio 127.0.0.1 $((P + 3)) $((P + 6)) $((P + 4)) alice pw "$RUNS" "$item") (load $(load))"
		for port in $((P + 3)) $((P + 6)) $((P + 4)); do
			echo "arrival at port $port: $($IB arrival 127.0.0.1 $port alice pw "$RUNS" "$item")"
		done
	done
	echo "ports: A $((P + 3)), B $((P + 6)), Dovecot $((P + 4)) (load $(load))"
	stop "$apid"
	stop "$bpid"
	rm -f "$copy" "$copy-wal" "$copy-shm"
	;;
bytes)
	size=$1 build=$2
	bin=${3:-$dir/cspool}
	[ "$build" = plain ] && bin=${3:-$dir/cspool-plain}
	count=$N
	[ "$size" = big ] && count=$BIG
	server "$([ "$size" = big ] && echo spool || echo spool-n)"
	daemon "$(realpath "$bin")" "$dir/$build-$size.db" $((P + 3)) "$dir/bytes.log"
	dovecot_start "$dir/dv-$size" $((P + 4)) $((P + 285)) alice pw
	$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$count" 600 >/dev/null
	$IB waitcount 127.0.0.1 $((P + 4)) alice pw "$count" 600 >/dev/null
	idle "$dpid" 300
	mkdir -p "$dir/bytes-$size"
	python3 - "$dir/bytes-$size" $((P + 3)) $((P + 4)) "${READS[@]}" <<'PY'
import re, socket, sys
out, ports, reads = sys.argv[1], {"cspool": int(sys.argv[2]), "dovecot": int(sys.argv[3])}, sys.argv[4:]
got = {}
for server, port in ports.items():
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    n = 0
    def cmd(text):
        global n
        n += 1
        tag = b"t%d " % n
        s.sendall(tag + text.encode() + b"\r\n")
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line.startswith(tag):
                return b"".join(lines)
    f.readline()
    cmd("LOGIN alice pw")
    cmd("EXAMINE INBOX")
    for items in reads:
        cmd("FETCH 1:* " + items)
        got[server, items] = cmd("FETCH 1:* " + items)
        open(f"{out}/{server}-{items.strip('()').replace(' ', '_')}", "wb").write(got[server, items])
for items in reads:
    a, b = got["cspool", items].split(b"\r\n"), got["dovecot", items].split(b"\r\n")
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    lits = [len(re.findall(rb"\{[0-9]+\}\r\n", got[s, items])) for s in ("cspool", "dovecot")]
    print(f"FETCH 1:* {items}: cspool {len(got['cspool', items])} bytes in {len(a) - 1} lines, Dovecot {len(got['dovecot', items])} "
          f"bytes in {len(b) - 1} lines; literals {lits[0]} and {lits[1]}; {len(diff)} lines differ" + (f", the first: {diff[0][0][:70]!r} against {diff[0][1][:70]!r}" if diff else ""))
PY
	;;
*)
	echo "usage: bench/fetchreads.sh prepare|reads|place|atrest|cpu|turns|bytes DIR ..." >&2
	exit 2
	;;
esac
