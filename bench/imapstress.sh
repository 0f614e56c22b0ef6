#!/usr/bin/env bash
# IMAP under concurrent clients: the stress mix of internal/imapstress (10
# clients on one mailbox doing SELECT, FETCH, STORE and UID STORE of flags
# and keywords, EXPUNGE, APPEND, NOOP, LOGOUT at full speed, every response
# checked) for DUR seconds against `cspool imap-server` (real binaries: spool
# server and device daemon on loopback), and for as long against Dovecot
# serving the same user and the same N messages. Prints operations per
# second by command for both (and the mean time of each, from sending it
# to the tagged reply), and the protocol errors each had. The time is
# split into ROUNDS rounds, cspool and Dovecot in turn, so a change in the
# machine's load falls on both.
#
#   N=50 DUR=30 ROUNDS=3 CLIENTS=10 bash bench/imapstress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/dovecot.sh
N=${N:-50}
DUR=${DUR:-30}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-10}
work=$(mktemp -d /tmp/cspool-bench-stress.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	dovecot_stop "$work/dovecot"
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
# Free loopback ports (other benchmarks may hold fixed ones).
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP=$(freeport) IMAP=$(freeport) DIMAP=$(freeport) DLMTP=$(freeport)
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
go build -o "$work/imapstress" ./bench/imapstress
IB="python3 $PWD/bench/lib/imapbench.py"
cd "$work"
C=./cspool
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$N" --size 4096 >/dev/null
$C server --spool-dir spool --users users --spool-key spool.sec --port $HTTP 2>server.log &
pids+=($!)
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$HTTP) 2>/dev/null && break; sleep 0.1; done
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:$HTTP --db device.db --password pw --port $IMAP --status-addr '' 2>device.log >/dev/null &
pids+=($!)
$IB waitcount 127.0.0.1 $IMAP alice pw "$N" 120 >/dev/null

dovecot_start "$work/dovecot" $DIMAP $DLMTP alice pw
./seed maildir --dir "$work/dovecot/mail/alice/Maildir" --count "$N" --size 4096 >/dev/null
chown -R vmail:vmail "$work/dovecot/mail"
doveadm -c "$work/dovecot/dovecot.conf" index -u alice INBOX 2>/dev/null || true

per=$(python3 -c "print($DUR / $ROUNDS)")
for r in $(seq 1 "$ROUNDS"); do
	./imapstress --addr 127.0.0.1:$IMAP --user alice --password pw --duration "${per}s" --clients "$CLIENTS" --seed "$r" >"cspool.$r.json" || true
	./imapstress --addr 127.0.0.1:$DIMAP --user alice --password pw --duration "${per}s" --clients "$CLIENTS" --seed "$r" >"dovecot.$r.json" || true
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$ROUNDS" <<'PY'
import json, sys
rounds = int(sys.argv[1])
def load(name):
    runs = [json.load(open(f"{name}.{r}.json")) for r in range(1, rounds + 1)]
    ops, ms = {}, {}
    for run in runs:
        for k, v in run["ops"].items():
            ops[k] = ops.get(k, 0) + v
            ms[k] = ms.get(k, 0) + run["total_ms"][k]
    return runs, ops, ms, sum(run["seconds"] for run in runs)
csr, cso, csm, css = load("cspool")
dvr, dvo, dvm, dvs = load("dovecot")
print(f"{'command':<10} {'cspool/s':>9} {'Dovecot/s':>10} {'ratio':>6} {'cspool ms':>10} {'Dovecot ms':>11}")
for n in sorted(set(cso) | set(dvo)):
    c, d = cso.get(n, 0) / css, dvo.get(n, 0) / dvs
    cm = csm.get(n, 0) / max(cso.get(n, 0), 1)
    dm = dvm.get(n, 0) / max(dvo.get(n, 0), 1)
    print(f"{n:<10} {c:9.1f} {d:10.1f} {c / d if d else float('nan'):6.2f} {cm:10.1f} {dm:11.1f}")
tc, td = sum(cso.values()) / css, sum(dvo.values()) / dvs
print(f"{'all':<10} {tc:9.1f} {td:10.1f} {tc / td:6.2f}")
per = [(sum(c["ops"].values()) / c["seconds"]) / (sum(d["ops"].values()) / d["seconds"]) for c, d in zip(csr, dvr)]
print("all commands, ratio per round: " + ", ".join(f"{x:.2f}" for x in per))
for name, runs in (("cspool", csr), ("Dovecot", dvr)):
    errs = sum(r["errors"] for r in runs)
    print(f"{name}: {errs} protocol errors, {sum(r['expunge_issued'] for r in runs)} NO [EXPUNGEISSUED], {runs[-1]['final_messages']} messages at the end")
    for r in runs:
        for e in (r["first_errors"] or [])[:5]:
            print("  ", e)
PY
