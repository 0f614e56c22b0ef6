//go:build !race

package testproc

// Race reports whether the race detector is on (race_on.go).
const Race = false
