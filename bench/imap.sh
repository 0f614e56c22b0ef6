#!/usr/bin/env bash
# Device figures against Dovecot and mbsync, one run on one machine:
#  1. first sync of a new device: N messages of ~10 KB already in the spool,
#     from `cspool imap-server` start until IMAP STATUS shows all N; against
#     mbsync pulling the same N messages from Dovecot into a Maildir;
#  2. FETCH 1:* (ENVELOPE FLAGS) and SEARCH BODY over the N messages, cspool
#     against Dovecot serving the same mailbox (same Python imaplib client);
#  3. the daemon's RSS with BIG messages (idle, and during a full FETCH).
#
#   N=10000 BIG=100000 bash bench/imap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
N=${N:-10000}
BIG=${BIG:-100000}
work=$(mktemp -d /tmp/cspool-bench-imap.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$work/dovecot"
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
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

# 1. cspool first sync.
t0=$(date +%s.%N)
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:24999 --db device.db --password pw --port 24143 2>device.log >/dev/null &
dpid=$!
pids+=($dpid)
$IB waitcount 127.0.0.1 24143 alice pw "$N" 600 >wait.json
t1=$(date +%s.%N)
cs_sync=$(python3 -c "print('%.2f' % ($t1 - $t0))")
cs_rss=$(rss $dpid)
cs_fetch=$($IB fetch 127.0.0.1 24143 alice pw quarterly)

# 1'. mbsync from Dovecot.
dovecot_start "$work/dovecot" 24144 24425 alice pw
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$N" >/dev/null
chown -R vmail:vmail "$work/dovecot/mail"
doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true
mkdir -p near
cat >mbsyncrc <<RC
IMAPAccount dove
Host 127.0.0.1
Port 24144
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
/usr/bin/time -f '%e %M' -o mbsync.time mbsync -q -c mbsyncrc pull
read mb_sync mb_rss_kb <mbsync.time
mb_rss=$(python3 -c "print($mb_rss_kb/1024)")
mb_count=$(ls near/INBOX/cur near/INBOX/new | grep -c , || true)
dv_fetch=$($IB fetch 127.0.0.1 24144 alice pw quarterly)

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

# 3. RSS with BIG messages (2 KB each to bound the run).
if [ "$BIG" -gt 0 ]; then
	kill $dpid; wait $dpid 2>/dev/null || true
	./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$((BIG - N))" --size 2048 --seed 2 >/dev/null
	t0=$(date +%s.%N)
	$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
		--spool-server http://127.0.0.1:24999 --db big.db --password pw --port 24145 2>big.log >/dev/null &
	bpid=$!
	pids+=($bpid)
	$IB waitcount 127.0.0.1 24145 alice pw "$BIG" 1200 >/dev/null
	t1=$(date +%s.%N)
	sleep 2
	idle=$(cur $bpid)
	$IB fetch 127.0.0.1 24145 alice pw quarterly >big-fetch.json
	python3 -c "
import json; d = json.load(open('big-fetch.json'))
print('daemon with $BIG messages: sync %.1f s, RSS idle %.0f MB, peak (sync and full FETCH) %.0f MB; FETCH 1:* %.2f s' % ($t1 - $t0, $idle, $(rss $bpid), d['fetch_seconds']))"
fi
