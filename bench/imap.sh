#!/usr/bin/env bash
# Device figures against Dovecot and mbsync, one run on one machine:
#  1. first sync of a new device: N messages of ~10 KB already in the spool,
#     from `cspool imap-server` start until IMAP STATUS shows all N; against
#     mbsync pulling the same N messages from Dovecot into a Maildir;
#  2. FETCH 1:* (ENVELOPE FLAGS) and SEARCH BODY over the N messages, cspool
#     against Dovecot serving the same mailbox (same Python imaplib client);
#  2'. every read figure both ways, for cspool and Dovecot: FETCH 1:* of
#     (ENVELOPE FLAGS), ENVELOPE, FLAGS, BODYSTRUCTURE, RFC822.SIZE and UID,
#     each the first FETCH after both servers restart (cold: a new process,
#     its files in the page cache as before) and the best of RUNS more on
#     the same connection (warm), the two servers taking turns FETCH by
#     FETCH (imapbench.py pair), so that a burst of load from other work
#     on the machine falls on both; cspool's reads start once the daemon is
#     idle (a daemon that synced just now builds its search index first);
#     CLIENT=socket times the reads of 2' with bench/lib/bigbox.py's plain
#     socket client instead of imaplib (whose parsing of 10,000 responses
#     is most of a warm FETCH's time for both servers);
#  3. the daemon's RSS with BIG messages (idle, and during a full FETCH),
#     and the reads of 2' at BIG messages, Dovecot holding the same ones.
#
# The ports are PORTS (default 24140) + 3, 4 and 5, LMTP_PORT (Dovecot's
# LMTP; default PORTS + 285) and SERVER_PORT (the spool server; default
# PORTS + 859): another benchmark may hold the defaults. Linux gives
# outgoing connections even ports of its local range first (32768 to 60999
# by default), which then cannot be listened on: odd ones for Dovecot's
# (PORTS odd, LMTP_PORT odd) miss other work's connections.
#
# The first sync's clock starts once the Python client that waits for
# STATUS has started (the interpreter and imaplib, 0.1 s on a quiet machine
# and seconds under load, are mbsync's own start only in mbsync's figure),
# and stops when STATUS first shows N; mbsync's is its process's whole run.
# The spool server has been up for over a second by then (below).
#
# CSPOOL=FILE runs that cspool binary instead of building ./cmd/cspool (an
# older build, from its own tree, measured by this same script).
# ENTRY_FORMAT=3 seals the spool's messages in entry format 3 (a chain of
# keys, as a server with --entry-format 3 delivers them; docs/FORMAT.md);
# the default is 2, what the server's default (--entry-format auto) seals
# for a user whose log was made before the store recorded reads (an
# installation upgraded) until every device of the user has read format 3
# for 30 days; a log made since gets format 3 from its first delivery.
# USED=1 measures the first sync against peers that have served before (a
# provider's spool server, and a Dovecot, that other devices and clients
# read from): the spool server serves one first sync to a scratch device,
# and Dovecot one mbsync to a scratch folder, before the measured ones,
# which are a new device's and a new folder's as without it. Without it the
# spool server and Dovecot have served nothing yet (Dovecot's index made
# by doveadm index), both freshly filled.
# CPUPROFILE=FILE writes the daemon's CPU profile over the first sync alone
# to FILE (--cpuprofile; the daemon is stopped once STATUS shows N, and
# started again on its database for the rest).
#
#   N=10000 BIG=100000 RUNS=5 bash bench/imap.sh
#   N=10000 SYNC_ONLY=1 bash bench/imap.sh    # 1 and 1' alone
set -euo pipefail
[ -n "${CSPOOL:-}" ] && CSPOOL=$(realpath "$CSPOOL")
[ -n "${CPUPROFILE:-}" ] && CPUPROFILE=$(realpath -m "$CPUPROFILE")
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
source bench/lib/proc.sh
N=${N:-10000}
BIG=${BIG:-100000}
RUNS=${RUNS:-5}
P=${PORTS:-24140}
SP=${SERVER_PORT:-$((P + 859))}
LP=${LMTP_PORT:-$((P + 285))}
. bench/lib/ports.sh
free_ports $((P + 3)) $((P + 4)) $((P + 5)) $LP $SP
SYNC_ONLY=${SYNC_ONLY:-0}
CLIENT=${CLIENT:-imaplib}
case $CLIENT in imaplib) PAIR=pair ;; socket) PAIR=sockpair ;; *) echo "CLIENT is imaplib or socket" >&2; exit 2 ;; esac
READS=("(ENVELOPE FLAGS)" "(ENVELOPE)" "(FLAGS)" "(BODYSTRUCTURE)" "(RFC822.SIZE)" "(UID)")
work=$(mktemp -d /tmp/cspool-bench-imap.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$work/dovecot"
	rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${CSPOOL:-}" ]; then cp "$CSPOOL" "$work/cspool"; else go build -o "$work/cspool" ./cmd/cspool; fi
go build -o "$work/seed" ./bench/seed
C=$work/cspool
IB="python3 $PWD/bench/lib/imapbench.py"
cd "$work"
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$N" --entry-format "${ENTRY_FORMAT:-2}" >/dev/null
$C server --spool-dir spool --users users --spool-key spool.sec --port $SP 2>server.log &
spid=$!
pids+=($spid)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$SP) 2>/dev/null && break; sleep 0.1; done
# The server refuses a request signed within the second it started
# ("request signed before this server started", 503; API.md §2, the
# restart rule) and the device asks again in the next second: a first sync started at once waited up to a
# second for that, half a second on average. A device meets a spool that
# has been up for a while, as mbsync meets Dovecot: start once it is past.
sleep 1.1

