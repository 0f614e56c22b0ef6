package sqlitestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDatagramEncoding(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxNotifiedName+1)
	many := make([]string, 300)
	for i := range many {
		many[i] = fmt.Sprintf("user-%03d@example.org", i)
	}
	for _, tc := range []struct {
		name    string
		users   []string
		wantAll bool
	}{
		{"one", []string{"alice"}, false},
		{"binary names", []string{"a\x00b", "\xff", "ü"}, false},
		{"many split over datagrams", many, false},
		{"name too long wakes all", []string{"alice", long}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			all := false
			for _, msg := range encodeUsers(tc.users) {
				if len(msg) > maxDatagram {
					t.Fatalf("datagram of %d bytes, limit %d", len(msg), maxDatagram)
				}
				us, a := decodeUsers(msg)
				got = append(got, us...)
				all = all || a
			}
			if all != tc.wantAll {
				t.Fatalf("wake-all %v, want %v", all, tc.wantAll)
			}
			if !tc.wantAll && !slices.Equal(got, tc.users) {
				t.Fatalf("decoded %q, want %q", got, tc.users)
			}
		})
	}
	for _, bad := range [][]byte{nil, {}, {2, 1, 'a'}, {1, 5, 'a'}, {1, 0}, {1, 0x80}} {
		if us, all := decodeUsers(bad); !all || us != nil {
			t.Errorf("decodeUsers(%q) = %q, %v; want wake-all", bad, us, all)
		}
	}
}

func FuzzDecodeUsers(f *testing.F) {
	f.Add([]byte{1, 5, 'a', 'l', 'i', 'c', 'e'})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, msg []byte) {
		users, all := decodeUsers(msg)
		if all {
			return
		}
		// What decodes re-encodes to the same bytes.
		enc := encodeUsers(users)
		if len(msg) <= maxDatagram && (len(enc) != 1 || string(enc[0]) != string(msg)) {
			t.Fatalf("decodeUsers(%q) = %q, which encodes to %q", msg, users, enc)
		}
	})
}

// waitWithin runs s.Wait(user, after) and fails unless it returns nil within d.
func waitWithin(t *testing.T, s *Store, user string, after uint64, d time.Duration, appendFn func()) time.Duration {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctxT(t), user, after) }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	appendFn()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("Wait did not wake within %v", d)
		return 0
	}
}

// TestDatagramWakes takes the fallback check out of play: only the datagram
// can wake the waiter.
func TestDatagramWakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	waiter := openT(t, dir, Options{FallbackInterval: time.Hour})
	appender := openT(t, dir, Options{FallbackInterval: time.Hour})
	for i := 0; i < 3; i++ {
		d := waitWithin(t, waiter, "u", uint64(i), 5*time.Second, func() {
			if _, err := appender.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("datagram wake-up after %v", d)
	}
}

// TestFallbackWakes takes the datagram out of play: only the periodic
// data_version check can wake the waiter.
func TestFallbackWakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	waiter := openT(t, dir, Options{DisableNotify: true, FallbackInterval: 100 * time.Millisecond})
	appender := openT(t, dir, Options{DisableNotify: true})
	for i := 0; i < 3; i++ {
		d := waitWithin(t, waiter, "u", uint64(i), 5*time.Second, func() {
			if _, err := appender.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("fallback wake-up after %v", d)
	}
}

// deadSocket leaves a socket file in the notify directory that no process
// is bound to any more, as a killed process would.
func deadSocket(t *testing.T, notifyDir string) string {
	t.Helper()
	path := filepath.Join(notifyDir, socketPrefix+"dead00000000dead")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the dead socket's file: %v", err)
	}
	return path
}

func TestStaleSocketRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	waiter := openT(t, dir, Options{FallbackInterval: time.Hour})
	appender := openT(t, dir, Options{FallbackInterval: time.Hour})
	dead := deadSocket(t, filepath.Join(dir, "notify"))
	// A file that is not a socket is left alone.
	other := filepath.Join(dir, "notify", "README")
	if err := os.WriteFile(other, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitWithin(t, waiter, "u", 0, 5*time.Second, func() {
		if _, err := appender.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
	})
	// The writer answers the appender before it notifies, so the removal
	// may come a moment after the wake-up.
	for i := 0; ; i++ {
		_, err := os.Stat(dead)
		if os.IsNotExist(err) {
			break
		}
		if i == 100 {
			t.Fatalf("stale socket still there 5 s after an append: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is not ours was touched: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "notify"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 {
		t.Errorf("notify directory has %v, want the 2 live sockets and README", names(ents))
	}
	waiter.Close()
	appender.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, "notify")); len(ents) != 1 {
		t.Errorf("after Close the notify directory has %v, want only README", names(ents))
	}
}

// TestLongDirectory puts the spool where a socket path would not fit in
// sun_path; the store still wakes across handles.
func TestLongDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	waiter := openT(t, dir, Options{FallbackInterval: time.Hour})
	appender := openT(t, dir, Options{FallbackInterval: time.Hour})
	if waiter.notify == nil || appender.notify == nil {
		t.Fatal("datagram wake-up is off in a long directory")
	}
	waitWithin(t, waiter, "u", 0, 5*time.Second, func() {
		if _, err := appender.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
	})
}

