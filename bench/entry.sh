#!/usr/bin/env bash
# Entry sealing/opening against the raw AEAD on the same bytes, and the peak
# heap for 50 MB. Prints the Go benchmark lines and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test -run '^$' -bench 'BenchmarkAEAD|BenchmarkEntry|BenchmarkPeakHeap50MB' -benchtime "${BENCHTIME:-1s}" ./internal/entry/)
echo "$out" | grep '^Benchmark'
echo
echo "$out" | awk '
/^BenchmarkAEAD\// { split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); aead[p[2] "/" p[3]] = $(NF-1) }
/^BenchmarkEntry\// { split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); k = p[2] "/" p[3]; ent[k] = $5; us[k] = $3 / 1000 }
END {
	printf "%-12s %12s %12s %8s %10s\n", "op/size", "entry MB/s", "AEAD MB/s", "ratio", "us/op"
	n = split("seal/1KB open/1KB seal/100KB open/100KB seal/10MB open/10MB", ks, " ")
	for (i = 1; i <= n; i++) { k = ks[i]; printf "%-12s %12.1f %12.1f %8.3f %10.1f\n", k, ent[k], aead[k], ent[k] / aead[k], us[k] }
}'
