// Command churn measures batching and compaction on a real spool (SQLite
// store behind the HTTP API on loopback) with real devices (mail store and
// sync loop over the API client), in one process:
//
//   - a first sync of N delivered messages: HTTP requests and bytes on the
//     wire with the sync loop's batching, against one entry per request;
//
//   - a STORE \Seen over all N messages: one command naming every message,
//     against one command per message (measured on a sample, scaled up);
//
//   - churn: FLAGS flag changes and moves as separate entries, then half the
//     messages expunged; the spool's bytes after a checkpoint and compaction
//     against the bytes of the live messages' entries;
//
//   - a new device's bootstrap from the checkpoint against a full replay of
//     the uncompacted log.
//
//     go run ./bench/churn -n 10000 -flags 100000
package main

import (
	"context"
	"crypto/rand"
	"errors"
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
	flags := flag.Int("flags", 100000, "flag changes and moves, one entry each")
	sample := flag.Int("sample", 300, "messages stored one command each, to scale up")
	size := flag.Int("size", 10<<10, "message size")
	flag.Parse()
	if err := run(*n, *flags, *sample, *size); err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
}

// counter counts requests and bytes through an http.RoundTripper.
type counter struct {
	next          http.RoundTripper
	requests, out atomic.Int64
	in            atomic.Int64
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
	if r.ContentLength > 0 {
		c.out.Add(r.ContentLength)
	}
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{resp.Body, &c.in}
	}
	return resp, err
}

func (c *counter) snapshot() (int64, int64) { return c.requests.Load(), c.in.Load() + c.out.Load() }

type env struct {
	dir         string
	user, spool *keys.SecretKey
	url         string
	store       *sqlitestore.Store
	quiet       *slog.Logger
}

func (e *env) device(name string, batch int) (*syncer.Syncer, *mailstore.Store, *counter, error) {
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
		Store: ms, Logger: e.quiet, BatchCount: batch, CheckpointMin: -1})
	return s, ms, cnt, err
}

func serve(st *sqlitestore.Store, users api.Users, spoolKey keys.PublicKey) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: api.NewServer(api.Config{Store: st, Users: users, SpoolKey: spoolKey})}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func message(i, size int) []byte {
	b := fmt.Appendf(nil, "From: s%d@example.org\r\nTo: alice@example.org\r\nSubject: churn %d\r\nMessage-ID: <%d@churn>\r\n\r\n", i%50, i, i)
	for len(b) < size-2 {
		b = append(b, "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n"...)
	}
	return append(b[:size-2], "\r\n"...)
}

