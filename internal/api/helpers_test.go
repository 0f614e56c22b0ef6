package api

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// env is a running API server on a real listener with a SQLite store on
// disk, users alice and bob, and a spool key.
type env struct {
	dir                string
	store              *sqlitestore.Store
	users              *userdb.DB
	api                *Server
	srv                *httptest.Server
	alice, bob, spoolK *keys.SecretKey
	stranger           *keys.SecretKey
}

func genKey(t testing.TB) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// newEnv starts a server; mod adjusts the config; testMode replaces the
// users file with test mode.
func newEnv(t testing.TB, testMode bool, mod func(*Config)) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), alice: genKey(t), bob: genKey(t), spoolK: genKey(t), stranger: genKey(t)}
	var err error
	e.store, err = sqlitestore.Open(e.dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	if testMode {
		e.users, err = userdb.OpenTestMode(e.dir, testLogger(t))
	} else {
		path := filepath.Join(e.dir, "users")
		text := "alice " + e.alice.Public().String() + "\nbob " + e.bob.Public().String() + "\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		e.users, err = userdb.Load(path, testLogger(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	// Started an hour ago: requests signed now are past the restart rule,
	// which TestReplayAfterRestart exercises.
	cfg := Config{Store: e.store, Users: e.users, SpoolKey: e.spoolK.Public(), Logger: testLogger(t),
		Started: time.Now().Add(-time.Hour)}
	if mod != nil {
		mod(&cfg)
	}
	e.api = NewServer(cfg)
	e.srv = serve(t, e.api)
	return e
}

// connCounts returns the connections s admitted and those it is refusing.
func connCounts(s *Server) (open, excess int) { return s.conns.counts() }

// serve serves s on 127.0.0.1 through its connection limit.
func serve(t testing.TB, s *Server) *httptest.Server {
	srv := httptest.NewUnstartedServer(s)
	srv.Listener = s.Listener(srv.Listener)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func (e *env) client(t testing.TB, user string, key *keys.SecretKey) *Client {
	t.Helper()
	c, err := NewClient(e.srv.URL, user, key, e.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// delivery seals msg as the spool key's delivery to user, whose key it
// looks up in e's users: an entry the server accepts from the spool key.
func (e *env) delivery(t testing.TB, user, msg string) []byte {
	t.Helper()
	k, err := e.users.Lookup(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1, Body: []byte(msg)}, e.spoolK, k, user, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCtx is the context of a test's requests: it ends with the time the
// test has left (timeLeft), so that a request slowed by a loaded machine is
// not cut short by a fixed limit, while one that hangs still fails the test
// with its own error before the test binary's timeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeLeft(t))
	t.Cleanup(cancel)
	return ctx
}

// longWait is the wait of a long-poll that a test expects something else
// to end (an append, Shutdown): the server's default MaxWait. earlyBound
// is how long the test waits for that.
const longWait = 5 * time.Minute

// earlyBound is how long a test waits for a long-poll of longWait to be
// ended early: as long as the test may (timeLeft), but less than longWait,
// so that a poll ended only by its wait still fails. It was a few seconds,
// which a loaded machine under the race detector can take with nothing
// wrong.
func earlyBound(t testing.TB) time.Duration {
	return min(timeLeft(t), longWait-time.Minute)
}

// timeLeft is how long t may still wait: the time to its deadline (go test
// -timeout) less a tenth, so that a wait that runs out leaves time to report
// it; 10 minutes with no deadline (benchmarks, -timeout 0). The race detector on a loaded 2-core
// machine makes a test many times slower: a fixed limit chosen on an idle one
// (60 s was) fails there with nothing wrong.
func timeLeft(t testing.TB) time.Duration {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			return time.Until(deadline) * 9 / 10
		}
	}
	return 10 * time.Minute
}
