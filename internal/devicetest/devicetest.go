// Package devicetest is the rig the device's tests share: one user's spool
// (a real SQLite store in the test's temporary folder) with the user's and
// the spool's keys, entries sealed as the spool or one of the user's
// devices seals them, the spool served over the real HTTP API on loopback
// when a test needs it, and devices (a mail store on disk and its syncer)
// that read the spool, all in the test's process.
//
// Implementation notes. Everything a rig opens or starts is closed or
// stopped when the test ends; a sync loop the rig runs must then end with
// the test's cancellation and nothing else, or the test fails. A device
// reads the spool through syncer.StoreSource unless its Config names a
// Source (an api.Client, a source that can be switched off, a dishonest
// proxy). Package syncer's own tests cannot import this package, which
// imports syncer, and keep a rig of their own.
package devicetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
	"cspool/internal/userdb"
)

// User is the user whose log every rig holds.
const User = "alice"

// DeliveryDate is the date of the deliveries Deliver appends.
var DeliveryDate = time.Date(2025, 11, 24, 10, 0, 0, 0, time.UTC)

// Key makes a key pair; a failure ends the test.
func Key(t testing.TB) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Spool is User's log in a SQLite store under Dir, with the user's key
// and the spool's.
type Spool struct {
	t        testing.TB
	Dir      string
	Store    *sqlitestore.Store // nil between Close and Reopen
	UserKey  *keys.SecretKey
	SpoolKey *keys.SecretKey
}

// NewSpool makes the keys and opens the store in a temporary folder of
// the test's.
func NewSpool(t testing.TB) *Spool {
	t.Helper()
	s := &Spool{t: t, Dir: t.TempDir(), UserKey: Key(t), SpoolKey: Key(t)}
	s.Reopen()
	t.Cleanup(s.Close)
	return s
}

// StoreDir is the store's folder.
func (s *Spool) StoreDir() string { return filepath.Join(s.Dir, "spool") }

// Close closes the store (a second Close does nothing).
func (s *Spool) Close() {
	if s.Store != nil {
		s.Store.Close()
		s.Store = nil
	}
}

