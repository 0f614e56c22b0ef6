package api

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// TestReadsOfManyKeysBounded: several users' keys each open reads of a
// large entry on connections of their own and take nothing of the
// answers, each key within its MaxReadsPerKey. Each read holds its entry
// in the server's memory until its answer is written. Before, nothing
// bounded the reads of all keys together: 5 keys with 3 such reads each
// had all 15 answered, 120 MiB of entries held (the server's heap grew by
// as much), and any number of keys could add theirs. Now the reads of all
// keys together hold at most ReadMemory bytes of entries (4 times
// MaxBody), each key at most a quarter of it (at least MaxBody): a read
// beyond waits CheckpointWait for room, then gets 429 for its key's share
// or 503 for the server's. Once the stalled readers go, every key reads
// again.
func TestReadsOfManyKeysBounded(t *testing.T) {
	const users, perUser, size = 5, 3, 8 << 20
	m := &recMetrics{}
	e := newEnv(t, true, func(c *Config) {
		c.MaxBody = 2 * size // ReadMemory by default 8 entries, a key's share 2
		c.CheckpointWait = time.Second
		c.Metrics = m
	})
	ctx := testCtx(t)
	var clients []*Client
	var raws [][]byte
	for i := range users {
		user, key := fmt.Sprintf("user%d", i), genKey(t)
		if _, err := e.store.Append(ctx, user, [][]byte{make([]byte, size)}); err != nil {
			t.Fatal(err)
		}
		c := e.client(t, user, key)
		if _, _, err := c.Read(ctx, 0, 1, 0, 0); err != nil {
			t.Fatalf("%s's first read: %v", user, err)
		}
		clients = append(clients, c)
		for range perUser {
			raws = append(raws, signedRawBy(t, e, key, "GET", "/v1/users/"+user+"/entries", "after=0&max_count=1"))
		}
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	statuses := make(chan int, len(raws))
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for _, raw := range raws {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		conns = append(conns, conn)
		if _, err := conn.Write(raw); err != nil {
			t.Fatal(err)
		}
		go func() {
			// The status line only: the answer's body is never taken.
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			code := 0
			if f := strings.Fields(line); len(f) > 1 {
				fmt.Sscan(f[1], &code)
			}
			statuses <- code
		}()
	}
	got := map[int]int{}
	for range raws {
		got[<-statuses]++
	}
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	t.Logf("%d reads of a %d-byte entry by %d keys, none taken: %v; the heap in use grew by %.0f MiB",
		len(raws), size, users, got, float64(int64(during.HeapInuse)-int64(before.HeapInuse))/(1<<20))

	budget := 4 * 2 * size
	if want := budget / size; got[http.StatusOK] != want ||
		got[http.StatusTooManyRequests]+got[http.StatusServiceUnavailable] != len(raws)-want {
		t.Errorf("%d reads of a %d-byte entry by %d keys, none taken: %v; want %d answered 200 (%d bytes of entries), the others 429 or 503",
			len(raws), size, users, got, want, budget)
	}
	told := map[string]int{}
	for _, r := range m.readRefusals() {
		told[r]++
	}
	if told[ReadRefusedKeyShare] != got[http.StatusTooManyRequests] || told[ReadRefusedMemory] != got[http.StatusServiceUnavailable] || len(told) > 2 {
		t.Errorf("ReadRefused told %v for the answers %v; want %s for each 429, %s for each 503", told, got, ReadRefusedKeyShare, ReadRefusedMemory)
	}
	for _, conn := range conns {
		conn.Close()
	}
	conns = nil
	for i, c := range clients {
		waitFor(t, fmt.Sprintf("user%d reads again once the stalled readers are gone", i), func() bool {
			_, _, err := c.Read(ctx, 0, 1, 0, 0)
			return err == nil
		})
	}
}

// stallRead opens a read of user's log by key on a connection of its own
// and takes nothing of the answer but its status line, which it returns;
// the connection stays open until the test ends or the caller closes it.
func stallRead(t *testing.T, e *env, key *keys.SecretKey, user, query string) (int, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := conn.Write(signedRawBy(t, e, key, "GET", "/v1/users/"+user+"/entries", query)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	code := 0
	if f := strings.Fields(line); len(f) > 1 {
		fmt.Sscan(f[1], &code)
	}
	return code, conn
}

// TestReadsOfLargeEntriesWithinReadMemory: with other keys' reads holding
// most of ReadMemory, a read's further chunk with an entry larger than
// the room left ends the answer before it (the device reads on from
// there), and a read that starts with that entry waits for room, gets
// 503 without loading it, and is served once the others are gone.
// Before, the answer held both entries whatever the others held, and a
// read refused loaded its entry first. A read larger than the whole
// budget is served when nothing else holds any, and once the reads are
// done they hold nothing. On both stores: over PostgreSQL too, until it
// told the size before loading (spool.SizedReader), a read refused
// loaded its entry first.
func TestReadsOfLargeEntriesWithinReadMemory(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) { readsOfLargeEntriesWithinReadMemory(t, name) })
	}
}

