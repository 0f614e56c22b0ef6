#!/usr/bin/env bash
# One user's mailbox of M messages (default 1,000,000) of about SIZE bytes
# (2 KB), built from scratch, cspool against Dovecot on the same messages:
#  1. the spool's log: `seed spool` seals the deliveries on every core, in
#     batches of 5,000 appended while the next batch is sealed (the spool
#     server's store written directly, as a delivery writes it);
#  2. the device: `cspool imap-server` on a new database, its real first
#     sync from the spool server until IMAP STATUS shows all M, then until
#     its search index is complete; its RSS idle (right after, and 35 s
#     later once its unused database connections closed) and at its peak
#     (VmHWM) over the sync, the indexing and the queries of 3;
#  3. the queries, one connection with a plain socket client that counts
#     what it reads (bench/lib/bigbox.py): SELECT INBOX, UID FETCH 1:*
#     (FLAGS) and SEARCH HEADER Message-ID (one message in the middle), the
#     first of each after the server started and the best of RUNS after
#     it, and once FETCH 1:* (ENVELOPE FLAGS);
#  4. Dovecot (DOVECOT=1): the same messages written as files into a
#     Maildir (`seed maildir`, on every core), indexed by `doveadm index`
#     (timed), then the queries of 3 against it.
# Every step prints its time and the load average.
#
# SEED_DEVICE=1 builds the device without its sync: `seed spool --device`
# writes the device's database in the same run as the spool's log, from the
# same commands it seals, through mailstore's own apply (ApplyChained, each
# batch with the log's chain hashes, as the sync loop applies what it
# opened), indexes each batch's bodies before the next applies and merges
# the index at the end as `cspool reindex` does. Step 2 then starts the
# daemon on that database: it finds itself at the log's head, syncs
# nothing, and its index is complete. What it serves is what a daemon that
# synced serves (TestSeededDeviceServesAsSynced in bench/seed). Neither
# writes a checkpoint: a log of deliveries alone is no reason for one
# (internal/syncer, maybeCheckpoint; before 2026-12-02 a daemon that synced
# wrote one at about 1,000 entries, and the seeded one one of the whole
# mailbox when it started, which step 2 waited for). The real
# first sync and its index stay the default, measured on their own. At
# 100,000 on a quiet machine the seeded build took 73 s against 105.5 s for
# the log, the sync and the index; at a million 14.3 minutes at load 0.5 to
# 2.1, 28.1 at load 2 to 14 (docs/BENCHMARKS.md, "The setup from scratch
# with a seeded device").
#
# The work folder is WORK (default /tmp) and is deleted at the end (KEEP=1
# keeps it); for 1,000,000 messages about 4 GB for the spool's log, as much
# again and more for the device (its WAL grew to 5.8 GB in a first sync;
# the seeded database is 9.2 GB with its index) and
# 4 GB for Dovecot. PROFILE=FILE writes the heap profile of
# the daemon that synced (after its queries) to FILE. The ports are PORTS (default
# 24140) + 3, 4, 6 and 285, and PORTS + 859 (the spool server).
#
#   M=1000000 bash bench/million.sh
#   M=100000 RUNS=3 bash bench/million.sh
#   M=1000000 SEED_DEVICE=1 bash bench/million.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
M=${M:-1000000}
SIZE=${SIZE:-2048}
RUNS=${RUNS:-3}
P=${PORTS:-24140}
. bench/lib/ports.sh
free_ports $((P + 3)) $((P + 4)) $((P + 6)) $((P + 285)) $((P + 859))
DOVECOT=${DOVECOT:-1}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-}
SEED_DEVICE=${SEED_DEVICE:-0}
work=$(mktemp -d "${WORK:-/tmp}/cspool-bench-million.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$work/dovecot"
	[ "$KEEP" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
[ -n "$PROFILE" ] && PROFILE=$(realpath "$PROFILE")
C=$work/cspool
BB="python3 $PWD/bench/lib/bigbox.py"
IB="python3 $PWD/bench/lib/imapbench.py"
cd "$work"
load() { printf '(load %s)' "$(cut -d' ' -f1-3 /proc/loadavg)"; }
hwm() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
cur() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
# The Message-ID of the message in the middle (bench/seed's form).
msgid="bench-1-$((M / 2))@example.org"

$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users

# 1. The spool's log (and with SEED_DEVICE=1 the device's database).
t0=$SECONDS
if [ "$SEED_DEVICE" = 1 ]; then
	./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec \
		--count "$M" --size "$SIZE" --batch 5000 --device device.db --user-secret user.sec | sed -u 's/^/  /'
	echo "spool log and device of $M messages of $SIZE bytes: $((SECONDS - t0)) s, log $(du -sm spool | cut -f1) MB, device $(du -cm device.db* | tail -1 | cut -f1) MB $(load)"
else
	./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec \
		--count "$M" --size "$SIZE" --batch 5000 | sed -u 's/^/  /'
	echo "spool log of $M messages of $SIZE bytes: $((SECONDS - t0)) s, $(du -sm spool | cut -f1) MB $(load)"
fi
$C server --spool-dir spool --users users --spool-key spool.sec --port $((P + 859)) 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$((P + 859))) 2>/dev/null && break; sleep 0.1; done

# 2. The device's first sync and index.
t0=$(date +%s.%N)
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:$((P + 859)) --db device.db --password pw --port $((P + 3)) \
	--status-addr '' --pprof-addr 127.0.0.1:$((P + 6)) 2>device.log >/dev/null &
dpid=$!
pids+=($dpid)
$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$M" 7200 >/dev/null
t1=$(date +%s.%N)
if [ "$SEED_DEVICE" = 1 ]; then
	echo "cspool started on the seeded database, STATUS shows $M after $(python3 -c "print('%.1f' % ($t1 - $t0))") s, peak RSS $(hwm $dpid) MB $(load)"
	# At the log's head from the start: it applied nothing.
	$C status --db device.db --json | python3 -c 'import json, sys; s = json.load(sys.stdin)["sync"]; print("  sync: state %s, position %d, head %d, applied %d" % (s["state"], s["position"], s["head"], s["applied"]))'
else
	echo "cspool first sync of $M: $(python3 -c "print('%.1f' % ($t1 - $t0))") s, peak RSS $(hwm $dpid) MB $(load)"
fi
t0=$SECONDS
until [ "$($C status --db device.db --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["search"]["unindexed"])')" = 0 ]; do
	[ $((SECONDS - t0)) -lt 7200 ] || { echo "no complete index after two hours" >&2; exit 1; }
	sleep 2
done
sleep 2
echo "cspool search index complete $((SECONDS - t0)) s after the sync (or the start); RSS idle $(cur $dpid) MB, peak $(hwm $dpid) MB, database $(du -sm device.db | cut -f1) MB $(load)"
# The daemon closes a database connection unused for 30 s, which gives its
# SQLite memory back (docs/MAILSTORE.md): the RSS once that has happened.
sleep 35
echo "cspool idle 35 s later: RSS $(cur $dpid) MB $(load)"

# 3. The queries against the daemon that synced, then against it restarted
# (its first queries cold).
cs=$($BB 127.0.0.1 $((P + 3)) alice pw 1 "$msgid")
echo "cspool queries on the daemon that synced: $cs"
echo "cspool daemon that synced: RSS after the queries $(cur $dpid) MB, peak over the sync, indexing and queries $(hwm $dpid) MB $(load)"
[ -n "$PROFILE" ] && curl -sf -o "$PROFILE" "http://127.0.0.1:$((P + 6))/debug/pprof/heap"
kill $dpid
wait $dpid 2>/dev/null || true
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:$((P + 859)) --db device.db --password pw --port $((P + 3)) \
	--status-addr '' --pprof-addr 127.0.0.1:$((P + 6)) 2>>device.log >/dev/null &
dpid=$!
pids+=($dpid)
$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$M" 600 >/dev/null
echo "cspool restarted: RSS $(cur $dpid) MB $(load)"
cs=$($BB 127.0.0.1 $((P + 3)) alice pw "$RUNS" "$msgid")
echo "cspool queries: $cs"
echo "cspool restarted, after the queries: RSS $(cur $dpid) MB, peak since the restart $(hwm $dpid) MB $(load)"
kill $dpid
wait $dpid 2>/dev/null || true

# 4. Dovecot on the same messages.
dv='{}'
if [ "$DOVECOT" = 1 ]; then
	dovecot_start "$work/dovecot" $((P + 4)) $((P + 285)) alice pw
	t0=$SECONDS
	./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$M" --size "$SIZE" >/dev/null
	chown -R vmail:vmail "$work/dovecot/mail"
	echo "Dovecot Maildir of $M files: $((SECONDS - t0)) s $(load)"
	t0=$SECONDS
	doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX
	echo "doveadm index: $((SECONDS - t0)) s, $(du -sm "$work/dovecot/mail" | cut -f1) MB $(load)"
	dovecot_stop "$work/dovecot"
	dovecot_start "$work/dovecot" $((P + 4)) $((P + 285)) alice pw
	dv=$($BB 127.0.0.1 $((P + 4)) alice pw "$RUNS" "$msgid")
	echo "Dovecot queries: $dv"
fi

python3 - "$M" "$cs" "$dv" <<'PY'
import json, sys
m, cs, dv = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"{int(m):,} messages: first = after a restart, best = of the runs after it on one connection; seconds")
print(f"{'query':<22} {'cspool first':>12} {'best':>8} {'Dovecot first':>13} {'best':>8} {'ratio best':>10} {'answered':>17}")
best = lambda r: r.get("best", r["first"])
for q in ("select", "uid_fetch_flags", "search_msgid", "fetch_envelope_flags"):
    c, d = cs.get(q), dv.get(q)
    if c is None:
        continue
    row = f"{q:<22} {c['first']:>12.3f} {best(c):>8.3f} "
    if d:
        row += f"{d['first']:>13.3f} {best(d):>8.3f} {best(c) / max(best(d), 1e-4):>10.2f} {c['lines']:>8}/{d['lines']:<8}"
    else:
        row += f"{'-':>13} {'-':>8} {'-':>10} {c['lines']:>8}"
    print(row)
for name, r in (("cspool", cs), ("Dovecot", dv)):
    if "failed" in r:
        print(f"{name} failed at {r['failed']}")
PY