rss() { awk '/VmHWM/ {print $2/1024}' "/proc/$1/status"; }
cur() { awk '/VmRSS/ {print $2/1024}' "/proc/$1/status"; }

# cs_start DB PORT LOG [FLAG...]: start the daemon on DB (its pid in cs_pid).
cs_start() {
	local db=$1 port=$2 log=$3
	shift 3
	$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server http://127.0.0.1:$SP --db "$db" --password pw --port "$port" --status-addr '' "$@" 2>>"$log" >/dev/null &
	cs_pid=$!
	pids+=($cs_pid)
}

# reads LABEL COUNT DB PORT: the read figures of 2', cspool (on DB, PORT)
# against Dovecot, both restarted before each FETCH item, then the table.
reads() {
	local label=$1 count=$2 db=$3 port=$4 item out=$work/reads-$1.jsonl
	: >"$out"
	for item in "${READS[@]}"; do
		kill "$cs_pid"; wait "$cs_pid" 2>/dev/null || true
		cs_start "$db" "$port" "$work/reads-$label.log"
		dovecot_stop "$work/dovecot"
		dovecot_start "$work/dovecot" $((P + 4)) $LP alice pw
		$IB waitcount 127.0.0.1 "$port" alice pw "$count" 600 >/dev/null
		$IB waitcount 127.0.0.1 $((P + 4)) alice pw "$count" 600 >/dev/null
		idle "$cs_pid" 900
		$IB $PAIR 127.0.0.1 "$port" $((P + 4)) alice pw "$RUNS" "$item" >"$work/pair.jsonl"
		echo "{\"server\": \"cspool\", \"r\": $(sed -n 1p "$work/pair.jsonl")}" >>"$out"
		echo "{\"server\": \"dovecot\", \"r\": $(sed -n 2p "$work/pair.jsonl")}" >>"$out"
	done
	python3 - "$out" "$label" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$CLIENT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["r"]["items"], {})[r["server"]] = r["r"]
print(f"FETCH 1:* at {sys.argv[2]} messages, client {sys.argv[5]}: cold = first after a restart of both, warm = best of {sys.argv[3]} after it on one connection (load average {sys.argv[4]})")
print(f"{'items':<18} {'cspool cold':>11} {'Dovecot cold':>12} {'ratio':>6} {'cspool warm':>11} {'Dovecot warm':>12} {'ratio':>6} {'median ratio':>12} {'answered':>17}")
for items, d in by.items():
    c, v = d["cspool"], d["dovecot"]
    print(f"{items:<18} {c['cold_seconds']:>11.3f} {v['cold_seconds']:>12.3f} {c['cold_seconds']/v['cold_seconds']:>6.2f} "
          f"{c['warm_seconds']:>11.3f} {v['warm_seconds']:>12.3f} {c['warm_seconds']/v['warm_seconds']:>6.2f} "
          f"{c['warm_median_seconds']/v['warm_median_seconds']:>12.2f} {c['answered']:>8}/{v['answered']:<8}")
PY
}

USED=${USED:-0}
if [ "$USED" = 1 ]; then
	cs_start scratch.db $((P + 3)) scratch.log
	$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$N" 600 >/dev/null
	kill "$cs_pid"
	wait "$cs_pid" 2>/dev/null || true
	rm -rf scratch.db scratch.db-* scratch.db.*
fi

# 1. cspool first sync: the client that waits for STATUS starts first.
prof=()
[ -n "${CPUPROFILE:-}" ] && prof=(--cpuprofile "$work/first.prof")
server_cpu0=$(cpu $spid)
$IB waitcount 127.0.0.1 $((P + 3)) alice pw "$N" 600 "$work/ready" >wait.json &
wpid=$!
while [ ! -e "$work/ready" ]; do sleep 0.01; done
t0=$(date +%s.%N)
cs_start device.db $((P + 3)) device.log "${prof[@]}"
dpid=$cs_pid
wait $wpid
cs_sync=$(python3 -c "import json; print('%.2f' % (json.load(open('wait.json'))['reached_at'] - $t0))")
cs_rss=$(rss $dpid)
echo "first sync: daemon CPU $(cpu $dpid) s, spool server CPU $(python3 -c "print(round($(cpu $spid) - $server_cpu0, 2))") s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${CPUPROFILE:-}" ]; then
	kill "$dpid"; wait "$dpid" 2>/dev/null || true
	cp "$work/first.prof" "$CPUPROFILE"
	cs_start device.db $((P + 3)) device.log
	dpid=$cs_pid
