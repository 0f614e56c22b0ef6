#!/usr/bin/env bash
# An EXPUNGE whose bodies go, on a device whose search index is built, as a
# mail user meets it: `cspool quickstart`, COUNT messages delivered over
# LMTP, the index built (the status page says so), then through imaplib:
# COPY 1:* Archive, in Archive STORE 1:* +FLAGS.SILENT (\Deleted) and
# EXPUNGE (the bodies stay: INBOX has them), then the same in INBOX (the
# bodies go). Prints each command's time, a NOOP's right after, those of
# 15 APPENDs over the next 20 s (while the indexer works), and what the
# indexer logged.
#
#   bash bench/expunge-indexed.sh [TREE]   # TREE: the source tree to build (default .)
#   COUNT=20000 SIZE=4096                  # the defaults
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:-.}
count=${COUNT:-20000}
size=${SIZE:-4096}
work=$(mktemp -d /tmp/cspool-bench-expunge.XXXXXX)
qpid=
cleanup() {
	[ -n "$qpid" ] && kill -INT "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$tree" && go build -o "$work/cspool" ./cmd/cspool)
go build -o "$work/lmtpload" ./bench/lmtp
imap=62143 lmtp=62424 status=62144
"$work/cspool" quickstart --dir "$work/qs" --user alice --imap-port $imap --lmtp-port $lmtp \
	--http-port 62999 --smtp-port 62025 --status-addr 127.0.0.1:$status >"$work/qs.out" 2>"$work/qs.err" &
qpid=$!
pw=
for _ in $(seq 1 600); do
	pw=$(awk '/^ *password:/ {print $2; exit}' "$work/qs.out")
	[ -n "$pw" ] && (exec 3<>/dev/tcp/127.0.0.1/$lmtp) 2>/dev/null && break
	sleep 0.1
done
[ -n "$pw" ] || { echo "quickstart did not start" >&2; cat "$work/qs.err" >&2; exit 1; }
start=$(date +%s)
"$work/lmtpload" --addr 127.0.0.1:$lmtp --conns 4 --count "$count" --size "$size" --rcpt alice@localhost --json >"$work/lmtp.json"
echo "delivered $count messages of $size bytes in $(( $(date +%s) - start )) s: $(cat "$work/lmtp.json")"

python3 - "$imap" "$pw" "$count" "$status" <<'EOF'
import base64, imaplib, re, sys, time, urllib.request
port, pw, count, status = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]

def unindexed():
    req = urllib.request.Request(f"http://127.0.0.1:{status}/")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"alice:{pw}".encode()).decode())
    page = urllib.request.urlopen(req).read().decode()
    m = re.search(r'data-unindexed="(\d+)"', page)
    return int(m.group(1)) if m else -1

c = imaplib.IMAP4("127.0.0.1", port)
c.login("alice", pw)
t0 = time.time()
while True:
    typ, data = c.select("INBOX")
    n = int(data[0])
    if n >= count + 1 and unindexed() == 0:
        break
    if time.time() - t0 > 1800:
        sys.exit(f"INBOX holds {n}, {unindexed()} unindexed after 1800 s")
    time.sleep(2)
print(f"INBOX {n} messages, index built, {time.time() - t0:.0f} s after the deliveries")
time.sleep(3)  # the indexer's merge once applying is quiet

def timed(what, *cmd):
    t = time.time()
    typ, data = getattr(c, cmd[0])(*cmd[1:])
    print(f"{what:<44} {time.time() - t:7.2f} s  {typ}")
    if typ != "OK":
        sys.exit(f"{what}: {typ} {data}")

timed("COPY 1:* Archive", "copy", "1:*", "Archive")
c.select("Archive")
timed("Archive STORE 1:* +FLAGS.SILENT (\\Deleted)", "store", "1:*", "+FLAGS.SILENT", "(\\Deleted)")
timed("Archive EXPUNGE (bodies kept)", "expunge")
c.select("INBOX")
timed("INBOX STORE 1:* +FLAGS.SILENT (\\Deleted)", "store", "1:*", "+FLAGS.SILENT", "(\\Deleted)")
timed("INBOX EXPUNGE (bodies deleted)", "expunge")
timed("NOOP right after", "noop")
# The device's writer while the indexer works after the EXPUNGE: it
# starts once applying has been quiet for a second, so 15 APPENDs of a
# small message, one every 1.3 s, each meeting the indexer at work (or
# the indexer's log shows it done).
lat = []
for i in range(15):
    time.sleep(1.3)
    t = time.time()
    typ, _ = c.append("INBOX", None, None, f"Subject: after {i}\r\n\r\nhello\r\n".encode())
    lat.append((time.time() - t, time.strftime("%H:%M:%S", time.gmtime(t))))
print("APPENDs after it (UTC start, ms): " + " ".join(f"{at} {d*1000:.0f}" for d, at in lat))
lat.sort()
print(f"15 APPENDs after it: median {lat[7][0]*1000:.0f} ms, longest {lat[-1][0]*1000:.0f} ms")
c.logout()
EOF
# What the daemon's indexer logged (the last rounds: the one after the
# EXPUNGE counts the bodies it took out).
grep -E 'search index' "$work/qs.err" | tail -3 || true
