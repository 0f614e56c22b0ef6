// Command bootstrap measures what a new device reads from the spool to
// build its mailbox, against the size of the live mailbox (the entries that
// hold the bodies of the messages still there): the least any device must
// read. It runs a real SQLite store behind the real HTTP API on loopback
// and real devices (mail store and sync loop over the API client), counting
// requests and bytes at the client's transport, in two cases:
//
//   - as a user would meet it: -n messages delivered, a first device syncs
//     them with the daemon's checkpoint rule (so it writes its checkpoint
//     during that first sync), then -flags flag changes and the expunge of
//     a quarter of the messages follow; a new device starts;
//
//   - after the first device wrote a checkpoint at the head (as it does
//     once the log since its last one outgrows the live messages); another
//     new device starts.
//
//     go run ./bench/bootstrap -n 10000 -flags 5000
package main

import (
	"context"
	"crypto/rand"
	"flag"
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
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
	"cspool/internal/userdb"
)

func main() {
	n := flag.Int("n", 10000, "messages delivered")
	flags := flag.Int("flags", 5000, "flag changes after the first sync, one entry each")
	size := flag.Int("size", 10<<10, "message size")
	flag.Parse()
	if err := run(*n, *flags, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bootstrap:", err)
		os.Exit(1)
	}
}

// counter counts requests and response bytes through a RoundTripper.
type counter struct {
	next     http.RoundTripper
	requests atomic.Int64
	in       atomic.Int64
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

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{resp.Body, &c.in}
	}
	return resp, err
}

type env struct {
	dir         string
	url         string
	user, spool *keys.SecretKey
	store       *sqlitestore.Store
	quiet       *slog.Logger
}

// device returns a new device's sync loop with the daemon's settings,
// reading through a counter.
func (e *env) device(name string) (*syncer.Syncer, *mailstore.Store, *counter, error) {
	ms, err := mailstore.Open(filepath.Join(e.dir, name+".db"))
	if err != nil {
		return nil, nil, nil, err
	}
	cnt := &counter{next: http.DefaultTransport}
	client, err := api.NewClient(e.url, "alice", e.user, &http.Client{Transport: cnt})
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := syncer.New(syncer.Config{User: "alice", UserKey: e.user, SpoolKey: e.spool.Public(), Source: client,
		Store: ms, Logger: e.quiet})
	return s, ms, cnt, err
}

func message(i, size int) []byte {
	b := fmt.Appendf(nil, "From: s%d@example.org\r\nTo: alice@example.org\r\nSubject: bootstrap %d\r\nMessage-ID: <%d@bootstrap>\r\n\r\n", i%50, i, i)
	for len(b) < size-2 {
		b = append(b, "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n"...)
	}
	return append(b[:size-2], "\r\n"...)
}

func mb(b int64) float64 { return float64(b) / 1e6 }

func run(n, flagChanges, size int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cspool-bootstrap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if e.user, err = keys.Generate(rand.Reader); err != nil {
		return err
	}
	if e.spool, err = keys.Generate(rand.Reader); err != nil {
		return err
	}
	usersFile := filepath.Join(dir, "users")
	if err := os.WriteFile(usersFile, []byte("alice "+e.user.Public().String()+"\n"), 0o600); err != nil {
		return err
	}
	users, err := userdb.Load(usersFile, nil)
	if err != nil {
		return err
	}
	if e.store, err = sqlitestore.Open(filepath.Join(dir, "spool"), sqlitestore.Options{}); err != nil {
		return err
	}
	defer e.store.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api.NewServer(api.Config{Store: e.store, Users: users, SpoolKey: e.spool.Public(),
		Started: time.Now().Add(-time.Hour)})}
	go srv.Serve(ln)
	defer srv.Close()
	e.url = "http://" + ln.Addr().String()

	// Deliveries, sealed by the spool, appended in batches.
	var batch [][]byte
	for i := 0; i < n; i++ {
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(i, size)}, e.spool, e.user.Public(), "alice", nil)
		if err != nil {
			return err
		}
		if batch = append(batch, b); len(batch) == 500 || i == n-1 {
			if _, err := e.store.Append(ctx, "alice", batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}

	// The first device syncs as the daemon does, checkpoint rule included.
	a, msa, _, err := e.device("a")
	if err != nil {
		return err
	}
	runCtx, stopA := context.WithCancel(ctx)
	defer stopA()
	go a.Run(runCtx)
	head, err := e.store.Head(ctx, "alice")
	if err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}

	// Flag changes, one entry each, then a quarter of the messages expunged.
	mbox, err := msa.MailboxByName(ctx, "INBOX")
	if err != nil {
		return err
	}
	var ids []command.ID
	if err := msa.Scan(ctx, mbox.ID, 0, func(m *mailstore.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		return err
	}
	var cmds [][]byte
	seal := func(c *command.Command) error {
		b, _, err := entry.Seal(c, e.user, e.user.Public(), "alice", nil)
		cmds = append(cmds, b)
		return err
	}
	for i := 0; i < flagChanges; i++ {
		if err := seal(&command.Command{Kind: command.SetFlags, Flags: []string{"$Label" + fmt.Sprint(i%7)}, IDs: []command.ID{ids[i%len(ids)]}}); err != nil {
			return err
		}
	}
	if err := seal(&command.Command{Kind: command.Expunge, IDs: ids[:len(ids)/4]}); err != nil {
		return err
	}
	for len(cmds) > 0 {
		k := min(len(cmds), 1000)
		if _, err := e.store.Append(ctx, "alice", cmds[:k]); err != nil {
			return err
		}
		cmds = cmds[k:]
	}
	if head, err = e.store.Head(ctx, "alice"); err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}
	stopA()

	newDevice := func(name, what string) error {
		cp, err := e.store.LatestCheckpoint(ctx, "alice")
		if err != nil {
			return err
		}
		sn, err := msa.Snapshot(ctx)
		if err != nil {
			return err
		}
		var live int64
		for _, p := range sn.Keep() {
			es, err := e.store.Read(ctx, "alice", p-1, 1, 0)
			if err != nil || len(es) != 1 || es[0].Pos != p {
				return fmt.Errorf("reading live entry %d: %v", p, err)
			}
			live += int64(len(es[0].Data))
		}
		d, _, cnt, err := e.device(name)
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := d.SyncOnce(ctx); err != nil {
			return err
		}
		took := time.Since(start)
		st := d.Status()
		fmt.Printf("%s: log of %d entries, newest checkpoint at %d (%.2f MB); live mailbox %d messages, %.1f MB of entries\n",
			what, head, cp.Pos, mb(int64(len(cp.Data))), len(sn.Keep()), mb(live))
		fmt.Printf("  new device: %d requests, %.1f MB read = %.2fx the live mailbox (%.2fx with the checkpoint counted in), %d entries applied after the checkpoint, %d restore(s), %.2f s\n",
			cnt.requests.Load(), mb(cnt.in.Load()), float64(cnt.in.Load())/float64(live),
			float64(cnt.in.Load())/float64(live+int64(len(cp.Data))), st.Applied, st.Restores, took.Seconds())
		return nil
	}
	if err := newDevice("b", "as a user would meet it"); err != nil {
		return err
	}
	stats, pos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("the first device writes a checkpoint at %d: %d entries (%.1f MB) compacted away\n", pos, stats.Deleted, mb(stats.Bytes))
	return newDevice("c", "after a checkpoint at the head")
}
