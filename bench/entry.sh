#!/usr/bin/env bash
# Entry sealing/opening against the raw AEAD on the same bytes, the
# public-key operations that bound the per-entry fixed cost, and the peak
# heap for 50 MB. Runs once with every core (GOMAXPROCS default) and once
# on one core (-cpu 1), and prints the Go benchmark lines and the ratios of
# the medians over COUNT runs (default 5), which steadies the figures on a
# shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# ratios prints, per op and size, the median over the -count runs.
ratios() {
	awk '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^BenchmarkAEAD\// { split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); k = p[2] "/" p[3]; la[k] = la[k] " " $(NF-1) }
/^BenchmarkEntry\// { split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); k = p[2] "/" p[3]; le[k] = le[k] " " $5; lu[k] = lu[k] " " $3 / 1000 }
END {
	for (k in la) aead[k] = median(la[k])
	for (k in le) { ent[k] = median(le[k]); us[k] = median(lu[k]) }
	printf "%-18s %12s %12s %8s %10s\n", "op/size", "entry MB/s", "AEAD MB/s", "ratio", "us/op"
	n = split("seal/1KB open/1KB seal/100KB open/100KB seal/1MB open/1MB seal/10MB open/10MB", ks, " ")
	for (i = 1; i <= n; i++) { k = ks[i]; printf "%-18s %12.1f %12.1f %8.3f %10.1f\n", k, ent[k], aead[k], ent[k] / aead[k], us[k] }
	n = split("1KB 100KB 1MB 10MB", ss, " ")
	for (i = 1; i <= n; i++) { k = "seal-alloc/" ss[i]; printf "%-18s %12.1f %12.1f %8.3f %10.1f\n", k, ent[k], aead["seal/" ss[i]], ent[k] / aead["seal/" ss[i]], us[k] }
}'
}
for cpu in "$(nproc)" 1; do
	echo "== $cpu core(s)"
	out=$(go test -run '^$' -cpu "$cpu" -bench 'BenchmarkAEAD|BenchmarkEntry|BenchmarkPublicKeyOps' -benchtime "${BENCHTIME:-1s}" -count "${COUNT:-5}" ./internal/entry/)
	echo "$out" | grep '^Benchmark'
	echo
	echo "$out" | ratios
	echo
done
go test -run '^$' -bench 'BenchmarkPeakHeap50MB' -benchtime "${BENCHTIME:-1s}" ./internal/entry/ | grep '^Benchmark'
