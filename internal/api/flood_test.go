package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// flood sends GET head requests for alice's log from workers goroutines,
// each signed by key(i) (i counts the requests), until n are sent or d has
// passed, and returns how many got each status.
func (e *env) flood(t *testing.T, workers, n int, d time.Duration, sign func(req *http.Request, i int)) map[int]int {
	t.Helper()
	return e.floodUntil(t, workers, n, d, nil, sign)
}

// floodUntil is flood that also stops before request i once enough(i)
// is true (nil: never).
func (e *env) floodUntil(t *testing.T, workers, n int, d time.Duration, enough func(i int) bool, sign func(req *http.Request, i int)) map[int]int {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer hc.CloseIdleConnections()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := int(next.Add(1))
				if i > n || enough != nil && enough(i) {
					return
				}
				req, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/head", nil)
				if err != nil {
					t.Error(err)
					return
				}
				sign(req, i)
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("flood request %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return statuses
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// legit runs alice, bob (reading and appending their logs) and the spool key
// (appending to both) until stop is closed or each has made perKey
// requests, and returns their failures.
func (e *env) legit(t *testing.T, stop <-chan struct{}, perKey int) (ok int, failures []string) {
	t.Helper()
	ctx := testCtx(t)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	record := func(who string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", who, err))
		} else {
			ok++
		}
	}
	for _, u := range []struct {
		name string
		key  *keys.SecretKey
	}{{"alice", e.alice}, {"bob", e.bob}} {
		c := e.client(t, u.name, u.key)
		wg.Go(func() {
			for i := 0; i < perKey && !stopped(stop); i++ {
				if i%2 == 0 {
					_, err := c.Append(ctx, u.name, [][]byte{fmt.Appendf(nil, "%s %d", u.name, i)})
					record(u.name+" append", err)
				} else {
					_, _, err := c.Read(ctx, 0, 10, 0, 0)
					record(u.name+" read", err)
				}
			}
		})
	}
	spool := e.client(t, "", e.spoolK)
	mail := [][]byte{e.delivery(t, "alice", "delivery"), e.delivery(t, "bob", "delivery")}
	wg.Go(func() {
		for i := 0; i < perKey && !stopped(stop); i++ {
			_, err := spool.Append(ctx, []string{"alice", "bob"}[i%2], [][]byte{mail[i%2]})
			record("spool append", err)
		}
	})
	wg.Wait()
	return ok, failures
}

// TestStrangerFlood: a stranger signs requests with keys nobody registered,
// as fast as it can, while the users and the spool key keep working. The
// budget per key is small (the size of the whole cache that such a flood
// used to fill, answering 503 to everyone); the stranger never reaches it.
// The legitimate clients start once the flood has sent two budgets' worth,
// so that every one of their requests meets a server the flood has already
// gone past a budget on, and the flood lasts until they are done and it has
// sent four budgets' worth (or 20,000 requests, or the time the test has
// left).
//
// Under the race detector on a loaded machine every request is slow: with a
// budget of 200 (the legitimate clients making 150 requests each) and a
// flood of at most 10 seconds, the flood ran out first and the legitimate
// clients made what fitted in the 10 seconds. The counts are now a quarter,
// in the same proportions, and the flood ends with the legitimate clients,
// however long they take.
func TestStrangerFlood(t *testing.T) {
	one := genKey(t)
	cases := []struct {
		name string
		key  func(t *testing.T, i int) *keys.SecretKey
	}{
		{"a fresh key for each request", func(t *testing.T, _ int) *keys.SecretKey { return genKey(t) }},
		{"one key, a fresh nonce for each request", func(*testing.T, int) *keys.SecretKey { return one }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The two cases side by side: each has its own server.
			t.Parallel()
			const budget = 50
			// No slowing of refusals (TestRefusalsSlowedPerAddress): the
			// flood runs at full speed.
			e := newEnv(t, false, func(c *Config) { c.MaxNonces = budget; c.RefusalRate = -1 })
			stop := make(chan struct{})
			var (
				statuses  map[int]int
				done      = make(chan struct{})
				legitDone = make(chan struct{})
				// Closed as the flood signs request 2*budget: with 4
				// workers, all but 3 of the ones before it are answered.
				passed     = make(chan struct{})
				passedOnce sync.Once
			)
			enough := func(i int) bool { return i > 4*budget && stopped(legitDone) }
			go func() {
				defer close(done)
				defer close(stop)
				statuses = e.floodUntil(t, 4, 20000, timeLeft(t)/2, enough, func(req *http.Request, i int) {
					if i >= 2*budget {
						passedOnce.Do(func() { close(passed) })
					}
					if err := SignRequest(req, nil, tc.key(t, i), time.Now()); err != nil {
						t.Error(err)
					}
				})
			}()
			select {
			case <-passed:
			case <-done:
				t.Fatal("the flood ended before sending two budgets")
			}
			ok, failures := e.legit(t, stop, budget*3/4)
			close(legitDone)
			<-done
			for _, f := range failures {
				t.Errorf("legitimate request failed during the flood: %s", f)
			}
			sent := 0
			for status, n := range statuses {
				sent += n
				if status != http.StatusUnauthorized {
					t.Errorf("%d flood requests got %d, want 401", n, status)
				}
			}
			t.Logf("flood: %d requests %v; legitimate: %d succeeded", sent, statuses, ok)
			if sent < budget {
				t.Fatalf("the flood sent only %d requests", sent)
			}
			if keys, nonces := e.api.nonces.size(); keys > 3 || nonces != ok {
				t.Errorf("nonce cache holds %d keys and %d nonces, want at most 3 keys (alice, bob, spool) and the %d of the legitimate requests", keys, nonces, ok)
			}
			if n := e.users.Len(); n != 2 {
				t.Errorf("users database has %d users after the flood, want 2", n)
			}
		})
	}
}

