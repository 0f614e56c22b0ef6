#!/usr/bin/env bash
# The device's at-rest encryption and search index against plaintext and
# the scan, and SEARCH against Dovecot, in one run. Three builds of the
# daemon, each on a database of its own, synced from one spool server:
#   new:   this tree (encrypted database, search index);
#   plain: this tree built with -tags cspool_bench_plaintext (the same
#          driver, schema and index, the databases in plaintext): the
#          cost of encryption is new against plain;
#   old:   OLD, the commit before the encryption (plaintext, modernc
#          SQLite, no index: SEARCH scans every message).
#  1. ROUNDS rounds (0: none) of: first sync of N messages of ~10 KB (from start
#     until IMAP STATUS shows them all), then FETCH 1:* (ENVELOPE FLAGS)
#     of the N (median of 3, once the index is complete), for each build
#     in turn; the medians over the rounds;
#  2. with BIG messages (90% of them 2 KB), all three daemons at once: the
#     time to index them, each daemon's RSS idle and at its peak (sync,
#     indexing, a full FETCH), the database and index sizes;
#  3. SEARCH over the BIG messages for a rare word (in 1 message of
#     1,000), a substring of it, a word in every message, a Message-ID
#     (HEADER) and a sender (FROM): new, plain, old and Dovecot (default
#     configuration, no full-text plugin, on the same messages), one query
#     at a time for all four; the median of RUNS (3) each.
# Every figure line ends with the load average when it was taken.
#
# The ports are PORTS (default 24140) and the next nine, and PORTS + 859
# (the spool server): another benchmark may hold the defaults.
#
#   N=10000 BIG=100000 bash bench/atrest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
N=${N:-10000}
BIG=${BIG:-100000}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-3}
P=${PORTS:-24140}
. bench/lib/ports.sh
free_ports $(seq "$P" $((P + 9))) $((P + 859))
OLD=${OLD:-$(git log --diff-filter=A --format=%H -- internal/devicedb/devicedb.go | tail -1)^}
work=$(mktemp -d /tmp/cspool-bench-atrest.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$work/dovecot"
	git worktree remove --force "$work/old-src" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/cspool" ./cmd/cspool
go build -tags cspool_bench_plaintext -o "$work/cspool-plain" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
git worktree add --detach "$work/old-src" "$OLD" >/dev/null 2>&1
(cd "$work/old-src" && go build -o "$work/cspool-old" ./cmd/cspool)
C=$work/cspool
IB="python3 $PWD/bench/lib/imapbench.py"
cd "$work"
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$N" >/dev/null
$C server --spool-dir spool --users users --spool-key spool.sec --port $((P + 859)) 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$((P + 859))) 2>/dev/null && break; sleep 0.1; done

load() { printf '(load %s)' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
hwm() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
cur() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
mb() { du -m "$1" | cut -f1; }
bin() { case $1 in new) echo "$C" ;; plain) echo "$work/cspool-plain" ;; old) echo "$work/cspool-old" ;; esac; }

# daemon NAME BUILD DB PORT COUNT: start a daemon, wait until INBOX holds
# COUNT messages; sets dpid and dsync (seconds).
daemon() {
	local t0 t1
	t0=$(date +%s.%N)
	$(bin "$2") imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server http://127.0.0.1:$((P + 859)) --db "$3" --password pw --port "$4" --status-addr '' \
		2>"$1.log" >/dev/null &
	dpid=$!
	pids+=($dpid)
	$IB waitcount 127.0.0.1 "$4" alice pw "$5" 3600 >/dev/null
	t1=$(date +%s.%N)
	dsync=$(python3 -c "print('%.2f' % ($t1 - $t0))")
}

