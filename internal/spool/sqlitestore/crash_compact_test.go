package sqlitestore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/spool"
)

// With compactHelperEnv set, TestMain runs compactProcess instead of the
// tests.
const compactHelperEnv = "CSPOOL_SQLITESTORE_COMPACT_HELPER"

const crashUser = "crash"

// crashKept is the rule every compaction of the crash test keeps by, so the
// expected log follows from the checkpoint's position alone.
func crashKept(pos uint64) bool { return pos%5 == 0 }

// crashEntry is the data of the entry at pos: self-describing, 500 to
// 2,499 bytes.
func crashEntry(pos uint64) []byte {
	b := fmt.Appendf(nil, "entry %d ", pos)
	return append(b, bytes.Repeat([]byte{byte(pos)}, 500+int(pos*7919%2000))...)
}

// crashCheckpoint is the data of the checkpoint at pos: 1 MiB.
func crashCheckpoint(pos uint64) []byte {
	b := fmt.Appendf(nil, "checkpoint %d\n", pos)
	return append(b, bytes.Repeat([]byte{byte(pos * 3)}, 1<<20)...)
}

// compactProcess grows the log of crashUser and compacts it, over and over,
// until it is killed. It prints "compact P" before and "done P" after each
// Compact.
func compactProcess() int {
	ctx := context.Background()
	s, err := Open(os.Getenv("HELPER_DIR"), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer s.Close()
	head, err := s.Head(ctx, crashUser)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	for round := 0; round < 10_000; round++ {
		for b := 0; b < 3; b++ {
			batch := make([][]byte, 400)
			for i := range batch {
				batch[i] = crashEntry(head + 1 + uint64(i))
			}
			first, err := s.Append(ctx, crashUser, batch)
			if err != nil || first != head+1 {
				fmt.Fprintf(os.Stderr, "helper: append at %d (want %d): %v\n", first, head+1, err)
				return 1
			}
			head += uint64(len(batch))
		}
		pos := head - 50
		var keep []uint64
		for p := uint64(5); p <= pos; p += 5 {
			keep = append(keep, p)
		}
		fmt.Printf("compact %d\n", pos)
		if _, err := s.Compact(ctx, crashUser, spool.Checkpoint{Pos: pos, Data: crashCheckpoint(pos)}, keep); err != nil {
			fmt.Fprintln(os.Stderr, "helper: compact:", err)
			return 1
		}
		fmt.Printf("done %d\n", pos)
	}
	return 0
}

// TestCrashDuringCompaction SIGKILLs a process that appends and compacts a
// large log at random moments. After each kill the spool must hold either
// the old checkpoint and entries or the new ones, never a mix: every entry
// up to the checkpoint present exactly when kept, every entry after it
// present, all intact, and the last acknowledged compaction durable.
func TestCrashDuringCompaction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	midway := 0
	const rounds = 5
	for r := 0; r < rounds; r++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), compactHelperEnv+"=1", "HELPER_DIR="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting compacting process: %v", err)
		}
		lines := make(chan string, 1<<12)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill at a random moment after the first compaction started.
		last := ""
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("round %d: compacting process ended early: %s", r, stderr.String())
			}
			if !strings.HasPrefix(l, "compact ") {
				t.Fatalf("round %d: first line %q", r, l)
			}
			last = l
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: no compaction started within 60 s", r)
		}
		delay := time.Duration(rand.IntN(2500)) * time.Millisecond
		time.Sleep(delay)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("killing the compacting process: %v", err)
		}
		cmd.Wait()
		var done uint64
		for l := range lines {
			var p uint64
			if _, err := fmt.Sscanf(l, "done %d", &p); err == nil {
				done = p
			}
			last = l
		}
		if strings.HasPrefix(last, "compact ") {
			midway++
		}
		cp := checkCrashLog(t, dir, done)
		t.Logf("round %d: killed after %v, last line %q, checkpoint at %d", r, delay, last, cp)
	}
	t.Logf("%d of %d kills came between the start and the end of a Compact", midway, rounds)
}

// checkCrashLog opens the spool and checks it as TestCrashDuringCompaction
// describes; done is the last acknowledged compaction's position.
func checkCrashLog(t *testing.T, dir string, done uint64) uint64 {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("reopening after the kill: %v", err)
	}
	defer s.Close()
	var ok string
	if err := s.rdb.QueryRowContext(ctxT(t), "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q, %v", ok, err)
	}
	cp, err := s.LatestCheckpoint(ctxT(t), crashUser)
	if errors.Is(err, spool.ErrNoCheckpoint) {
		cp = spool.Checkpoint{}
	} else if err != nil {
		t.Fatal(err)
	} else if !bytes.Equal(cp.Data, crashCheckpoint(cp.Pos)) {
		t.Fatalf("checkpoint at %d holds %d bytes that are not its own", cp.Pos, len(cp.Data))
	}
	if cp.Pos < done {
		t.Fatalf("checkpoint at %d, but the compaction at %d was acknowledged", cp.Pos, done)
	}
	head, err := s.Head(ctxT(t), crashUser)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(0) // the next position expected in the log
	next := func() {
		for want++; want <= cp.Pos && !crashKept(want); want++ {
		}
	}
	next()
	after := uint64(0)
	for i := 0; i < 1_000_000; i++ {
		es, err := s.Read(ctxT(t), crashUser, after, 1000, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			if e.Pos != want {
				t.Fatalf("checkpoint at %d: found entry %d where entry %d was expected (a mix of two states)", cp.Pos, e.Pos, want)
			}
			if !bytes.Equal(e.Data, crashEntry(e.Pos)) {
				t.Fatalf("entry %d is damaged", e.Pos)
			}
			next()
		}
		after = es[len(es)-1].Pos
	}
	if want != head+1 {
		t.Fatalf("checkpoint at %d, head %d: log ends before entry %d", cp.Pos, head, want)
	}
	return cp.Pos
}
