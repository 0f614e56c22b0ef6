package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/spool/sqlitestore"
)

// sharedStores opens two handles on one new store, as two server
// processes on one store open it: two SQLite handles on one spool
// directory, or two pools on one PostgreSQL database.
var sharedStores = []struct {
	name string
	open func(t *testing.T) (spool.Store, spool.Store)
}{
	{"sqlite", func(t *testing.T) (spool.Store, spool.Store) {
		dir := t.TempDir()
		var st [2]spool.Store
		for i := range st {
			s, err := sqlitestore.Open(dir, sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			st[i] = s
		}
		return st[0], st[1]
	}},
	{"postgres", func(t *testing.T) (spool.Store, spool.Store) {
		dsn := pgtest.Database(t)
		var st [2]spool.Store
		for i := range st {
			s, err := pgstore.Open(testCtx(t), dsn, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			st[i] = s
		}
		return st[0], st[1]
	}},
}

// serveOn starts an API server of e's users and spool key on st, on a
// loopback listener of its own; mod adjusts its config.
func (e *env) serveOn(t *testing.T, st spool.Store, mod func(*Config)) string {
	t.Helper()
	cfg := Config{Store: st, Users: e.users, SpoolKey: e.spoolK.Public(), Logger: testLogger(t),
		Started: time.Now().Add(-time.Hour)}
	if mod != nil {
		mod(&cfg)
	}
	return serve(t, NewServer(cfg)).URL
}

// signedAppend is an append request signed by key, as it crossed the
// network: send gives it, the same bytes, to any server.
type signedAppend struct {
	path   string
	header http.Header
	body   []byte
}

func newSignedAppend(t *testing.T, user string, key *keys.SecretKey, batch [][]byte) *signedAppend {
	t.Helper()
	body := EncodeBatch(batch)
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/users/"+user+"/entries", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ContentType)
	if err := SignRequest(req, body, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	return &signedAppend{path: req.URL.Path, header: req.Header, body: body}
}

// appendAnswer is what a server answered to a signed append.
type appendAnswer struct {
	status int
	res    appendResult
	msg    string
}

func (a appendAnswer) String() string {
	if a.status == http.StatusOK {
		return "200 " + strings.TrimSpace(string(must(json.Marshal(a.res))))
	}
	return http.StatusText(a.status) + ": " + a.msg
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func (sa *signedAppend) send(t *testing.T, base string) appendAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, base+sa.path, bytes.NewReader(sa.body))
	if err != nil {
		t.Error(err)
		return appendAnswer{}
	}
	req.Header = sa.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return appendAnswer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := appendAnswer{status: resp.StatusCode}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &a.res); err != nil {
			t.Errorf("answer %q: %v", b, err)
		}
	} else {
		var eb struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &eb)
		a.msg = eb.Error
	}
	return a
}

