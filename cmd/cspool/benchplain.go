//go:build cspool_bench_plaintext

package main

// benchPlaintext is set in a build made with -tags cspool_bench_plaintext:
// the device's databases are kept in plaintext, with the same driver, the
// same schema and the same search index, so that bench/atrest.sh can
// measure what encryption at rest costs. No release is built so, and no
// flag or setting turns encryption off.
const benchPlaintext = true
