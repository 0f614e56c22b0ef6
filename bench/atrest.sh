#!/usr/bin/env bash
# The device's at-rest encryption and search index against the plaintext
# daemon they replaced, and SEARCH against Dovecot, in one run:
#  1. first sync of N messages of ~10 KB (until IMAP STATUS shows them all),
#     FETCH 1:* (ENVELOPE FLAGS) of the N, with the new daemon (encrypted
#     database, search index) and with OLD, the daemon built from the commit
#     before the encryption (plaintext, modernc SQLite, no index);
#  2. with BIG messages (90% of them 2 KB): the daemons' RSS idle and at
#     their peak (sync and a full FETCH), the database and index sizes;
#  3. SEARCH BODY and TEXT over the BIG messages, for a word (in 1 message
#     of 1,000) and a substring of it, and for a word in every message: new
#     daemon (index), OLD (scan), and Dovecot (default configuration, no
#     full-text plugin) on the same messages; the median of 3 runs each.
#
#   N=10000 BIG=100000 bash bench/atrest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
N=${N:-10000}
BIG=${BIG:-100000}
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
$C server --spool-dir spool --users users --spool-key spool.sec --port 24999 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/24999) 2>/dev/null && break; sleep 0.1; done

rss() { awk '/VmHWM/ {print $2/1024}' "/proc/$1/status"; }
cur() { awk '/VmRSS/ {print $2/1024}' "/proc/$1/status"; }
mb() { du -m "$1" | cut -f1; }

# daemon NAME BINARY DB PORT COUNT: start a daemon, wait until INBOX holds
# COUNT messages; sets dpid and dsync (seconds).
daemon() {
	local t0 t1
	t0=$(date +%s.%N)
	$2 imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server http://127.0.0.1:24999 --db "$3" --password pw --port "$4" --status-addr '' \
		2>"$1.log" >/dev/null &
	dpid=$!
	pids+=($dpid)
	$IB waitcount 127.0.0.1 "$4" alice pw "$5" 1800 >/dev/null
	t1=$(date +%s.%N)
	dsync=$(python3 -c "print('%.2f' % ($t1 - $t0))")
}

# 1. First sync and FETCH of N messages, new then old, each on its own
# database.
daemon new "$C" new.db 24143 "$N"
new_sync=$dsync new_rss=$(rss $dpid)
# FETCH once the background indexing is done, as on a device in use.
t0=$(date +%s)
until grep -q "search index complete" new.log; do sleep 1; done
echo "new daemon: search index of $N messages complete $(( $(date +%s) - t0 )) s after the sync"
new_fetch=$($IB fetch 127.0.0.1 24143 alice pw quarterly)
kill $dpid; wait $dpid 2>/dev/null || true
daemon old "$work/cspool-old" old.db 24143 "$N"
old_sync=$dsync old_rss=$(rss $dpid)
old_fetch=$($IB fetch 127.0.0.1 24143 alice pw quarterly)
kill $dpid; wait $dpid 2>/dev/null || true
python3 - "$N" "$new_sync" "$old_sync" "$new_rss" "$old_rss" "$new_fetch" "$old_fetch" <<'PY'
import json, sys
n, ns, os_, nr, or_, nf, of = sys.argv[1:]
nf, of = json.loads(nf), json.loads(of)
print(f"first sync of {n} messages: encrypted {ns} s (peak RSS {float(nr):.0f} MB), plaintext {os_} s ({float(or_):.0f} MB): {float(ns)/float(os_):.2f}x the time")
print(f"FETCH 1:* (ENVELOPE FLAGS) of {n}: encrypted {nf['fetch_seconds']} s, plaintext {of['fetch_seconds']} s: {nf['fetch_seconds']/max(of['fetch_seconds'],1e-3):.2f}x")
PY

[ "$BIG" -gt 0 ] || exit 0

# 2. BIG messages: RSS and sizes.
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$((BIG - N))" --size 2048 --seed 2 >/dev/null
for which in new old; do
	bin=$C
	[ $which = old ] && bin=$work/cspool-old
	daemon "big-$which" "$bin" "big-$which.db" 24145 "$BIG"
	if [ $which = new ]; then
		# The index is built in the background: search once it is complete.
		t0=$(date +%s)
		until grep -q "search index complete" "big-$which.log"; do sleep 1; done
		echo "new daemon: search index complete $(( $(date +%s) - t0 )) s after the sync"
	fi
	sleep 2
	idle=$(cur $dpid)
	$IB fetch 127.0.0.1 24145 alice pw quarterly >"big-$which-fetch.json"
	peak=$(rss $dpid)
	printf '%s daemon with %d messages: sync %s s, RSS idle %.0f MB, peak (sync and full FETCH) %.0f MB, database %s MB\n' \
		"$which" "$BIG" "$dsync" "$idle" "$peak" "$(mb big-$which.db)"
	# 3. SEARCH against this daemon (median of 5).
	for q in "BODY xylophone" "BODY ylophon" "TEXT xylophone" "TEXT ylophon" "BODY quarterly"; do
		printf '%s SEARCH %s: %s\n' "$which" "$q" "$($IB search 127.0.0.1 24145 alice pw 3 $q)"
	done
	kill $dpid; wait $dpid 2>/dev/null || true
done
echo "search index: $($C reindex --db big-new.db --user-key user.sec 2>/dev/null | tail -1)"

# Dovecot on the same BIG messages (Maildir, default settings, no FTS).
dovecot_start "$work/dovecot" 24144 24425 alice pw
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$N" >/dev/null
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$((BIG - N))" --size 2048 --seed 2 --first "$N" >/dev/null
chown -R vmail:vmail "$work/dovecot/mail"
doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true
for q in "BODY xylophone" "BODY ylophon" "TEXT xylophone" "TEXT ylophon" "BODY quarterly"; do
	printf 'dovecot SEARCH %s: %s\n' "$q" "$($IB search 127.0.0.1 24144 alice pw 3 $q)"
done
