package syncer

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// httpSpool is a real spool for benchmarks: the SQLite store behind the
// HTTP API on a loopback port that stays the same across restarts.
type httpSpool struct {
	tb        testing.TB
	dir, addr string
	user      *keys.SecretKey
	spoolKey  *keys.SecretKey
	users     *userdb.DB
	store     *sqlitestore.Store
	srv       *http.Server
	quiet     *slog.Logger
	mod       func(*api.Config) // if set, adjusts the server's config at each start
}

func newHTTPSpool(tb testing.TB) *httpSpool {
	tb.Helper()
	h := &httpSpool{tb: tb, dir: tb.TempDir(), quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if h.user, err = keys.Generate(rand.Reader); err != nil {
		tb.Fatal(err)
	}
	if h.spoolKey, err = keys.Generate(rand.Reader); err != nil {
		tb.Fatal(err)
	}
	users := filepath.Join(h.dir, "users")
	if err := os.WriteFile(users, []byte("alice "+h.user.Public().String()+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	if h.users, err = userdb.Load(users, nil); err != nil {
		tb.Fatal(err)
	}
	if h.store, err = sqlitestore.Open(filepath.Join(h.dir, "spool"), sqlitestore.Options{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.stop(); h.store.Close() })
	h.start()
	return h
}

// start serves the store on the spool's address.
func (h *httpSpool) start() {
	h.tb.Helper()
	addr := h.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for try := 0; try < 50; try++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.tb.Fatal(err)
	}
	h.addr = ln.Addr().String()
	cfg := api.Config{Store: h.store, Users: h.users, SpoolKey: h.spoolKey.Public(), Logger: h.quiet}
	if h.mod != nil {
		h.mod(&cfg)
	}
	h.srv = &http.Server{Handler: api.NewServer(cfg)}
	go h.srv.Serve(ln)
}

// stop closes the listener and every connection: to a device, the server
// is gone.
func (h *httpSpool) stop() {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
}

// device opens a store and a syncer on the spool, as the daemon is set up.
func (h *httpSpool) device(name string) (*Syncer, *mailstore.Store) {
	h.tb.Helper()
	return h.deviceWith(name, Config{})
}

// deviceWith is device with more of the syncer's settings: cfg's user,
// keys and store are the spool's, its source the API client and its
// logger quiet unless set.
func (h *httpSpool) deviceWith(name string, cfg Config) (*Syncer, *mailstore.Store) {
	h.tb.Helper()
	ms, err := mailstore.Open(filepath.Join(h.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		h.tb.Fatal(err)
	}
	h.tb.Cleanup(func() { ms.Close() })
	client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		h.tb.Fatal(err)
	}
	if cfg.Source == nil {
		cfg.Source = client
	}
	if cfg.Logger == nil {
		cfg.Logger = h.quiet
	}
	cfg.User, cfg.UserKey, cfg.SpoolKey, cfg.Store = "alice", h.user, h.spoolKey.Public(), ms
	cfg.Permanent, cfg.CheckpointMin = api.Hint, -1
	cfg.Unreachable = func(err error) bool { return errors.Is(err, api.ErrTransport) }
	s, err := New(cfg)
	if err != nil {
		h.tb.Fatal(err)
	}
	return s, ms
}

// BenchmarkOfflineDrain: device a makes 1,000 changes (a flag on each of
// 1,000 messages, one command each, as a client reading through a mailbox
// does) while the spool server is stopped; then the server starts again.
// Reported: the time from its return (listening again) until a's queue is
// empty (ms-to-empty-queue) and until device b has applied them all
// (ms-to-other-device); and, for comparison, the time the same 1,000
// changes take made online one after the other (ms-online).
func BenchmarkOfflineDrain(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	var empty, other, online time.Duration
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		h := newHTTPSpool(b)
		cl, err := api.NewClient("http://"+h.addr, "alice", h.spoolKey, nil)
		if err != nil {
			b.Fatal(err)
		}
		var batch [][]byte
		for j := 0; j < n; j++ {
			e, _, err := entry.Seal(msg(j), h.spoolKey, h.user.Public(), "alice", nil)
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, e)
		}
		if _, err := cl.Append(ctx, "alice", batch); err != nil {
			b.Fatal(err)
		}
		a, msa := h.device("a")
		o, _ := h.device("b")
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{}, 2)
		for _, s := range []*Syncer{a, o} {
			go func() { s.Run(runCtx); done <- struct{}{} }()
		}
		wait := func(what string, cond func() bool) {
			deadline := time.Now().Add(2 * time.Minute)
			for !cond() {
				if time.Now().After(deadline) {
					b.Fatalf("not within 2 minutes: %s", what)
				}
				time.Sleep(time.Millisecond)
			}
		}
		wait("both devices synced", func() bool { return a.Status().Position == n && o.Status().Position == n })
		var ids []command.ID
		err = msa.Scan(ctx, mustInbox(b, msa), 0, func(m *mailstore.Message) error { ids = append(ids, m.ID); return nil })
		if err != nil || len(ids) != n {
			b.Fatalf("%d messages (%v), want %d", len(ids), err, n)
		}
		// Online first, for comparison: one flag each, sent as made.
		start := time.Now()
		for _, id := range ids {
			if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$Online"}, IDs: []command.ID{id}}); err != nil {
				b.Fatal(err)
			}
		}
		online += time.Since(start)
		if a.Status().Queued != 0 {
			b.Fatalf("%d changes queued while the spool answered", a.Status().Queued)
		}

		h.stop()
		wait("a noticing the spool is gone", func() bool { return a.Status().LastError != "" })
		for _, id := range ids {
			outs, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}})
			if err != nil || outs[0].Status != mailstore.Applied {
				b.Fatalf("change while offline: %+v, %v", outs, err)
			}
		}
		if q := a.Status().Queued; q != n {
			b.Fatalf("%d queued, want %d", q, n)
		}
		head := uint64(2 * n)
		b.StartTimer()
		h.start()
		back := time.Now()
		wait("a's queue empty", func() bool { return a.Status().Queued == 0 })
		empty += time.Since(back)
		wait("b showing the changes", func() bool { return o.Status().Position >= head+n })
		other += time.Since(back)
		b.StopTimer()
		cancel()
		<-done
		<-done
	}
	b.ReportMetric(float64(empty.Milliseconds())/float64(b.N), "ms-to-empty-queue")
	b.ReportMetric(float64(other.Milliseconds())/float64(b.N), "ms-to-other-device")
	b.ReportMetric(float64(online.Milliseconds())/float64(b.N), "ms-online")
}

func mustInbox(tb testing.TB, ms *mailstore.Store) command.ID {
	mb, err := ms.MailboxByName(context.Background(), "INBOX")
	if err != nil {
		tb.Fatal(err)
	}
	return mb.ID
}
