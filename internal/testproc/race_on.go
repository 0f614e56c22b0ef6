//go:build race

package testproc

// Race reports whether the race detector is on (race_off.go).
const Race = true