// TestDeliveryOnceAcrossServers: two server processes on one store (two
// handles on one SQLite spool, two pools on one PostgreSQL database), and
// the same signed delivery sent to both, as a load balancer retries a POST
// that timed out, or a captured request is replayed to each: the log holds
// it once, and every answer is the first one's, 200 with its position, so
// that `cspool deliver` reports the delivery once. So too when both copies
// arrive at once, for a user's own append without if_head, and for the
// copy sent again to the process that appended it. A copy signed by
// another key with the same nonce is another request; a replay after the
// window is refused as before; and a delivery refused (over quota) is not
// recorded, and its copy to the same process is refused as a replay.
func TestDeliveryOnceAcrossServers(t *testing.T) {
	for _, tc := range sharedStores {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			ctx := testCtx(t)
			one, two := tc.open(t)
			a, b := e.serveOn(t, one, nil), e.serveOn(t, two, nil)
			head := func() uint64 {
				t.Helper()
				h, err := one.Head(ctx, "alice")
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			want := func(what string, got appendAnswer, first uint64, count int) {
				t.Helper()
				if got.status != http.StatusOK || got.res.First != first || got.res.Count != count {
					t.Errorf("%s: %v; want 200 {first %d, count %d}", what, got, first, count)
				}
			}

			d := newSignedAppend(t, "alice", e.spoolK, [][]byte{e.delivery(t, "alice", "Subject: once\r\n\r\nx\r\n")})
			want("the delivery", d.send(t, a), 1, 1)
			want("the same request to the second process", d.send(t, b), 1, 1)
			want("the same request to the first process again", d.send(t, a), 1, 1)
			if h := head(); h != 1 {
				t.Fatalf("head %d after one delivery sent three times, want 1", h)
			}

			// Both copies at once: one appends, both answers name it.
			pair := newSignedAppend(t, "alice", e.spoolK, [][]byte{
				e.delivery(t, "alice", "Subject: twice\r\n\r\nx\r\n"), e.delivery(t, "alice", "Subject: twice more\r\n\r\nx\r\n")})
			var answers [2]appendAnswer
			var wg sync.WaitGroup
			for i, base := range []string{a, b} {
				wg.Go(func() { answers[i] = pair.send(t, base) })
			}
			wg.Wait()
			want("a delivery of two sent to both at once, first answer", answers[0], 2, 2)
			want("a delivery of two sent to both at once, second answer", answers[1], 2, 2)
			if h := head(); h != 3 {
				t.Fatalf("head %d after a delivery of two sent to both at once, want 3", h)
			}

			// A user's own append without if_head is recorded the same way.
			u := newSignedAppend(t, "alice", e.alice, [][]byte{[]byte("own")})
			want("alice's append", u.send(t, b), 4, 1)
			want("alice's append to the other process", u.send(t, a), 4, 1)

			// The same timestamp and nonce under another key is another
			// request.
			other := newSignedAppend(t, "bob", e.bob, [][]byte{[]byte("bob's")})
			other.header.Set("Authorization", resign(t, other, e.bob, u.header))
			want("bob's append with alice's nonce", other.send(t, a), 1, 1)

			// The same key, timestamp and nonce on another request: refused,
			// nothing appended, by a process that has not seen the nonce.
			reuse := newSignedAppend(t, "alice", e.alice, [][]byte{[]byte("another")})
			reuse.header.Set("Authorization", resign(t, reuse, e.alice, u.header))
			if got := reuse.send(t, e.serveOn(t, two, nil)); got.status != http.StatusUnauthorized || !strings.Contains(got.msg, "replay") {
				t.Errorf("another request under a recorded key and nonce: %v; want 401 naming the replay", got)
			}

			// After the window, the timestamp refuses it as before.
			late := e.serveOn(t, two, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(6 * time.Minute) } })
			if got := d.send(t, late); got.status != http.StatusUnauthorized {
				t.Errorf("the delivery sent again 6 minutes later: %v; want 401 for its timestamp", got)
			}
			if h := head(); h != 4 {
				t.Fatalf("head %d at the end, want 4 (each request appended once)", h)
			}

			// A delivery the quota refused leaves no record: its copy to the
			// same process is refused as a replay, as before; another
			// process has no quota here and takes it.
			full := e.serveOn(t, one, func(c *Config) { c.Quota = 1 })
			q := newSignedAppend(t, "alice", e.spoolK, [][]byte{e.delivery(t, "alice", "Subject: full\r\n\r\nx\r\n")})
			if got := q.send(t, full); got.status != http.StatusInsufficientStorage {
				t.Fatalf("a delivery past the quota: %v; want 507", got)
			}
			if got := q.send(t, full); got.status != http.StatusUnauthorized || !strings.Contains(got.msg, "replay") {
				t.Errorf("its copy to the same process: %v; want 401 naming the replay", got)
			}
			want("its copy to a process without the quota", q.send(t, b), 5, 1)
			want("and to the first again", q.send(t, full), 5, 1)
			if h := head(); h != 5 {
				t.Fatalf("head %d, want 5", h)
			}
		})
	}
}