// TestKeyFloodHurtsOnlyItself: a registered key that uses up its nonce
// budget gets 429 itself; the other users and the spool key go on; requests
// bearing a user's key with bad signatures cost that user nothing.
func TestKeyFloodHurtsOnlyItself(t *testing.T) {
	const budget = 50
	e := newEnv(t, false, func(c *Config) { c.MaxNonces = budget; c.RefusalRate = -1 })
	ctx := testCtx(t)
	alice, bob := e.client(t, "alice", e.alice), e.client(t, "bob", e.bob)
	for i := range budget {
		if _, err := alice.Head(ctx); err != nil {
			t.Fatalf("alice's request %d within her budget: %v", i+1, err)
		}
	}
	_, err := alice.Head(ctx)
	if !errors.Is(err, ErrTooManyRequests) || !IsTemporary(err) {
		t.Errorf("alice over her budget: %v; want ErrTooManyRequests (429), temporary", err)
	}
	resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("alice over her budget: %d %q, Retry-After %q; want 429 with Retry-After", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}

	// Bob's key with signatures that do not verify: refused, and nothing
	// of bob's budget is spent.
	statuses := e.flood(t, 4, 3*budget, 10*time.Second, func(req *http.Request, _ int) {
		if err := SignRequest(req, nil, e.bob, time.Now()); err != nil {
			t.Error(err)
		}
		spoilSignature(req)
	})
	if statuses[http.StatusUnauthorized] != 3*budget {
		t.Errorf("requests with bob's key and bad signatures: %v, want %d × 401", statuses, 3*budget)
	}
	for i := range budget {
		if _, err := bob.Head(ctx); err != nil {
			t.Fatalf("bob's request %d, after alice's flood and the bad signatures: %v", i+1, err)
		}
	}
	if _, err := e.client(t, "", e.spoolK).Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "mail")}); err != nil {
		t.Errorf("spool key after alice's flood: %v", err)
	}
	if keys, nonces := e.api.nonces.size(); keys != 3 || nonces != 2*budget+1 {
		t.Errorf("nonce cache: %d keys, %d nonces; want 3 keys and %d nonces", keys, nonces, 2*budget+1)
	}
}

