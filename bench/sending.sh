#!/usr/bin/env bash
# Sending figures against a real Postfix on loopback (docs/BENCHMARKS.md,
# "Sending"): submission acknowledged to relayed and submission to the copy
# in Sent on a second device (N messages, one at a time), then the outbox's
# drain after an outage of Q queued messages against Postfix's own flush of
# the same Q. Needs root and the Debian postfix package.
#
#   bash bench/sending.sh            # N=200 Q=1000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200} Q=${Q:-1000} CSPOOL_BENCH_SENDING=1 \
	go test -count=1 -timeout 30m -run '^TestSendingFigures$' -v ./cmd/cspool 2>&1 |
	grep -E 'FIGURE|^(--- |ok|FAIL)'
