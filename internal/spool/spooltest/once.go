package spooltest

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool"
)

func (s *suite) onceTests() []namedTest {
	return []namedTest{
		{"AppendOnce", s.testAppendOnce},
		{"AppendOnceConcurrent", s.testAppendOnceConcurrent},
		{"AppendOncePruned", s.testAppendOncePruned},
	}
}

// onceAppender returns st as a OnceAppender: every store must be one.
func onceAppender(t *testing.T, st spool.Store) spool.OnceAppender {
	t.Helper()
	o, ok := st.(spool.OnceAppender)
	if !ok {
		t.Fatalf("%T is not a spool.OnceAppender: deliveries over HTTP through several servers need it", st)
	}
	return o
}

// DeliveryOnce names a delivery as the HTTP API does (spool.Once.ID): the
// request's timestamp (now), a spool key's id, a random nonce; kept for
// six minutes. For the stores' benchmarks of AppendOnce.
func DeliveryOnce() spool.Once {
	o := spool.Once{Expires: time.Now().Add(6 * time.Minute)}
	binary.BigEndian.PutUint64(o.ID[:], uint64(time.Now().Unix()))
	copy(o.ID[8:], "spoolkey")
	rand.Read(o.ID[16:])
	return o
}

// newOnce returns a fresh request name and digest, kept for a minute.
func newOnce() spool.Once {
	var o spool.Once
	rand.Read(o.ID[:])
	rand.Read(o.Digest[:])
	o.Expires = time.Now().Add(time.Minute)
	return o
}

func wantOnce(t *testing.T, what string, first uint64, repeat bool, err error, wantFirst uint64, wantRepeat bool) {
	t.Helper()
	if err != nil || first != wantFirst || repeat != wantRepeat {
		t.Fatalf("%s: at %d, repeat %v, %v; want at %d, repeat %v", what, first, repeat, err, wantFirst, wantRepeat)
	}
}

func wantHead(t *testing.T, st spool.Store, user string, want uint64) {
	t.Helper()
	if h, err := st.Head(ctxT(t), user); err != nil || h != want {
		t.Fatalf("Head(%q) = %d, %v; want %d", user, h, err, want)
	}
}

// testAppendOnce: a request appends once; the same request again appends
// nothing and gets the first position, whatever the limit; another
// request under the same name is refused; a request refused for its
// limit leaves no record; Appended reports what was recorded.
func (s *suite) testAppendOnce(t *testing.T) {
	st := s.store(t)
	o := onceAppender(t, st)
	ctx := ctxT(t)
	mustAppend(t, st, "alice", []byte("before"))
	req := newOnce()
	first, repeat, err := o.AppendOnce(ctx, "alice", req, 0, [][]byte{[]byte("d1"), []byte("d2")})
	wantOnce(t, "the first append", first, repeat, err, 2, false)
	first, repeat, err = o.AppendOnce(ctx, "alice", req, 1, [][]byte{[]byte("d1"), []byte("d2")})
	wantOnce(t, "the same request again, with a limit it is past", first, repeat, err, 2, true)
	wantHead(t, st, "alice", 3)
	checkEntries(t, readAll(t, st, "alice"), 1, [][]byte{[]byte("before"), []byte("d1"), []byte("d2")})
	if first, n, err := o.Appended(ctx, req); err != nil || first != 2 || n != 2 {
		t.Fatalf("Appended: %d, %d, %v; want 2, 2", first, n, err)
	}

	other := req
	other.Digest[0] ^= 1
	if _, _, err := o.AppendOnce(ctx, "alice", other, 0, [][]byte{[]byte("x")}); !errors.Is(err, spool.ErrOnceReused) {
		t.Fatalf("another request under a recorded name: %v, want ErrOnceReused", err)
	}
	if _, _, err := o.Appended(ctx, other); !errors.Is(err, spool.ErrOnceReused) {
		t.Fatalf("Appended of another request under a recorded name: %v, want ErrOnceReused", err)
	}
	wantHead(t, st, "alice", 3)

	refused := newOnce()
	if _, _, err := o.AppendOnce(ctx, "bob", refused, 1, [][]byte{[]byte("too big")}); !errors.Is(err, spool.ErrOverQuota) {
		t.Fatalf("an append past its limit: %v, want ErrOverQuota", err)
	}
	if _, _, err := o.Appended(ctx, refused); !errors.Is(err, spool.ErrNotRecorded) {
		t.Fatalf("Appended of a refused request: %v, want ErrNotRecorded", err)
	}
	first, repeat, err = o.AppendOnce(ctx, "bob", refused, 0, [][]byte{[]byte("fits")})
	wantOnce(t, "the refused request without the limit", first, repeat, err, 1, false)
	if _, _, err := o.Appended(ctx, newOnce()); !errors.Is(err, spool.ErrNotRecorded) {
		t.Fatalf("Appended of an unknown request: %v, want ErrNotRecorded", err)
	}
}

