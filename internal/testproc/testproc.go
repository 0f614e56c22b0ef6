// Package testproc helps tests that run cspool's servers as subprocesses:
// loopback ports to tell them (they cannot be handed a listener), and a
// buffer their output can be written to while the test reads it. It also
// holds the switch of the heavy tests (Heavy), and says whether the race
// detector is on (Race, SkipUnderRace).
//
// Ports come from 20000-31999, below Linux's default ephemeral range
// (32768-60999), so the kernel never picks one of them for an outgoing
// connection or a listener on port 0 in the meantime; a port is handed out
// at most once per process and only after a bind on it succeeded. On a
// machine shared with others, CSPOOL_TEST_PORTS=LOW-HIGH (say 42000-42999)
// keeps them to that range.
package testproc

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// HeavyEnv is the environment variable that turns the heavy tests on:
// the soaks and the large variants, which take minutes. CI sets it
// (.ci/run); the README's everyday test command does not.
const HeavyEnv = "CSPOOL_HEAVY"

// Heavy reports whether HeavyEnv is 1: a test with a large variant runs
// it then, and a smaller one otherwise.
func Heavy() bool { return os.Getenv(HeavyEnv) == "1" }

// NeedHeavy skips the test unless HeavyEnv is 1.
func NeedHeavy(t testing.TB) {
	t.Helper()
	if !Heavy() {
		t.Skipf("a heavy test: runs with %s=1 (CI sets it)", HeavyEnv)
	}
}

// SkipUnderRace skips the test under the race detector. A test that
// measures what the process allocates or holds (runtime.MemStats, SQLite's
// page cache) at a size that takes minutes under the detector calls it
// first: the detector changes what is allocated (sync.Pool drops what is
// put in it) and, unless the README's -gcflags leave it out, runs
// SQLite, which is Go code here, 5 to 10 times slower, and such a test
// checks a size, not an order between goroutines. CI runs
// every test that calls it in a step without -race (.ci/run finds them by
// this call, so it must be in the test function itself, not a helper).
func SkipUnderRace(t testing.TB) {
	t.Helper()
	if Race {
		t.Skip("measures memory at a size that takes minutes under the race detector, which changes what is allocated; CI runs it without -race")
	}
}

// Scale returns small under the race detector and large without it. A
// test whose time is its size (many random cases compared with a
// reference on one goroutine, not an order between goroutines) calls it
// for that size: under -race, which slows the Go code of the test's
// process (and SQLite's, 5 to 10 times, without the README's -gcflags),
// the small size still walks every path the detector can
// watch, and CI runs the test again at its large size in the step without
// -race (.ci/run finds it by this call, so it must be in the test function
// itself, not a helper).
func Scale(t testing.TB, small, large int) int {
	t.Helper()
	if Race {
		return small
	}
	return large
}

// The ports handed out: low to low+span-1 (portRange).
var low, span = portRange(os.Getenv("CSPOOL_TEST_PORTS"))

// portRange reads CSPOOL_TEST_PORTS, LOW-HIGH; 20000-31999 when it is not
// set; a malformed one stops the test binary at its start.
func portRange(v string) (int, int) {
	if v == "" {
		return 20000, 12000
	}
	var lo, hi int
	if n, err := fmt.Sscanf(v, "%d-%d", &lo, &hi); err != nil || n != 2 || lo < 1024 || hi > 65535 || hi < lo {
		panic(fmt.Sprintf("CSPOOL_TEST_PORTS=%q: want LOW-HIGH, 1024 <= LOW <= HIGH <= 65535", v))
	}
	return lo, hi - lo + 1
}

var (
	mu   sync.Mutex
	used = map[int]bool{}
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago and that no
// other caller in this process has been given.
func FreePort(t testing.TB) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := low + rand.IntN(span)
		if used[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		used[p] = true
		return p
	}
	t.Fatalf("no free loopback port in %d-%d", low, low+span-1)
	return 0
}

// Buffer collects a subprocess's output; it may be read while written.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ReadRotated returns the text of the log at path and of the files its
// writer rotated it into (path followed by anything: neomutt's log0), for
// a client's debug log a test looks through.
func ReadRotated(t testing.TB, path string) string {
	t.Helper()
	var b strings.Builder
	matches, _ := filepath.Glob(path + "*")
	for _, p := range matches {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}
