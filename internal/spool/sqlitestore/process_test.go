package sqlitestore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cspool/internal/spool"
)

// The test binary doubles as an appending process: with helperEnv set,
// TestMain runs appendProcess instead of the tests (and compactProcess with
// compactHelperEnv).
const helperEnv = "CSPOOL_SQLITESTORE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(appendProcess())
	}
	if os.Getenv(compactHelperEnv) != "" {
		os.Exit(compactProcess())
	}
	os.Exit(m.Run())
}

// helperConfig is what the parent tells an appending process.
type helperConfig struct {
	dir        string
	tag        string   // unique per process, part of every batch id
	users      []string // users to append to, in turn
	batches    int      // batches per goroutine
	goroutines int
}

func (c helperConfig) env() []string {
	return append(os.Environ(),
		helperEnv+"=1",
		"HELPER_DIR="+c.dir,
		"HELPER_TAG="+c.tag,
		"HELPER_USERS="+strings.Join(c.users, ","),
		"HELPER_BATCHES="+strconv.Itoa(c.batches),
		"HELPER_GOROUTINES="+strconv.Itoa(c.goroutines),
	)
}

// batchEntry is entry i of a batch of n: "id i n " and some padding, so a
// reader can check that every batch is whole and in place.
func batchEntry(id string, i, n, pad int) []byte {
	return fmt.Appendf(nil, "%s %d %d %s", id, i, n, strings.Repeat("x", pad))
}

// appendProcess appends batches and prints "ack USER FIRST N ID" for each
// acknowledged one, as soon as Append returns.
func appendProcess() int {
	batches, _ := strconv.Atoi(os.Getenv("HELPER_BATCHES"))
	goroutines, _ := strconv.Atoi(os.Getenv("HELPER_GOROUTINES"))
	users := strings.Split(os.Getenv("HELPER_USERS"), ",")
	tag := os.Getenv("HELPER_TAG")
	s, err := Open(os.Getenv("HELPER_DIR"), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer s.Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := false
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				user := users[(g+b)%len(users)]
				n := 1 + rand.IntN(5)
				id := fmt.Sprintf("%s-g%d-b%d", tag, g, b)
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = batchEntry(id, i, n, rand.IntN(3000))
				}
				first, err := s.Append(context.Background(), user, batch)
				mu.Lock()
				if err != nil {
					fmt.Fprintln(os.Stderr, "helper: append:", err)
					failed = true
				} else {
					fmt.Printf("ack %s %d %d %s\n", user, first, n, id)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed {
		return 1
	}
	return 0
}

// ackLine is one parsed acknowledgement.
type ackLine struct {
	user  string
	first uint64
	n     int
	id    string
}

func parseAck(line string) (ackLine, error) {
	var a ackLine
	_, err := fmt.Sscanf(line, "ack %s %d %d %s", &a.user, &a.first, &a.n, &a.id)
	return a, err
}

// helper is a running appending process.
type helper struct {
	cmd    *exec.Cmd
	acks   chan ackLine // closed at the end of its output
	stderr strings.Builder
}

func startHelper(t *testing.T, c helperConfig) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = c.env()
	h := &helper{cmd: cmd, acks: make(chan ackLine, 1<<16)}
	cmd.Stderr = &h.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting appending process: %v", err)
	}
	go func() {
		defer close(h.acks)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a, err := parseAck(sc.Text())
			if err != nil {
				t.Errorf("appending process printed %q: %v", sc.Text(), err)
				continue
			}
			h.acks <- a
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return h
}

// collect returns all acknowledgements once the output has ended.
func (h *helper) collect() []ackLine {
	var acks []ackLine
	for a := range h.acks {
		acks = append(acks, a)
	}
	return acks
}

