package pgstore

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"
)

// TestPgBouncerSession: two Stores through a real PgBouncer in session
// mode, on a schema chosen by the DSN's search_path, on a database whose
// default is synchronous_commit = off. PgBouncer refuses a startup
// parameter it does not know ("unsupported startup parameter"), so Open
// failed until the store set its parameters by SET; an operator who let
// PgBouncer ignore them (ignore_startup_parameters, the second bouncer
// here) got them dropped without a word, synchronous_commit off included.
// Through both, every guarantee holds: each session keeps its settings,
// both Stores hold the spool key, a third with another key is refused,
// and an append through one wakes a Wait on the other.
func TestPgBouncerSession(t *testing.T) {
	db := pgtest.Database(t)
	pgtest.SetDatabase(t, db, "synchronous_commit", "off")
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"plain", nil},
		{"ignore_startup_parameters", []string{"ignore_startup_parameters = synchronous_commit,statement_timeout,search_path"}},
		// A new client gets the last one's session as it was: until each
		// connection ran DISCARD ALL, the second Open failed with
		// 'prepared statement "stmtcache_..." already exists'.
		{"server_reset_query empty", []string{"server_reset_query ="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.Schema(t, db)
			b := pgtest.StartBouncer(t, pgtest.BouncerConfig{Mode: "session", Settings: tc.extra})
			through := b.DSN(dsn)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			opts := Options{StatementTimeout: 17 * time.Second}
			s0, err := Open(ctx, through, opts)
			if err != nil {
				t.Fatalf("opening the store through PgBouncer in session mode: %v\n%s", err, b.Log())
			}
			if _, err := s0.Head(ctx, "first"); err != nil {
				t.Fatal(err)
			}
			s0.Close() // as a server restarting
			s1, err := Open(ctx, through, opts)
			if err != nil {
				t.Fatalf("opening the store through PgBouncer in session mode: %v\n%s", err, b.Log())
			}
			defer s1.Close()
			s2, err := Open(ctx, through, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			for _, want := range [][2]string{{"synchronous_commit", "on"}, {"statement_timeout", "17s"}} {
				var got string
				if err := s1.Pool().QueryRow(ctx, "SELECT current_setting($1)", want[0]).Scan(&got); err != nil || got != want[1] {
					t.Errorf("%s through PgBouncer: got %q (%v), want %q", want[0], got, err, want[1])
				}
			}
			var schema string
			if err := s1.Pool().QueryRow(ctx, "SELECT to_regclass('cspool_logs')::text, current_schema()").Scan(new(string), &schema); err != nil || schema != pgtestSchema(t, dsn) {
				t.Errorf("the store's schema through PgBouncer: %q (%v), want the DSN's search_path %q", schema, err, pgtestSchema(t, dsn))
			}

			key := bytes.Repeat([]byte{0xb}, 64)
			if err := s1.HoldSpoolKey(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := s2.HoldSpoolKey(ctx, key); err != nil {
				t.Fatal(err)
			}
			s3, err := Open(ctx, through, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			other := bytes.Repeat([]byte{0xd}, 64)
			var live *spool.LiveKeyError
			if err := s3.HoldSpoolKey(ctx, other); !errors.As(err, &live) || live.Holders != 2 {
				t.Fatalf("another key through PgBouncer while two stores hold one: %v, want a *spool.LiveKeyError with 2 holders", err)
			}

			user := "bouncer-" + tc.name
			head, err := s2.Head(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			woke := make(chan error, 1)
			go func() { woke <- s2.Wait(ctx, user, head) }()
			time.Sleep(100 * time.Millisecond) // the Wait is in place (either order passes)
			first, err := s1.Append(ctx, user, [][]byte{[]byte("through the bouncer")})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-woke; err != nil {
				t.Fatalf("a Wait on one store after an append through the other: %v", err)
			}
			es, err := s2.Read(ctx, user, head, 10, 1<<20)
			if err != nil || len(es) != 1 || es[0].Pos != first {
				t.Fatalf("reading the append through the other store: %v, %v", es, err)
			}
		})
	}
}

// pgtestSchema is the schema named by dsn's search_path.
func pgtestSchema(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("search_path")
}

// TestPgBouncerSharedSessionsRefused: through PgBouncer in transaction or
// statement mode, a session's state does not last from one transaction to
// the next and other clients see it, so the spool key's hold (a session
// lock) would be held by a pooled session, shared with whoever gets it
// next, and outlive the process. Open refuses such a DSN with
// ErrSharedSessions. The bouncers are set up as far as an operator gets
// them to work: startup parameters ignored, and pgx's statement cache
// off, as pgx recommends for PgBouncer; until Open checked, the store
// opened and a store with another key recorded it over a running one's.
func TestPgBouncerSharedSessionsRefused(t *testing.T) {
	dsn := pgtest.Database(t)
	for _, mode := range []string{"transaction", "statement"} {
		for _, rr := range []string{"0", "1"} {
			t.Run(mode+"/server_round_robin="+rr, func(t *testing.T) {
				b := pgtest.StartBouncer(t, pgtest.BouncerConfig{Mode: mode, Settings: []string{
					"ignore_startup_parameters = synchronous_commit,statement_timeout", "server_round_robin = " + rr}})
				through := pgtest.WithParam(b.DSN(dsn), "default_query_exec_mode", "exec")
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				// Warm the pool: several idle server sessions, as under load.
				warm := make(chan error, 4)
				for i := 0; i < 4; i++ {
					go func() {
						c, err := pgx.Connect(ctx, through)
						if err == nil {
							_, err = c.Exec(ctx, "SELECT pg_sleep(0.2)")
							c.Close(ctx)
						}
						warm <- err
					}()
				}
				for i := 0; i < 4; i++ {
					if err := <-warm; err != nil {
						t.Fatal(err)
					}
				}
				st, err := Open(ctx, through, Options{})
				if err == nil {
					st.Close()
					t.Fatalf("Open through PgBouncer in %s mode succeeded; want ErrSharedSessions", mode)
				}
				if !errors.Is(err, ErrSharedSessions) {
					t.Fatalf("Open through PgBouncer in %s mode: %v; want ErrSharedSessions", mode, err)
				}
				t.Logf("refused: %v", err)
			})
		}
	}
}

// TestPgBouncerSwitchedToTransaction: a store holds its spool key through
// PgBouncer in session mode, and the bouncer is switched to transaction
// mode under it (pool_mode changed, RELOAD), as an operator may do for the
// other applications. Its connections keep working, but their sessions
// are now shared: the hold's lock stays with a pooled session that other
// clients get. The store finds out at its hold's next keepalive and
// refuses its appends (unavailable: LMTP 451, HTTP 503) with the cause;
// it used to go on appending with no hold of its own. Switched back, it
// holds the key again and appends.
func TestPgBouncerSwitchedToTransaction(t *testing.T) {
	dsn := pgtest.Database(t)
	b := pgtest.StartBouncer(t, pgtest.BouncerConfig{Mode: "session"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log lockedLog
	st, err := Open(ctx, b.DSN(dsn), Options{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.HoldSpoolKey(ctx, bytes.Repeat([]byte{0xe}, 64)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("in session mode")}); err != nil {
		t.Fatal(err)
	}
	b.Reload(t, "transaction")
	// Wait, by condition, for the hold's keepalive (every 5 s idle).
	for {
		lost := st.holdLost.Load()
		if lost != nil && errors.Is(lost.Cause, ErrSharedSessions) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the store never noticed that its hold's session is shared; log:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err = st.Append(ctx, "alice", [][]byte{[]byte("in transaction mode")})
	if !errors.Is(err, spool.ErrUnavailable) || !errors.Is(err, spool.ErrHoldLost) {
		t.Fatalf("an append after the switch: %v, want unavailable (the hold is lost)", err)
	}
	// The hold is marked lost just before the line is logged: wait for it.
	for !strings.Contains(log.String(), "the session holding the spool key is shared") {
		if ctx.Err() != nil {
			t.Fatalf("the log does not say why:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Back in session mode, the store takes the hold again and appends.
	b.Reload(t, "session")
	for st.holdLost.Load() != nil {
		if ctx.Err() != nil {
			t.Fatalf("the store never held its key again in session mode; log:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("in session mode again")}); err != nil {
		t.Fatalf("an append back in session mode: %v", err)
	}
}

// lockedLog keeps what a Store logs, for a test to read.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lockedLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
