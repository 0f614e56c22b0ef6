#!/usr/bin/env bash
# Push latency: LMTP delivery acknowledged -> untagged EXISTS in an idling
# IMAP client, over COUNT (default 200) deliveries, real binaries on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/cspool-bench-push.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/cspool" ./cmd/cspool
go build -o "$work/push" ./bench/push
cd "$work"
./cspool gen-keys user.sec user.pub >/dev/null
./cspool gen-keys spool.sec spool.pub >/dev/null
echo "alice $(grep -v '^#' user.pub)" >users
./cspool server --spool-dir spool --users users --spool-key spool.sec --port 25999 --lmtp 127.0.0.1:25424 2>server.log &
pids+=($!)
./cspool imap-server --user alice --user-key user.sec --user-public-key user.pub --spool-key spool.pub \
	--spool-server http://127.0.0.1:25999 --db device.db --password pw --port 25143 --status-addr '' 2>device.log >/dev/null &
pids+=($!)
for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/25143) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/25424) 2>/dev/null && break; sleep 0.1; done
./push --lmtp 127.0.0.1:25424 --imap 127.0.0.1:25143 --user alice --password pw --count "${COUNT:-200}"
