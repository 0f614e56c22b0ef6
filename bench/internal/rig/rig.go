// Package rig is what the bench programs that measure devices against a
// spool set up the same way: one user's log in a real SQLite store in a
// temporary folder, the user's and the spool's keys, a users file, the
// spool served over the real HTTP API on loopback, deliveries sealed by
// the spool and appended in batches, the user's own commands sealed by a
// device, and devices (a mail store on disk and its sync loop) reading the
// spool through the API client with a counter of requests and bytes.
//
// It is the bench programs' counterpart of internal/devicetest, which
// takes a testing.TB and fails the test; here every failure is an error
// the program reports.
package rig

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

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

// User is the user whose log the rig holds.
const User = "alice"

// Rig is one user's spool, served over the HTTP API.
type Rig struct {
	Dir      string // temporary; removed by Close
	UserKey  *keys.SecretKey
	SpoolKey *keys.SecretKey
	Users    *userdb.DB
	Store    *sqlitestore.Store // under Dir/spool
	URL      string             // the API serving Store

	quiet   *slog.Logger
	closers []func()
}

// New makes the keys, the users file and the store in a new temporary
// folder whose name starts with prefix, and serves the store.
func New(prefix string) (r *Rig, err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	r = &Rig{Dir: dir, quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r.closers = append(r.closers, func() { os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.UserKey, err = keys.Generate(rand.Reader); err != nil {
		return nil, err
	}
	if r.SpoolKey, err = keys.Generate(rand.Reader); err != nil {
		return nil, err
	}
	usersFile := filepath.Join(dir, "users")
	if err := os.WriteFile(usersFile, []byte(User+" "+r.UserKey.Public().String()+"\n"), 0o600); err != nil {
		return nil, err
	}
	if r.Users, err = userdb.Load(usersFile, nil); err != nil {
		return nil, err
	}
	if r.Store, err = sqlitestore.Open(filepath.Join(dir, "spool"), sqlitestore.Options{}); err != nil {
		return nil, err
	}
	st := r.Store
	r.closers = append(r.closers, func() { st.Close() })
	if r.URL, err = r.Serve(r.Store); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops the servers and closes the stores the rig opened, newest
// first, and removes its folder.
func (r *Rig) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// Serve serves st over the HTTP API on a loopback port, with the rig's
// users and spool key, until Close; it returns the server's URL.
func (r *Rig) Serve(st *sqlitestore.Store) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: api.NewServer(api.Config{Store: st, Users: r.Users, SpoolKey: r.SpoolKey.Public(),
		Started: time.Now().Add(-time.Hour)})}
	go srv.Serve(ln)
	r.closers = append(r.closers, func() { srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// Deliver appends n deliveries of Message(i, size, tag), sealed by the
// spool, in batches of 500, and returns each entry's size by position.
func (r *Rig) Deliver(ctx context.Context, n, size int, tag string) (map[uint64]int, error) {
	sizes := make(map[uint64]int, n)
	var batch [][]byte
	for i := 0; i < n; i++ {
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: Message(i, size, tag)},
			r.SpoolKey, r.UserKey.Public(), User, nil)
		if err != nil {
			return nil, err
		}
		if batch = append(batch, b); len(batch) == 500 || i == n-1 {
			first, err := r.Store.Append(ctx, User, batch)
			if err != nil {
				return nil, err
			}
			for j, b := range batch {
				sizes[first+uint64(j)] = len(b)
			}
			batch = batch[:0]
		}
	}
	return sizes, nil
}

// Commands seals the user's commands as one of the user's devices does
// and appends them to the store in batches of 1,000; Flush appends what
// is left.
type Commands struct {
	r     *Rig
	batch [][]byte
}

// Commands starts a batch of the user's commands.
func (r *Rig) Commands() *Commands { return &Commands{r: r} }

// Add seals c, and appends the batch once it holds 1,000 entries.
func (c *Commands) Add(ctx context.Context, cmd *command.Command) error {
	b, _, err := entry.Seal(cmd, c.r.UserKey, c.r.UserKey.Public(), User, nil)
	if err != nil {
		return err
	}
	if c.batch = append(c.batch, b); len(c.batch) == 1000 {
		return c.Flush(ctx)
	}
	return nil
}

// Flush appends the commands not yet appended.
func (c *Commands) Flush(ctx context.Context) error {
	if len(c.batch) == 0 {
		return nil
	}
	_, err := c.r.Store.Append(ctx, User, c.batch)
	c.batch = c.batch[:0]
	return err
}

// Device opens a new device's mail store under the rig's folder and its
// sync loop with the daemon's settings and cfg's (its Store, Source and
// keys are the rig's), reading the API at url through a Counter.
func (r *Rig) Device(name, url string, cfg syncer.Config) (*syncer.Syncer, *mailstore.Store, *Counter, error) {
	ms, err := mailstore.Open(filepath.Join(r.Dir, name+".db"), mimeform.Parser{})
	if err != nil {
		return nil, nil, nil, err
	}
	r.closers = append(r.closers, func() { ms.Close() })
	cnt := &Counter{next: http.DefaultTransport}
	client, err := api.NewClient(url, User, r.UserKey, &http.Client{Transport: cnt})
	if err != nil {
		return nil, nil, nil, err
	}
	cfg.User, cfg.UserKey, cfg.SpoolKey, cfg.Source, cfg.Store = User, r.UserKey, r.SpoolKey.Public(), client, ms
	if cfg.Logger == nil {
		cfg.Logger = r.quiet
	}
	s, err := syncer.New(cfg)
	return s, ms, cnt, err
}

// Counter counts the requests and the bytes of the requests and the
// responses through an http.RoundTripper.
type Counter struct {
	next                   http.RoundTripper
	requests, sent, recved atomic.Int64
}

// RoundTrip counts r and its response's body as it is read.
func (c *Counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	if r.ContentLength > 0 {
		c.sent.Add(r.ContentLength)
	}
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{resp.Body, &c.recved}
	}
	return resp, err
}

// Requests is the number of requests so far.
func (c *Counter) Requests() int64 { return c.requests.Load() }

// Received is the bytes of the responses' bodies read so far.
func (c *Counter) Received() int64 { return c.recved.Load() }

// Snapshot is the number of requests and the bytes both ways so far.
func (c *Counter) Snapshot() (requests, bytes int64) {
	return c.requests.Load(), c.recved.Load() + c.sent.Load()
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

// Message is delivery i of size bytes: a header naming tag and i, and
// lines of text.
func Message(i, size int, tag string) []byte {
	b := fmt.Appendf(nil, "From: s%d@example.org\r\nTo: %s@example.org\r\nSubject: %s %d\r\nMessage-ID: <%d@%s>\r\n\r\n",
		i%50, User, tag, i, i, tag)
	for len(b) < size-2 {
		b = append(b, "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n"...)
	}
	return append(b[:size-2], "\r\n"...)
}

// MB is b in millions of bytes.
func MB(b int64) float64 { return float64(b) / 1e6 }