// Reopen opens the store again after Close, as a restarted server does.
func (s *Spool) Reopen() {
	s.t.Helper()
	st, err := sqlitestore.Open(s.StoreDir(), sqlitestore.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.Store = st
}

// Seal seals c to the user, signed by author: the spool's key for a
// delivery, the user's for a change one of the user's devices made.
func (s *Spool) Seal(author *keys.SecretKey, c *command.Command) []byte {
	s.t.Helper()
	b, _, err := entry.Seal(c, author, s.UserKey.Public(), User, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// Append seals c as author and appends it to the log, and returns its
// position.
func (s *Spool) Append(author *keys.SecretKey, c *command.Command) uint64 {
	s.t.Helper()
	pos, err := s.Store.Append(context.Background(), User, [][]byte{s.Seal(author, c)})
	if err != nil {
		s.t.Fatal(err)
	}
	return pos
}

// Deliver appends a delivery of body dated DeliveryDate, as the spool's
// delivery does, and returns its position.
func (s *Spool) Deliver(body []byte) uint64 {
	s.t.Helper()
	return s.Append(s.SpoolKey, &command.Command{Kind: command.Deliver, Date: DeliveryDate.UnixMilli(), Body: body})
}

// Head is the log's head.
func (s *Spool) Head() uint64 {
	s.t.Helper()
	h, err := s.Store.Head(context.Background(), User)
	if err != nil {
		s.t.Fatal(err)
	}
	return h
}

// Source is the log as a device in the same process reads it.
func (s *Spool) Source() syncer.StoreSource {
	return syncer.StoreSource{Store: s.Store, User: User}
}

// API is the spool served over the HTTP API.
type API struct {
	Addr string // host:port
	srv  *http.Server
}

// URL is the API's base URL.
func (a *API) URL() string { return "http://" + a.Addr }

// Close stops serving (a second Close does nothing). The clients' idle
// connections to it are closed too: the rig's clients share the API
// client's transport (api.CloseIdleConnections), and a POST sent on a
// connection the stopped server had closed, before the transport
// noticed, fails with EOF instead of reaching the server started again on
// the same address (a POST is not retried by the transport).
func (a *API) Close() {
	if a.srv != nil {
		a.srv.Close()
		a.srv = nil
		api.CloseIdleConnections()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	}
}

// ServeAPI serves the store over the HTTP API on addr ("127.0.0.1:0" for
// any free port; a restarted server passes the address it had), with a
// users file that gives User the rig's user key, until Close or the end of
// the test.
func (s *Spool) ServeAPI(addr string) *API {
	s.t.Helper()
	usersFile := filepath.Join(s.Dir, "users")
	if err := os.WriteFile(usersFile, []byte(User+" "+s.UserKey.Public().String()+"\n"), 0o600); err != nil {
		s.t.Fatal(err)
	}
	users, err := userdb.Load(usersFile, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	a := &API{Addr: ln.Addr().String(), srv: &http.Server{Handler: api.NewServer(api.Config{Store: s.Store, Users: users,
		SpoolKey: s.SpoolKey.Public(), Logger: slog.New(slog.DiscardHandler)})}}
	go a.srv.Serve(ln)
	s.t.Cleanup(a.Close)
	return a
}

// Client is an API client of base signing with key: the user's for a
// device, the spool's for the operator's own requests.
func (s *Spool) Client(base string, key *keys.SecretKey) *api.Client {
	s.t.Helper()
	c, err := api.NewClient(base, User, key, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// Device is one of the user's devices: a mail store on disk and a syncer
// on it.
type Device struct {
	t     testing.TB
	Spool *Spool // the spool it reads
	Name  string
	Store *mailstore.Store
	Sync  *syncer.Syncer
}

// Device opens the mail store Dir/NAME.db, new or as an earlier device of
// that name left it, and a syncer on it. c is the syncer's Config with
// User, UserKey, SpoolKey and Store filled by the rig, Source the spool's
// (Source) when nil, and Logger one that discards when nil (one that
// writes everything to standard error under go test -v).
func (s *Spool) Device(name string, c syncer.Config) *Device {
	s.t.Helper()
	d := &Device{t: s.t, Spool: s, Name: name, Store: OpenStore(s.t, filepath.Join(s.Dir, name+".db"))}
	d.Sync = s.Syncer(d.Store, c)
	return d
}

// Running is Device with its sync loop running until the test ends.
func (s *Spool) Running(name string, c syncer.Config) *Device {
	s.t.Helper()
	d := s.Device(name, c)
	d.Run()
	return d
}

// Syncer makes a syncer on ms with c filled as Device fills it.
func (s *Spool) Syncer(ms *mailstore.Store, c syncer.Config) *syncer.Syncer {
	s.t.Helper()
	c.User, c.UserKey, c.SpoolKey, c.Store = User, s.UserKey, s.SpoolKey.Public(), ms
	if c.Source == nil {
		c.Source = s.Source()
	}
	if c.Logger == nil {
		c.Logger = Logger()
	}
	sy, err := syncer.New(c)
	if err != nil {
		s.t.Fatal(err)
	}
	return sy
}

// Logger discards, or under go test -v writes everything to standard
// error.
func Logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// OpenStore opens the mail store at path, closed when the test ends. A
// new store starts as a copy of an empty one made once per test process:
// creating the schema takes most of a second under the race detector, and
// every device of every test needs a store.
func OpenStore(t testing.TB, path string) *mailstore.Store {
	t.Helper()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		b, err := emptyStore()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := mailstore.Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	return ms
}

// Run runs the device's sync loop until the test ends.
func (d *Device) Run() { Run(d.t, d.Sync) }

// Run runs sy's sync loop until the test ends, when the loop must end
// with the test's cancellation.
func Run(t testing.TB, sy *syncer.Syncer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sy.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("sync loop ended with %v, want the test's cancellation", err)
		}
	})
}

// Synced waits (at most 10 s) until the device has applied the log up to
// pos.
func (d *Device) Synced(pos uint64) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Sync.WaitApplied(ctx, pos); err != nil {
		d.t.Fatalf("device %s did not apply position %d: %v", d.Name, pos, err)
	}
}

// Message is a stored message with its envelope decoded.
type Message struct {
	*mailstore.Message
	Envelope *imap.Envelope
}

// Messages returns the messages of the mailbox named name with their raw
// bytes and envelopes, in UID order.
func Messages(t testing.TB, ms *mailstore.Store, name string) []Message {
	t.Helper()
	ctx := context.Background()
	mb, err := ms.MailboxByName(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []Message
	if err := ms.Scan(ctx, mb.ID, mailstore.WantRaw|mailstore.WantEnvelope, func(m *mailstore.Message) error {
		env, err := mimeform.DecodeEnvelope(m.Envelope)
		out = append(out, Message{Message: m, Envelope: env})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// WaitMessages waits (at most d) until the mailbox holds at least n
// messages and returns them.
func WaitMessages(t testing.TB, ms *mailstore.Store, name string, n int, d time.Duration) []Message {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if got := Messages(t, ms, name); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages after %v, want %d", name, len(Messages(t, ms, name)), d, n)
		}
	}
}

// empty is the file of a new mail store, made once.
var empty struct {
	once sync.Once
	b    []byte
	err  error
}

// emptyStore returns the file of a new, empty mail store: mailstore.Open
// makes it in a folder of its own, which is removed once it is read.
func emptyStore() ([]byte, error) {
	empty.once.Do(func() {
		dir, err := os.MkdirTemp("", "cspool-devicetest-")
		if err != nil {
			empty.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "empty.db")
		ms, err := mailstore.Open(path, mimeform.Parser{})
		if err != nil {
			empty.err = err
			return
		}
		if empty.err = ms.Close(); empty.err != nil {
			return
		}
		// Closed, the store is its one file: the WAL was checkpointed.
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
			empty.err = fmt.Errorf("the empty mail store kept a WAL of %d bytes after closing", fi.Size())
			return
		}
		empty.b, empty.err = os.ReadFile(path)
	})
	return empty.b, empty.err
}