func names(ents []os.DirEntry) []string {
	var ns []string
	for _, e := range ents {
		ns = append(ns, e.Name())
	}
	return ns
}

// TestFallbackIgnoresOwnAppends: with many waiters, appends made through
// the same Store must not make the fallback check re-read every waited
// head (they wake their waiters directly); an append by another handle,
// as by another process, still wakes its waiter through the check.
func TestFallbackIgnoresOwnAppends(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{DisableNotify: true, FallbackInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	const waiting = 100
	var wg sync.WaitGroup
	for i := 0; i < waiting; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Wait(ctx, fmt.Sprintf("w%d", i), 0)
		}()
	}
	defer wg.Wait()
	defer cancel()
	for i := 0; i < 100 && !waitersAt(s, waiting); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !waitersAt(s, waiting) {
		t.Fatal("the waiters did not register")
	}
	// The first check after the waiters came reads their heads once: it
	// cannot know what happened before it.
	for i := 0; i < 500 && s.Stats().HeadChecks < waiting; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	before := s.Stats().HeadChecks
	// Appends of this Store, with fallback checks in between.
	for i := 0; i < 20; i++ {
		if _, err := s.Append(ctxT(t), "busy", [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	if n := s.Stats().HeadChecks - before; n != 0 {
		t.Fatalf("20 appends of this Store made the fallback read %d heads of waited users; want 0", n)
	}
	// Another handle's append is found by the check.
	other := openT(t, dir, Options{DisableNotify: true})
	waitWithin(t, s, "w7", 0, 5*time.Second, func() {
		if _, err := other.Append(ctxT(t), "w7", [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
	})
	if s.Stats().HeadChecks == before {
		t.Error("the wake-up after another handle's append read no head")
	}
}

func waitersAt(s *Store, n int) bool {
	s.waiters.mu.Lock()
	defer s.waiters.mu.Unlock()
	return len(s.waiters.m) >= n
}

// TestNotifyListsOnChange: an appender lists the notify directory once
// while it does not change (a stat per commit tells), not for every
// commit, and again once a socket is bound in it, whose Store then gets
// the datagrams as well. The fallback check is out of play. The
// directory's time is set by hand, so that each change is one the
// appender can see whatever the file system's clock.
func TestNotifyListsOnChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notifyDir := filepath.Join(dir, "notify")
	waiter := openT(t, dir, Options{FallbackInterval: time.Hour})
	appender := openT(t, dir, Options{FallbackInterval: time.Hour})
	if waiter.notify == nil || appender.notify == nil {
		t.Skip("no datagram wake-up on this system")
	}
	still := func(d time.Duration) {
		t.Helper()
		at := time.Now().Add(-d)
		if err := os.Chtimes(notifyDir, at, at); err != nil {
			t.Fatal(err)
		}
	}
	appendOne := func() {
		if _, err := appender.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	still(time.Hour)
	var pos uint64
	for range 20 {
		appendOne()
		pos++
	}
	waitWithin(t, waiter, "u", pos, 5*time.Second, appendOne)
	pos++
	if n := appender.notify.listings.Load(); n != 1 {
		t.Errorf("the notify directory listed %d times for 21 commits while it did not change, want once", n)
	}

	third := openT(t, dir, Options{FallbackInterval: time.Hour})
	still(time.Minute)
	waitWithin(t, third, "u", pos, 5*time.Second, appendOne)
	pos++
	waitWithin(t, waiter, "u", pos, 5*time.Second, appendOne)
	if n := appender.notify.listings.Load(); n != 2 {
		t.Errorf("the notify directory listed %d times in all, want twice (once more after a socket was bound)", n)
	}
}