// testAppendOnceConcurrent: the same request through two handles, 8 times
// at once, among other appends: appended once, every call answered with
// its position.
func (s *suite) testAppendOnceConcurrent(t *testing.T) {
	st := s.store(t)
	handles := []spool.Store{st, s.reopen(t, st)}
	ctx := ctxT(t)
	for round := range 4 {
		req := newOnce()
		const callers = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		firsts := map[uint64]int{}
		appended := 0
		for c := range callers {
			wg.Go(func() {
				h := handles[c%2]
				if c%4 == 3 {
					// Other deliveries, recorded or not, between the copies.
					if _, _, err := onceAppender(t, h).AppendOnce(ctx, "alice", newOnce(), 0, [][]byte{[]byte("other")}); err != nil {
						t.Errorf("another delivery: %v", err)
					}
					if _, err := h.Append(ctx, "alice", [][]byte{[]byte("plain")}); err != nil {
						t.Errorf("a plain append: %v", err)
					}
				}
				first, repeat, err := onceAppender(t, h).AppendOnce(ctx, "alice", req, 0, [][]byte{[]byte("copy"), []byte("copy")})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("round %d, copy %d: %v", round, c, err)
					return
				}
				firsts[first]++
				if !repeat {
					appended++
				}
			})
		}
		wg.Wait()
		if appended != 1 || len(firsts) != 1 {
			t.Fatalf("round %d: %d copies of one request appended, answered with positions %v; want 1, one position", round, appended, firsts)
		}
		for first := range firsts {
			es, err := st.Read(ctx, "alice", first-1, 2, 1<<20)
			if err != nil || len(es) != 2 || string(es[0].Data) != "copy" || string(es[1].Data) != "copy" {
				t.Fatalf("round %d: entries at %d: %v, %v; want the request's two", round, first, es, err)
			}
		}
	}
	copies := 0
	for _, e := range readAll(t, st, "alice") {
		if string(e.Data) == "copy" {
			copies++
		}
	}
	if copies != 4*2 {
		t.Fatalf("the log holds %d entries of the 4 requests of 2, want 8", copies)
	}
}

// testAppendOncePruned: a record past its Expires is dropped by a later
// append that records a request, on the other handle too; the request it
// named can then be appended again (the API refuses it before, by its
// timestamp). A record not yet expired stays.
func (s *suite) testAppendOncePruned(t *testing.T) {
	st := s.store(t)
	other := s.reopen(t, st)
	o := onceAppender(t, st)
	ctx := ctxT(t)
	old := newOnce()
	old.Expires = time.Now().Add(-time.Hour)
	first, repeat, err := o.AppendOnce(ctx, "alice", old, 0, [][]byte{[]byte("old")})
	wantOnce(t, "an append whose record has expired already", first, repeat, err, 1, false)
	kept := newOnce()
	first, repeat, err = onceAppender(t, other).AppendOnce(ctx, "bob", kept, 0, [][]byte{[]byte("kept")})
	wantOnce(t, "an append after it", first, repeat, err, 1, false)
	if _, _, err := o.Appended(ctx, old); !errors.Is(err, spool.ErrNotRecorded) {
		t.Fatalf("the expired record after another append: %v, want ErrNotRecorded (dropped)", err)
	}
	if first, n, err := o.Appended(ctx, kept); err != nil || first != 1 || n != 1 {
		t.Fatalf("the record not yet expired: %d, %d, %v; want 1, 1", first, n, err)
	}
	first, repeat, err = o.AppendOnce(ctx, "alice", old, 0, [][]byte{[]byte("old")})
	wantOnce(t, "the request of the dropped record again", first, repeat, err, 2, false)
}
