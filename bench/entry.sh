#!/usr/bin/env bash
# Entry sealing/opening against the raw AEAD on the same bytes, the
# public-key operations that bound the per-entry fixed cost, and the peak
# heap for 50 MB. Runs with every core (GOMAXPROCS default) and on one core
# (-cpu 1). Each of COUNT rounds (default 5) runs the AEAD and the entry
# benchmarks back to back, so each round's ratio compares runs made seconds
# apart; the tables give the median over the rounds of the rates and of the
# per-round ratios, which steadies them on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ratios() {
	awk '
function median(list,    a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function key(name,    p) { split(name, p, "/"); sub(/-[0-9]+$/, "", p[3]); return p[2] "/" p[3] }
$2 ~ /^BenchmarkAEAD\// { k = key($2); aead[$1, k] = $(NF-1); la[k] = la[k] " " $(NF-1) }
$2 ~ /^BenchmarkEntry\// { k = key($2); ent[$1, k] = $6; le[k] = le[k] " " $6; lu[k] = lu[k] " " $4 / 1000; rounds[$1] = 1 }
END {
	n = split("seal/1KB open/1KB seal/100KB open/100KB seal/1MB open/1MB seal/10MB open/10MB seal-alloc/1KB seal-alloc/100KB seal-alloc/1MB seal-alloc/10MB", ks, " ")
	printf "%-18s %12s %12s %8s %10s\n", "op/size", "entry MB/s", "AEAD MB/s", "ratio", "us/op"
	for (i = 1; i <= n; i++) {
		k = ks[i]; b = k; sub(/^seal-alloc/, "seal", b); lr = ""
		for (r in rounds) if ((r, k) in ent && (r, b) in aead) lr = lr " " ent[r, k] / aead[r, b]
		printf "%-18s %12.1f %12.1f %8.3f %10.1f\n", k, median(le[k]), median(la[b]), median(lr), median(lu[k])
	}
}'
}
for cpu in "$(nproc)" 1; do
	echo "== $cpu core(s)"
	out=$(for r in $(seq "${COUNT:-5}"); do
		go test -run '^$' -cpu "$cpu" -bench 'BenchmarkAEAD|BenchmarkEntry|BenchmarkPublicKeyOps' -benchtime "${BENCHTIME:-1s}" ./internal/entry/ | sed -n "s/^Benchmark/$r Benchmark/p"
	done)
	echo "$out"
	echo
	echo "$out" | ratios
	echo
done
go test -run '^$' -bench 'BenchmarkPeakHeap50MB' -benchtime "${BENCHTIME:-1s}" ./internal/entry/ | grep '^Benchmark'