// resign signs sa again with key, with the timestamp and nonce of the
// request whose header is from, and returns its Authorization header.
func resign(t *testing.T, sa *signedAppend, key *keys.SecretKey, from http.Header) string {
	t.Helper()
	a, err := parseAuthorization(sa.header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseAuthorization(from.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	a.ts, a.nonce = f.ts, f.nonce
	a.key = key.Public()
	a.keyText = a.key.String()
	a.sig = key.Sign(signedMessage(http.MethodPost, sa.path, "", a))
	return a.String()
}

// TestBalancerRetriesDelivery: `cspool deliver --spool-server` through a
// load balancer in front of two server processes on one store, which
// sends the delivery to the first, takes its answer as too late, and
// sends the same request to the second, whose answer it gives the
// deliverer. The deliverer gets the position the first appended, and
// the log holds the delivery once.
func TestBalancerRetriesDelivery(t *testing.T) {
	for _, tc := range sharedStores {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			ctx := testCtx(t)
			one, two := tc.open(t)
			lb := newRetryingBalancer(t, e.serveOn(t, one, nil), e.serveOn(t, two, nil))
			lb.deliveries.Store(true)
			c, err := NewClient(lb.srv.URL, "", e.spoolK, &http.Client{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if i == 1 {
					lb.armed.Store(true)
				}
				first, err := c.Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "Subject: through a balancer\r\n\r\nx\r\n")})
				if err != nil || first != uint64(i+1) {
					t.Fatalf("delivery %d: position %d, %v; want %d", i+1, first, err, i+1)
				}
			}
			select {
			case st := <-lb.answers:
				if st[0] != http.StatusOK {
					t.Fatalf("the first server answered the retried delivery %d, want 200 (appended)", st[0])
				}
			default:
				t.Fatal("the balancer retried no delivery")
			}
			if h, err := two.Head(ctx, "alice"); err != nil || h != 3 {
				t.Fatalf("head %d, %v; want 3 (three deliveries, each once)", h, err)
			}
		})
	}
}

// heldAppends is a real store whose next AppendOnce is held until
// release is closed, after it has told entered: a first copy of a request
// still being appended when its second copy comes.
type heldAppends struct {
	*sqlitestore.Store
	entered, release chan struct{}
	once             sync.Once
}

func (h *heldAppends) AppendOnce(ctx context.Context, user string, once spool.Once, limit int64, batch [][]byte) (uint64, bool, error) {
	h.once.Do(func() {
		close(h.entered)
		<-h.release
	})
	return h.Store.AppendOnce(ctx, user, once, limit, batch)
}

// TestDeliveryCopyWhileAppending: the second copy of a delivery reaches
// the process that is still appending the first (a balancer that retries
// on the same server): it waits for the first's answer and gets it, 200
// with its position; before, it was refused as a replay, which makes
// `cspool deliver` exit 77 for a message that was delivered.
func TestDeliveryCopyWhileAppending(t *testing.T) {
	e := newEnv(t, false, nil)
	held := &heldAppends{Store: e.store, entered: make(chan struct{}), release: make(chan struct{})}
	base := e.serveOn(t, held, nil)
	d := newSignedAppend(t, "alice", e.spoolK, [][]byte{e.delivery(t, "alice", "Subject: held\r\n\r\nx\r\n")})
	answers := make(chan appendAnswer, 2)
	go func() { answers <- d.send(t, base) }()
	<-held.entered
	go func() { answers <- d.send(t, base) }()
	// The copy cannot be answered before the first is: the first is held.
	time.Sleep(200 * time.Millisecond)
	close(held.release)
	for range 2 {
		if got := <-answers; got.status != http.StatusOK || got.res.First != 1 || got.res.Count != 1 {
			t.Errorf("answer %v; want 200 {first 1, count 1} to both copies", got)
		}
	}
	if h, err := e.store.Head(testCtx(t), "alice"); err != nil || h != 1 {
		t.Fatalf("head %d, %v; want 1", h, err)
	}
}