// TestTestModeFlood: in test mode, a stranger's fresh keys on a name that is
// taken are refused like unknown keys, before any signature check; on free
// names each would register a user (docs/SECURITY.md: test mode is open).
func TestTestModeFlood(t *testing.T) {
	e := newEnv(t, true, func(c *Config) { c.RefusalRate = -1 })
	ctx := testCtx(t)
	carol := e.client(t, "carol", e.alice)
	if _, err := carol.Head(ctx); err != nil {
		t.Fatalf("carol claims her name: %v", err)
	}
	req := func() *http.Request {
		r, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/users/carol/head", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(r, nil, genKey(t), time.Now()); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for range 200 {
		if resp, msg := e.do(t, req()); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a fresh key on carol's name: %d %q, want 401", resp.StatusCode, msg)
		}
	}
	if keys, nonces := e.api.nonces.size(); keys != 1 || nonces != 1 || e.users.Len() != 1 {
		t.Errorf("after 200 strangers on a taken name: %d keys, %d nonces, %d users; want 1, 1, 1", keys, nonces, e.users.Len())
	}
	if _, err := carol.Head(context.Background()); err != nil {
		t.Errorf("carol after the flood: %v", err)
	}
}

// TestRefusalsSlowedPerAddress: once an address has had its rate of
// refusals, the answers to its further refused requests are held, so a
// flood from one address gets few answers; a user on the same address goes
// on. The bound counts every way an answer can come early.
func TestRefusalsSlowedPerAddress(t *testing.T) {
	const rate, workers = 10, 8
	e := newEnv(t, false, func(c *Config) { c.RefusalRate = rate })
	stranger := genKey(t)
	stop := make(chan struct{})
	var statuses map[int]int
	start := time.Now()
	go func() {
		defer close(stop)
		statuses = e.flood(t, workers, 100000, 3*time.Second, func(req *http.Request, _ int) {
			if err := SignRequest(req, nil, stranger, time.Now()); err != nil {
				t.Error(err)
			}
		})
	}()
	ok, failures := e.legit(t, stop, 1000)
	<-stop
	took := time.Since(start).Seconds()
	for _, f := range failures {
		t.Errorf("legitimate request from the flooding address: %s", f)
	}
	n := statuses[http.StatusUnauthorized]
	// Tokens: the burst and the rate; held to the cap without a token: each
	// worker once per maxRefusalDelay; plus one in flight per worker.
	bound := rate*(refusalBurst+took) + workers*(took/maxRefusalDelay.Seconds()+1) + workers
	t.Logf("%d refusals in %.1f s (bound %.0f), %d legitimate requests", n, took, bound, ok)
	if float64(n) > bound || n == 0 || len(statuses) != 1 {
		t.Errorf("flood from one address: %v in %.1f s; want only 401s, at most %.0f", statuses, took, bound)
	}
}

// downUsers is a users database that cannot answer.
type downUsers struct{}

func (downUsers) Check(context.Context, string, keys.PublicKey) error {
	return fmt.Errorf("users table: %w", spool.ErrUnavailable)
}

func (u downUsers) Authorize(ctx context.Context, user string, key keys.PublicKey) error {
	return u.Check(ctx, user, key)
}

func (downUsers) Lookup(context.Context, string) (keys.PublicKey, error) {
	return keys.PublicKey{}, fmt.Errorf("users table: %w", spool.ErrUnavailable)
}

// TestUsersOutageNotHeld: when the users database fails, the 503s are the
// server's, not refusals of the caller: its address's rate is not charged.
func TestUsersOutageNotHeld(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.RefusalRate = 1; c.Users = downUsers{} })
	for i := range 5 {
		resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice})
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("request %d with the users database down: %d %q, want 503", i+1, resp.StatusCode, msg)
		}
	}
	e.api.conns.mu.Lock()
	defer e.api.conns.mu.Unlock()
	for addr, a := range e.api.conns.open {
		if a.refusals != nil { // made at the first refusal charged
			t.Errorf("address %s was charged for the database's failures", addr)
		}
	}
}