func run(n, flagChanges, sample, size int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cspool-churn-")
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
	url, stop, err := serve(e.store, users, e.spool.Public())
	if err != nil {
		return err
	}
	defer stop()
	e.url = url

	// Deliveries, sealed by the spool, appended in batches.
	var liveBytes = map[uint64]int{}
	var batch [][]byte
	for i := 0; i < n; i++ {
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(i, size)}, e.spool, e.user.Public(), "alice", nil)
		if err != nil {
			return err
		}
		batch = append(batch, b)
		if len(batch) == 500 || i == n-1 {
			first, err := e.store.Append(ctx, "alice", batch)
			if err != nil {
				return err
			}
			for j, b := range batch {
				liveBytes[first+uint64(j)] = len(b)
			}
			batch = batch[:0]
		}
	}

	// 1. First sync: batched against one entry per request.
	a, msa, ca, err := e.device("a", 0)
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := a.SyncOnce(ctx); err != nil {
		return err
	}
	firstSync := time.Since(start)
	reqA, bytesA := ca.snapshot()
	one, _, c1, err := e.device("one", 1)
	if err != nil {
		return err
	}
	if _, err := one.SyncOnce(ctx); err != nil {
		return err
	}
	req1, bytes1 := c1.snapshot()
	fmt.Printf("first sync of %d messages: batched %d requests, %.1f MB on the wire, %.2f s; one entry per request %d requests, %.1f MB (%.0fx the requests)\n",
		n, reqA, mb(bytesA), firstSync.Seconds(), req1, mb(bytes1), float64(req1)/float64(max(reqA, 1)))

	// 2. STORE \Seen over every message: one command, against one per message.
	mb0, err := msa.MailboxByName(ctx, "INBOX")
	if err != nil {
		return err
	}
	var ids []command.ID
	if err := msa.Scan(ctx, mb0.ID, 0, func(m *mailstore.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		return err
	}
	go a.Run(ctx)
	r0, b0 := ca.snapshot()
	if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids}); err != nil {
		return err
	}
	r1, b1 := ca.snapshot()
	for _, id := range ids[:sample] {
		if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}}); err != nil {
			return err
		}
	}
	r2, b2 := ca.snapshot()
	scale := float64(len(ids)) / float64(sample)
	fmt.Printf("STORE \\Seen over %d messages: one entry, %d requests, %.2f MB; one entry per message (scaled from %d): %.0f requests, %.1f MB\n",
		len(ids), r1-r0, mb(b1-b0), sample, float64(r2-r1)*scale, mb(int64(float64(b2-b1)*scale)))

	// 3. Churn: flag changes and moves, one entry each, then expunge half.
	var churn [][]byte
	appendUser := func(c *command.Command) error {
		b, _, err := entry.Seal(c, e.user, e.user.Public(), "alice", nil)
		if err != nil {
			return err
		}
		churn = append(churn, b)
		if len(churn) == 1000 {
			_, err = e.store.Append(ctx, "alice", churn)
			churn = churn[:0]
		}
		return err
	}
	boxes := []string{"Archive", "Trash", "Work"}
	for i := 0; i < flagChanges; i++ {
		id := ids[i%len(ids)]
		var c *command.Command
		switch i % 4 {
		case 0, 1:
			c = &command.Command{Kind: command.SetFlags, Flags: []string{"$Label" + fmt.Sprint(i%7)}, IDs: []command.ID{id}}
		case 2:
			c = &command.Command{Kind: command.ClearFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}}
		case 3:
			c = &command.Command{Kind: command.Move, Mailbox: boxes[i%3], IDs: []command.ID{id}}
		}
		if err := appendUser(c); err != nil {
			return err
		}
	}
	if err := appendUser(&command.Command{Kind: command.Expunge, IDs: ids[:len(ids)/2]}); err != nil {
		return err
	}
	if len(churn) > 0 {
		if _, err := e.store.Append(ctx, "alice", churn); err != nil {
			return err
		}
	}
	head, err := e.store.Head(ctx, "alice")
	if err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}
	before, err := logBytes(ctx, e.store)
	if err != nil {
		return err
	}
	// Keep a copy of the uncompacted log for the full-replay comparison.
	full, err := copyStore(ctx, e.store, filepath.Join(dir, "spool-full"))
	if err != nil {
		return err
	}
	defer full.Close()

	stats, cpPos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		return err
	}
	after, err := logBytes(ctx, e.store)
	if err != nil {
		return err
	}
	cp, err := e.store.LatestCheckpoint(ctx, "alice")
	if err != nil {
		return err
	}
	sn, err := msa.Snapshot(ctx)
	if err != nil {
		return err
	}
	live := 0
	for _, p := range sn.Keep() {
		live += liveBytes[p]
	}
	fi, _ := os.Stat(filepath.Join(dir, "spool", "spool.db"))
	fmt.Printf("churn: %d entries (%.1f MB of entry bytes) before compaction; checkpoint at %d deleted %d entries (%.1f MB)\n",
		head, mb(before), cpPos, stats.Deleted, mb(stats.Bytes))
	fmt.Printf("after compaction: %.1f MB of entries + %.2f MB checkpoint = %.1f MB; live messages' entries %.1f MB: ratio %.3fx (database file %.1f MB)\n",
		mb(after), mb(int64(len(cp.Data))), mb(after+int64(len(cp.Data))), mb(int64(live)),
		float64(after+int64(len(cp.Data)))/float64(live), mb(fi.Size()))

	// 4. Bootstrap: a new device from the checkpoint, against a full replay.
	c, _, cc, err := e.device("new", 0)
	if err != nil {
		return err
	}
	start = time.Now()
	if _, err := c.SyncOnce(ctx); err != nil {
		return err
	}
	boot := time.Since(start)
	creq, cbytes := cc.snapshot()
	url2, stop2, err := serve(full, users, e.spool.Public())
	if err != nil {
		return err
	}
	defer stop2()
	e2 := *e
	e2.url = url2
	d, _, cd, err := e2.device("replay", 0)
	if err != nil {
		return err
	}
	start = time.Now()
	if _, err := d.SyncOnce(ctx); err != nil {
		return err
	}
	replay := time.Since(start)
	dreq, dbytes := cd.snapshot()
	fmt.Printf("new device: from the checkpoint %.2f s (%d requests, %.1f MB); full replay %.2f s (%d requests, %.1f MB); ratio %.2fx\n",
		boot.Seconds(), creq, mb(cbytes), replay.Seconds(), dreq, mb(dbytes), boot.Seconds()/replay.Seconds())
	return nil
}

func mb(b int64) float64 { return float64(b) / 1e6 }

// logBytes sums the entry bytes the store holds for alice.
func logBytes(ctx context.Context, st *sqlitestore.Store) (int64, error) {
	var total int64
	var after uint64
	for {
		es, err := st.Read(ctx, "alice", after, 10000, 64<<20)
		if err != nil {
			return 0, err
		}
		if len(es) == 0 {
			return total, nil
		}
		for _, e := range es {
			total += int64(len(e.Data))
		}
		after = es[len(es)-1].Pos
	}
}

// copyStore copies alice's log into a new store.
func copyStore(ctx context.Context, st *sqlitestore.Store, dir string) (*sqlitestore.Store, error) {
	dst, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		return nil, err
	}
	var after uint64
	for {
		es, err := st.Read(ctx, "alice", after, 5000, 64<<20)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return dst, nil
		}
		batch := make([][]byte, len(es))
		for i, e := range es {
			if e.Pos != after+uint64(i)+1 {
				return nil, errors.New("log has holes: cannot copy")
			}
			batch[i] = e.Data
		}
		if _, err := dst.Append(ctx, "alice", batch); err != nil {
			return nil, err
		}
		after = es[len(es)-1].Pos
	}
}