# indexed DB BUILD: wait (an hour at most) until the daemon on DB says
# its search index is complete (cspool status); prints the seconds.
indexed() {
	local t0=$SECONDS
	[ "$2" = old ] && { echo 0; return; }
	until [ "$($C status --db "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["search"]["unindexed"])')" = 0 ]; do
		[ $((SECONDS - t0)) -lt 3600 ] || { echo "no complete index after an hour" >&2; exit 1; }
		sleep 1
	done
	echo $((SECONDS - t0))
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# 1. First sync and FETCH of N messages, each build on a new database,
# ROUNDS times, the order turning each round (the first daemon of a run
# reads the spool from a cold cache).
builds=(new plain old)
for r in $(seq 1 "$ROUNDS"); do
	for i in 0 1 2; do
		b=${builds[$(((i + r - 1) % 3))]}
		daemon "$b-$r" "$b" "$b-$r.db" $((P + 3)) "$N"
		peak=$(hwm "$dpid") l=$(load)
		ix=$(indexed "$b-$r.db" "$b")
		f=$($IB fetch 127.0.0.1 $((P + 3)) alice pw xylophone 3)
		python3 - "$b" "$r" "$N" "$dsync" "$peak" "$ix" "$f" "$l" "$(load)" <<'PY' | tee -a rounds.txt
import json, sys
b, r, n, sync, peak, ix, f, l1, l2 = sys.argv[1:]
f = json.loads(f)
print(f"round {r} {b}: first sync of {n} messages {sync} s (peak RSS {peak} MB) {l1}; index complete {ix} s later; "
      f"FETCH 1:* (ENVELOPE FLAGS) {f['fetch_seconds']} s {l2}")
PY
		stop "$dpid"
		rm -rf "$b-$r".db*
	done
done
[ "$ROUNDS" -gt 0 ] && python3 - <<'PY'
import re, statistics
sync, fetch = {}, {}
for line in open("rounds.txt"):
    m = re.match(r"round \d+ (\w+): first sync of \d+ messages ([\d.]+) s .* FETCH 1:\* \(ENVELOPE FLAGS\) ([\d.]+) s", line)
    if m:
        sync.setdefault(m[1], []).append(float(m[2]))
        fetch.setdefault(m[1], []).append(float(m[3]))
med = lambda d, b: statistics.median(d[b])
for what, d in (("first sync", sync), ("FETCH", fetch)):
    print(f"{what}, medians: new {med(d, 'new'):.3f} s, plain {med(d, 'plain'):.3f} s, old {med(d, 'old'):.3f} s; "
          f"new/plain {med(d, 'new') / med(d, 'plain'):.2f}x, new/old {med(d, 'new') / med(d, 'old'):.2f}x")
PY

[ "$BIG" -gt 0 ] || exit 0

# 2. BIG messages: every build syncs them, indexes them, and stays up.
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$((BIG - N))" --size 2048 --seed 2 >/dev/null
declare -A port dp
port=([new]=$((P + 5)) [plain]=$((P + 6)) [old]=$((P + 7)))
for b in new plain old; do
	daemon "big-$b" "$b" "big-$b.db" "${port[$b]}" "$BIG"
	dp[$b]=$dpid
	l=$(load)
	ix=$(indexed "big-$b.db" "$b")
	sleep 2
	idle=$(cur "$dpid")
	$IB fetch 127.0.0.1 "${port[$b]}" alice pw xylophone 1 >"big-$b-fetch.json"
	printf '%s daemon with %d messages: sync %s s %s, index complete %s s later, RSS idle %s MB, peak (sync, indexing and a full FETCH) %s MB, database %s MB %s\n' \
		"$b" "$BIG" "$dsync" "$l" "$ix" "$idle" "$(hwm "$dpid")" "$(mb "big-$b.db")" "$(load)"
done

# Dovecot on the same BIG messages (Maildir, default settings, no FTS).
dovecot_start "$work/dovecot" $((P + 4)) $((P + 285)) alice pw
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$N" >/dev/null
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$((BIG - N))" --size 2048 --seed 2 --first "$N" >/dev/null
chown -R vmail:vmail "$work/dovecot/mail"
doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true
port[dovecot]=$((P + 4))

# 3. SEARCH, one query at a time on all four.
queries=("BODY xylophone" "BODY ylophon" "TEXT xylophone" "TEXT ylophon" "BODY quarterly"
	"HEADER Message-ID bench-2-4242@" "FROM sender42@")
for q in "${queries[@]}"; do
	for b in new plain old dovecot; do
		# shellcheck disable=SC2086 # the query is split into its words
		printf '%s SEARCH %s: %s %s\n' "$b" "$q" "$($IB search 127.0.0.1 "${port[$b]}" alice pw "$RUNS" $q)" "$(load)"
	done
done
for b in new plain old; do
	printf '%s daemon: peak RSS over the whole run %s MB\n' "$b" "$(hwm "${dp[$b]}")"
	stop "${dp[$b]}"
done
t0=$SECONDS
r=$($C reindex --db big-new.db --user-key user.sec 2>/dev/null | tail -1)
echo "cspool reindex of the new daemon's database: $r, in $((SECONDS - t0)) s $(load)"
