//go:build !cspool_bench_plaintext

package main

// benchPlaintext is false in every build but the benchmark's
// (benchplain.go): the device's databases are always encrypted.
const benchPlaintext = false