fi
cs_fetch=$($IB fetch 127.0.0.1 $((P + 3)) alice pw quarterly)

# 1'. mbsync from Dovecot.
dovecot_start "$work/dovecot" $((P + 4)) $LP alice pw
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$N" >/dev/null
chown -R vmail:vmail "$work/dovecot/mail"
doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true
mkdir -p near
cat >mbsyncrc <<RC
IMAPAccount dove
Host 127.0.0.1
Port $((P + 4))
User alice
Pass pw
SSLType None
AuthMechs LOGIN

IMAPStore dove-far
Account dove

MaildirStore near
Path $work/near/
Inbox $work/near/INBOX
SubFolders Verbatim

Channel pull
Far :dove-far:
Near :near:
Patterns INBOX
Create Near
SyncState *
Sync Pull
RC
if [ "$USED" = 1 ]; then
	mkdir -p scratch-near
	sed "s#$work/near/#$work/scratch-near/#g" mbsyncrc >scratch.mbsyncrc
	mbsync -q -c scratch.mbsyncrc pull
	rm -rf scratch-near scratch.mbsyncrc
fi
/usr/bin/time -f '%e %M' -o mbsync.time mbsync -q -c mbsyncrc pull
read mb_sync mb_rss_kb <mbsync.time
mb_rss=$(python3 -c "print($mb_rss_kb/1024)")
mb_count=$(ls near/INBOX/cur near/INBOX/new | grep -c , || true)
dv_fetch=$($IB fetch 127.0.0.1 $((P + 4)) alice pw quarterly)

python3 - "$N" "$cs_sync" "$cs_rss" "$cs_fetch" "$mb_sync" "$mb_rss" "$mb_count" "$dv_fetch" <<'PY'
import json, sys
n, cs_sync, cs_rss, cs_fetch, mb_sync, mb_rss, mb_count, dv_fetch = sys.argv[1:]
cf, df = json.loads(cs_fetch), json.loads(dv_fetch)
print(f"first sync of {n} messages: cspool {cs_sync} s (peak RSS {float(cs_rss):.0f} MB), "
      f"mbsync from Dovecot {mb_sync} s (peak RSS {float(mb_rss):.0f} MB, {mb_count} files); "
      f"cspool/mbsync time ratio {float(cs_sync)/float(mb_sync):.2f}")
print(f"FETCH 1:* (ENVELOPE FLAGS): cspool {cf['fetch_seconds']} s, Dovecot {df['fetch_seconds']} s, ratio {cf['fetch_seconds']/max(df['fetch_seconds'],1e-3):.2f} ({cf['fetched']} / {df['fetched']} messages)")
print(f"SEARCH BODY: cspool {cf['search_seconds']} s, Dovecot {df['search_seconds']} s, ratio {cf['search_seconds']/max(df['search_seconds'],1e-3):.2f} ({cf['search_hits']} / {df['search_hits']} hits)")
PY

echo "load average at the end of 1': $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$SYNC_ONLY" = 1 ] && exit 0

# 2'. Every read figure, cold and warm.
reads "$N" "$N" device.db $((P + 3))
dpid=$cs_pid

# 3. RSS with BIG messages (2 KB each to bound the run).
if [ "$BIG" -gt 0 ]; then
	kill $dpid; wait $dpid 2>/dev/null || true
	./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$((BIG - N))" --size 2048 --seed 2 --entry-format "${ENTRY_FORMAT:-2}" >/dev/null
	t0=$(date +%s.%N)
	cs_start big.db $((P + 5)) big.log
	bpid=$cs_pid
	$IB waitcount 127.0.0.1 $((P + 5)) alice pw "$BIG" 1200 >/dev/null
	t1=$(date +%s.%N)
	sleep 2
	idle=$(cur $bpid)
	$IB fetch 127.0.0.1 $((P + 5)) alice pw quarterly >big-fetch.json
	python3 -c "
import json; d = json.load(open('big-fetch.json'))
print('daemon with $BIG messages: sync %.1f s, RSS idle %.0f MB, peak (sync and full FETCH) %.0f MB; FETCH 1:* %.2f s' % ($t1 - $t0, $idle, $(rss $bpid), d['fetch_seconds']))"
	# The same messages into Dovecot, then the reads at BIG.
	./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$((BIG - N))" --size 2048 --seed 2 --first "$N" >/dev/null
	chown -R vmail:vmail "$work/dovecot/mail"
	doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true
	reads "$BIG" "$BIG" big.db $((P + 5))
fi
