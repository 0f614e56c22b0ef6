#!/usr/bin/env bash
# Idle cost of a running installation, and time to first login:
#  1. the static binary's size (CGO_ENABLED=0);
#  2. `cspool server` and `cspool imap-server` with a small mailbox (N
#     messages, synced) and one IMAP client in IDLE: resident memory and the
#     CPU time each process uses over SECS seconds of idleness (utime+stime
#     from /proc/PID/stat). Near zero means no busy polling;
#  3. if the quickstart subcommand exists: from `cspool quickstart` start to
#     the first IMAP LOGIN that succeeds, on a new state folder and again on
#     the existing one.
#
#   N=200 SECS=20 bash bench/idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
SECS=${SECS:-20}
work=$(mktemp -d /tmp/cspool-bench-idle.XXXXXX)
pids=()
cleanup() {
	exec 3>&- 2>/dev/null || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/seed" ./bench/seed
C=$work/cspool
size=$(stat -c %s "$C")

# A free TCP port on 127.0.0.1 (bounded tries).
freeport() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 9<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
	done
	echo "no free port" >&2
	return 1
}
waitport() {
	for _ in $(seq 1 200); do (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
	echo "nothing listens on $1" >&2
	return 1
}
# imap HOST-PORT USER PASS CMD: one session, prints the tagged replies.
imap() {
	local port=$1 user=$2 pass=$3 cmd=$4 line
	exec 4<>"/dev/tcp/127.0.0.1/$port" || return 1
	IFS= read -r -t 5 line <&4 || { exec 4>&-; return 1; }
	printf 'a LOGIN "%s" "%s"\r\n' "$user" "$pass" >&4
	IFS= read -r -t 10 line <&4 || { exec 4>&-; return 1; }
	echo "$line"
	if [ -n "$cmd" ]; then
		printf 'b %s\r\n' "$cmd" >&4
		while IFS= read -r -t 10 line <&4; do
			echo "$line"
			case $line in b\ *) break ;; esac
		done
	fi
	printf 'z LOGOUT\r\n' >&4
	exec 4>&-
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

cd "$work"
$C gen-keys user.sec user.pub >/dev/null
$C gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./seed spool --spool-dir spool --user alice --user-key user.pub --spool-key spool.sec --count "$N" >/dev/null
hp=$(freeport); ip=$(freeport); sp=$(freeport)
$C server --spool-dir spool --users users --spool-key spool.sec --port "$hp" 2>server.log &
spid=$!; pids+=("$spid")
waitport "$hp"
$C imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server "http://127.0.0.1:$hp" --db device.db --password pw --port "$ip" \
	--status-addr "127.0.0.1:$sp" >/dev/null 2>device.log &
dpid=$!; pids+=("$dpid")
waitport "$ip"
synced=0
for _ in $(seq 1 600); do
	if imap "$ip" alice pw "STATUS INBOX (MESSAGES)" | grep -q "MESSAGES $N)"; then synced=1; break; fi
	sleep 0.1
done
[ "$synced" = 1 ] || { echo "daemon did not sync $N messages" >&2; exit 1; }

# One client stays in IDLE, as a mail client would.
exec 3<>"/dev/tcp/127.0.0.1/$ip"
IFS= read -r -t 5 _ <&3
printf 'a LOGIN alice pw\r\nb SELECT INBOX\r\nc IDLE\r\n' >&3
sleep 2 # let the start-up work settle (first sync, SELECT) before measuring

s0=$(ticks "$spid"); d0=$(ticks "$dpid")
sleep "$SECS"
s1=$(ticks "$spid"); d1=$(ticks "$dpid")
srss=$(rss_mb "$spid"); drss=$(rss_mb "$dpid")
printf 'DONE\r\n' >&3
exec 3>&-

ms() { echo $(( ($1) * 1000 / hz )); }
echo "binary (CGO_ENABLED=0, static): $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.1f", s/1e6}') MB)"
echo "mailbox: $N messages synced; one IMAP client in IDLE; idle window ${SECS} s (CLK_TCK $hz)"
printf '%-18s %8s %14s %10s\n' process "RSS MB" "CPU ms/${SECS}s" "CPU %"
for row in "cspool server:$spid:$s0:$s1:$srss" "cspool imap-server:$dpid:$d0:$d1:$drss"; do
	IFS=: read -r name _ t0 t1 rss <<<"$row"
	cpu=$(ms "$t1 - $t0")
	printf '%-18s %8s %14s %10s\n' "$name" "$rss" "$cpu" "$(awk -v c="$cpu" -v s="$SECS" 'BEGIN{printf "%.3f", c/(s*10)}')"
done

# Quickstart: start to first successful IMAP login.
helptext=$($C help)
if ! grep -q '^  quickstart' <<<"$helptext"; then
	echo "quickstart: subcommand not present, skipped"
	exit 0
fi
quick() {
	local qp out start pid line pw
	qp=$(freeport)
	out=$work/quick.$1.out
	start=$(date +%s%N)
	$C quickstart --dir "$work/qs" --user alice --imap-port "$qp" --http-port 0 --lmtp-port 0 >"$out" 2>"$out.err" &
	pid=$!; pids+=("$pid")
	for _ in $(seq 1 600); do
		pw=$(awk '/^ *password:/ {print $2; exit}' "$out")
		if [ -n "$pw" ] && line=$(imap "$qp" alice "$pw" "" 2>/dev/null) && [[ $line == "a OK"* ]]; then
			echo "quickstart ($1): first IMAP login after $(( ($(date +%s%N) - start) / 1000000 )) ms"
			kill -INT "$pid"; wait "$pid" 2>/dev/null || true
			return
		fi
		sleep 0.02
	done
	echo "quickstart ($1): no successful login within 12 s" >&2
	kill "$pid" 2>/dev/null || true
	return 1
}
quick "new state folder"
quick "existing state folder"