// checkLogs verifies every user's log: positions dense from 1 to the head,
// every batch whole, contiguous and present once, and every acknowledged
// batch at its acknowledged position. It returns the number of batches.
func checkLogs(t *testing.T, s *Store, users []string, acks []ackLine) int {
	t.Helper()
	type place struct {
		user  string
		first uint64
	}
	found := map[string]place{}
	for _, user := range users {
		head, err := s.Head(ctxT(t), user)
		if err != nil {
			t.Fatal(err)
		}
		var es []spool.Entry
		after := uint64(0)
		for i := 0; i < 100_000; i++ {
			page, err := s.Read(ctxT(t), user, after, 500, 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			es = append(es, page...)
			after = page[len(page)-1].Pos
		}
		if uint64(len(es)) != head {
			t.Errorf("user %s: %d entries, head %d", user, len(es), head)
		}
		for i := 0; i < len(es); {
			if es[i].Pos != uint64(i+1) {
				t.Fatalf("user %s: entry %d at position %d: not dense", user, i+1, es[i].Pos)
			}
			var id string
			var k, n int
			if _, err := fmt.Sscanf(string(es[i].Data), "%s %d %d", &id, &k, &n); err != nil || k != 0 {
				t.Fatalf("user %s position %d: %q does not start a batch", user, es[i].Pos, es[i].Data[:min(40, len(es[i].Data))])
			}
			if p, dup := found[id]; dup {
				t.Fatalf("batch %s twice: %s@%d and %s@%d", id, p.user, p.first, user, es[i].Pos)
			}
			found[id] = place{user, es[i].Pos}
			for j := 0; j < n; j++ {
				var id2 string
				var k2, n2 int
				if i+j >= len(es) {
					t.Fatalf("user %s: batch %s cut short at the end of the log: %d of %d entries", user, id, j, n)
				}
				if _, err := fmt.Sscanf(string(es[i+j].Data), "%s %d %d", &id2, &k2, &n2); err != nil || id2 != id || k2 != j || n2 != n {
					t.Fatalf("user %s position %d: entry %q, want entry %d of %d of batch %s", user, es[i+j].Pos, es[i+j].Data[:min(40, len(es[i+j].Data))], j, n, id)
				}
			}
			i += n
		}
	}
	for _, a := range acks {
		p, ok := found[a.id]
		if !ok {
			t.Errorf("acknowledged batch %s (%s@%d) is missing", a.id, a.user, a.first)
		} else if p != (place{a.user, a.first}) {
			t.Errorf("acknowledged batch %s at %s@%d, found at %s@%d", a.id, a.user, a.first, p.user, p.first)
		}
	}
	return len(found)
}

// TestCrashLosesNothingAcknowledged kills an appending process with SIGKILL
// at a random moment, several times over the same spool, and checks that
// every acknowledged batch survived whole and no partial batch is visible.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users := []string{"alice", "bob", "carol"}
	var acks []ackLine
	const rounds = 4
	for r := 0; r < rounds; r++ {
		h := startHelper(t, helperConfig{dir: dir, tag: fmt.Sprintf("r%d", r), users: users, batches: 100_000, goroutines: 4})
		select {
		case a, ok := <-h.acks:
			if !ok {
				h.cmd.Wait()
				t.Fatalf("round %d: appending process ended before its first append: %s", r, h.stderr.String())
			}
			acks = append(acks, a)
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: no append acknowledged within 60 s", r)
		}
		delay := time.Duration(50+rand.IntN(250)) * time.Millisecond
		time.Sleep(delay)
		if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("killing the appending process: %v", err)
		}
		h.cmd.Wait()
		round := h.collect()
		acks = append(acks, round...)
		t.Logf("round %d: killed after %v, %d acknowledged batches", r, delay, len(round)+1)
	}
	s := openT(t, dir, Options{})
	n := checkLogs(t, s, users, acks)
	t.Logf("%d batches in the logs, %d acknowledged", n, len(acks))
}

// TestTwoProcesses has two processes append to the same users at once while
// this one waits for their appends.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users := []string{"u1", "u2", "u3"}
	// Only a datagram can wake this store's waiters quickly.
	s := openT(t, dir, Options{FallbackInterval: time.Hour})
	woke := make(chan error, 1)
	go func() { woke <- s.Wait(ctxT(t), "u2", 0) }()
	start := time.Now()
	hs := []*helper{
		startHelper(t, helperConfig{dir: dir, tag: "p1", users: users, batches: 60, goroutines: 4}),
		startHelper(t, helperConfig{dir: dir, tag: "p2", users: users, batches: 60, goroutines: 4}),
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		t.Logf("woken by another process %v after starting it", time.Since(start))
	case <-time.After(60 * time.Second):
		t.Fatal("no wake-up from the appending processes within 60 s")
	}
	var acks []ackLine
	for i, h := range hs {
		acks = append(acks, h.collect()...)
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("appending process %d: %v\n%s", i+1, err, h.stderr.String())
		}
	}
	if len(acks) != 2*60*4 {
		t.Fatalf("%d acknowledged batches, want %d", len(acks), 2*60*4)
	}
	if n := checkLogs(t, s, users, acks); n != len(acks) {
		t.Fatalf("%d batches in the logs, %d acknowledged", n, len(acks))
	}
}