func readsOfLargeEntriesWithinReadMemory(t *testing.T, storeName string) {
	const maxBody, large = 8 << 20, 12 << 20 // ReadMemory 32 MiB
	var told atomic.Int64                    // what MemoryHeld was told, summed
	var store spool.Store
	e := newEnv(t, true, func(c *Config) {
		c.MaxBody = maxBody
		c.CheckpointWait = 300 * time.Millisecond
		c.MemoryHeld = func(d int64) { told.Add(d) }
		if storeName == "postgres" {
			usePostgres(t, c)
		}
		store = c.Store
	})
	ctx := testCtx(t)
	// Entries stored past MaxBody, as before the operator lowered it.
	big := make([]byte, large)
	for _, user := range []string{"bob", "carol"} {
		if _, err := store.Append(ctx, user, [][]byte{big}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Append(ctx, "alice", [][]byte{[]byte("small"), big}); err != nil {
		t.Fatal(err)
	}
	alice := e.client(t, "alice", e.alice)

	var conns []net.Conn
	for _, k := range []struct {
		user string
		key  *keys.SecretKey
	}{{"bob", e.bob}, {"carol", genKey(t)}} {
		code, conn := stallRead(t, e, k.key, k.user, "after=0")
		if code != http.StatusOK {
			t.Fatalf("%s's read of a %d-byte entry, alone in its key's share: status %d, want 200", k.user, large, code)
		}
		conns = append(conns, conn)
	}
	if held, _ := e.api.rdMem.state(); held != 2*large {
		t.Fatalf("two stalled reads of a %d-byte entry hold %d bytes, want %d", large, held, 2*large)
	}
	// The server's collector is told what reads hold (MemoryHeld), as
	// what appends and checkpoints hold.
	if n := told.Load(); n != 2*large {
		t.Fatalf("MemoryHeld told %d bytes held, the reads hold %d", n, 2*large)
	}
	es, _, err := alice.Read(ctx, 0, 10, 64<<20, 0)
	if err != nil || len(es) != 1 || string(es[0].Data) != "small" {
		t.Fatalf("alice's read with %d of %d bytes held: %d entries, %v; want the small entry alone", 2*large, 4*maxBody, len(es), err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = alice.Read(ctx, 1, 10, 64<<20, 0)
	runtime.ReadMemStats(&after)
	if se := (*Error)(nil); !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
		t.Fatalf("alice's read of a %d-byte entry with %d of %d bytes held: %v; want 503", large, 2*large, 4*maxBody, err)
	}
	// The store tells the entry's size before it loads it
	// (spool.SizedReader): a read refused loads nothing.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc >= large/2 {
		t.Errorf("alice's read refused for its %d-byte entry allocated %d bytes; want it never loaded", large, alloc)
	}
	for _, conn := range conns {
		conn.Close()
	}
	waitFor(t, "alice's read of the large entry once the others are gone", func() bool {
		es, _, err := alice.Read(ctx, 1, 10, 64<<20, 0)
		return err == nil && len(es) == 1 && len(es[0].Data) == large
	})
	waitFor(t, "the reads to hold nothing once done, and MemoryHeld told so", func() bool {
		held, _ := e.api.rdMem.state()
		return held == 0 && told.Load() == 0
	})
	// Larger than the whole budget, alone.
	huge := make([]byte, 4*maxBody+1)
	if _, err := store.Append(ctx, "alice", [][]byte{huge}); err != nil {
		t.Fatal(err)
	}
	if es, _, err := alice.Read(ctx, 2, 10, 0, 0); err != nil || len(es) != 1 || len(es[0].Data) != len(huge) {
		t.Fatalf("a read of a %d-byte entry, larger than ReadMemory (%d), nothing else held: %d entries, %v; want it", len(huge), 4*maxBody, len(es), err)
	}
}
