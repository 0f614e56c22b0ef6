#!/bin/bash
# Two devices of one user, each under the stress mix at once for DUR.
set -e
trap 'kill -INT $(cat $w/dev1.pid $w/dev2.pid $w/server.pid 2>/dev/null) 2>/dev/null || true' EXIT
tree=$1; w=/tmp/two/w; rm -rf $w; mkdir -p $w; cd $tree
go build -o $w/cspool ./cmd/cspool; go build -o $w/seed ./bench/seed; go build -o $w/imapstress ./bench/imapstress
cd $w
./cspool gen-keys user.sec user.pub >/dev/null; ./cspool gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" > users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count 50 --size 4096 >/dev/null
./cspool server --spool-dir spool --users users --spool-key spool.sec --port 47380 2>server.log & echo $! > server.pid
sleep 1.5
for d in 1 2; do
./cspool imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
  --spool-server http://127.0.0.1:47380 --db dev$d.db --password pw --port 4734$d --status-addr '' 2>dev$d.log >/dev/null & echo $! > dev$d.pid
done
sleep 35
./imapstress --addr 127.0.0.1:47341 --user alice --password pw --duration ${DUR:-90s} --clients 10 --seed 1 > s1.json 2>&1 &
p1=$!
./imapstress --addr 127.0.0.1:47342 --user alice --password pw --duration ${DUR:-90s} --clients 10 --seed 2 > s2.json 2>&1 &
p2=$!
wait $p1 $p2 || true
echo "stress ended $(date -u +%T)"
for i in $(seq 1 150); do
  a=$(./cspool status --db dev1.db 2>/dev/null | grep '^Position' || true); b=$(./cspool status --db dev2.db 2>/dev/null | grep '^Position' || true)
  q1=$(./cspool status --db dev1.db 2>/dev/null | grep '^Queued' || true); q2=$(./cspool status --db dev2.db 2>/dev/null | grep '^Queued' || true)
  if echo "$a$b" | grep -q "up to date.*up to date" && echo "$q1$q2" | grep -q "none.*none"; then break; fi
  sleep 1
done
echo "after $i s: dev1 $a $q1 | dev2 $b $q2"
grep -o 'status=[0-9]*' server.log | sort | uniq -c
for d in 1 2; do echo "dev$d: $(grep -c 'answered with an error' dev$d.log) refusals logged, $(grep -c 'unreachable' dev$d.log) unreachable, $(grep -ci 'alarm' dev$d.log) alarm lines"; done
python3 - <<'PY'
import json
for f in ('s1.json','s2.json'):
    try:
        d=json.load(open(f)); print(f, {k: d[k] for k in d if k in ('errors','total','ops','protocol_errors')} or list(d)[:8])
    except Exception as e: print(f, 'unreadable', e, open(f).read()[:300])
PY
kill -INT $(cat dev1.pid) $(cat dev2.pid) $(cat server.pid); sleep 1
