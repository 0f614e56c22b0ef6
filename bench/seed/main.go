// Command seed fills a mailbox with generated messages for the benchmarks:
// either straight into a cspool spool directory (sealed deliveries, in
// batches) or into any LMTP server (Dovecot, or cspool's own listener).
// The same seed gives the same messages in both, so peers are compared on
// identical mail.
//
// With --device, `seed spool` also writes the device's database from the
// commands it seals: each batch applied with mailstore's ApplyChained at
// the log's positions, with the log's chain hashes (what the sync loop
// applies once it has read and opened the entries), its bodies indexed
// before the next batch, the index merged at the end (as cspool reindex
// builds it). cspool imap-server started on it is at the log's head and
// syncs nothing; TestSeededDeviceServesAsSynced checks that it serves what
// a daemon that synced serves. With --checkpoint the device then writes its
// checkpoint at the head into the spool (syncer's WriteCheckpoint): a new
// device started on the spool bootstraps from it (bench/restore.sh).
//
//	go run ./bench/seed spool --spool-dir DIR --user alice --user-key user.pub --spool-key spool.sec --count 10000
//	go run ./bench/seed spool ... --device device.db --user-secret user.sec
//	go run ./bench/seed spool ... --device device.db --user-secret user.sec --checkpoint
//	go run ./bench/seed lmtp --addr 127.0.0.1:24 --rcpt alice@example.org --count 10000
//	go run ./bench/seed maildir --dir Maildir --count 10000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: seed spool|lmtp [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "spool":
		err = seedSpool(os.Args[2:])
	case "lmtp":
		err = seedLMTP(os.Args[2:])
	case "maildir":
		err = seedMaildir(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

// message returns the i-th generated message of about size bytes: real
// headers, a text body of common words, and in one message of 1,000 the
// word "xylophone".
func message(seed uint64, i, size int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\n", i%97, i%97)
	fmt.Fprintf(&b, "To: alice@example.org\r\n")
	fmt.Fprintf(&b, "Subject: Benchmark message %d about topic %d\r\n", i, r.IntN(1000))
	fmt.Fprintf(&b, "Date: %s\r\n", time.Unix(1764000000+int64(i)*60, 0).UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <bench-%d-%d@example.org>\r\n", seed, i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	words := []string{"mail", "spool", "log", "device", "sync", "quarterly", "report", "meeting", "invoice", "travel", "token"}
	if i%1000 == 500 {
		// One message in 1,000 holds a rare word, for the search figures.
		b.WriteString("xylophone ")
	}
	line := 0
	for b.Len() < size {
		b.WriteString(words[r.IntN(len(words))])
		line++
		if line%12 == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func seedSpool(args []string) error {
	fs := flag.NewFlagSet("seed spool", flag.ExitOnError)
	dir := fs.String("spool-dir", "spool", "spool directory")
	user := fs.String("user", "alice", "user name")
	userPub := fs.String("user-key", "user.pub", "user's public key file")
	spoolSec := fs.String("spool-key", "spool.sec", "spool's secret key file")
	count := fs.Int("count", 10000, "messages")
	size := fs.Int("size", 10<<10, "approximate message size")
	batch := fs.Int("batch", 500, "entries per append")
	seed := fs.Uint64("seed", 1, "content seed")
	device := fs.String("device", "", "also write this new device database (cspool imap-server's --db) at the log's head, its search index built")
	userSec := fs.String("user-secret", "user.sec", "with --device: the user's secret key file (the database is encrypted with it)")
	index := fs.Bool("index", true, "with --device: build the device's search index as the batches apply, and merge it at the end; false leaves every body unindexed (a daemon started on it indexes them), for a device written only for its checkpoint, which holds no index")
	checkpoint := fs.Bool("checkpoint", false, "with --device: then write the device's checkpoint at the log's head into the spool, as the daemon writes one (a new device bootstraps from it)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	format := fs.Int("entry-format", entry.Version, "the entry format the deliveries are sealed in, as cspool server's --entry-format: 2, or 3 (a chain of keys, as one server process delivering them all)")
	fs.Parse(args)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var chains *entry.Chains
	switch *format {
	case entry.Version:
	case entry.Version3:
		chains = entry.NewChains(0)
	default:
		return fmt.Errorf("--entry-format %d: want %d or %d", *format, entry.Version, entry.Version3)
	}
	up, err := keys.LoadPublic(*userPub)
	if err != nil {
		return err
	}
	sk, err := keys.LoadSecret(*spoolSec)
	if err != nil {
		return err
	}
	st, err := sqlitestore.Open(*dir, sqlitestore.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	// The store records the spool key its deliveries are signed with, as
	// cspool deliver and cspool server have it record.
	if err := st.KeepSpoolKey(ctx, sk.Public().Bytes()); err != nil {
		return err
	}
	var dev *deviceWriter
	if *device != "" {
		if dev, err = openDevice(ctx, st, *device, *userSec, *user, up, *index); err != nil {
			return err
		}
		defer dev.store.Close()
		// The device records the spool key it trusts, as the daemon
		// does before its first sync.
		if err := dev.store.TrustSpoolKey(ctx, sk.Public().Bytes()); err != nil {
			return err
		}
	}
	start := time.Now()
	// Batches are sealed on all cores, each entry at its index, while the
	// batch before is appended (and applied to the device): the log holds
	// the messages in order.
	sealed := make(chan sealedBatch, 2)
	errc := make(chan error, 1)
	var sealing, appending time.Duration
	go func() {
		defer close(sealed)
		for first := 0; first < *count; first += *batch {
			t := time.Now()
			n := min(*batch, *count-first)
			b := sealedBatch{first: first, data: make([][]byte, n)}
			if dev != nil {
				b.entries = make([]mailstore.Entry, n)
			}
			if err := parallel(n, func(k int) error {
				c := &command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(*seed, first+k, *size)}
				data, id, err := entry.Seal(c, sk, up, *user, &entry.Options{Chains: chains})
				b.data[k] = data
				if dev != nil && err == nil {
					// What the device's sync would apply for this entry:
					// the command it opens, at its position, by the spool.
					b.entries[k] = mailstore.Entry{Pos: uint64(first + k + 1), ID: id, Author: mailstore.AuthorSpool,
						Cmd: c, Prepared: dev.store.Prepare(c)}
				}
				return err
			}); err != nil {
				errc <- err
				return
			}
			sealing += time.Since(t)
			sealed <- b
		}
	}()
	if dev != nil {
		dev.start(ctx)
	}
	for b := range sealed {
		t := time.Now()
		first, err := st.Append(ctx, *user, b.data)
		if err != nil {
			return err
		}
		appending += time.Since(t)
		if n := b.first + len(b.data); dev == nil && n/progressEvery > b.first/progressEvery {
			fmt.Printf("log at %d after %s %s\n", n, time.Since(start).Round(time.Second), loadavg())
		}
		if dev != nil {
			if first != uint64(b.first+1) {
				return fmt.Errorf("the log took entry %d at position %d, the device applied it at %d", b.first, first, b.first+1)
			}
			if err := dev.apply(b); err != nil {
				return err
			}
		}
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Printf("seeded %d messages into %s in %s (sealing %s, appending %s)\n", *count, *dir,
		time.Since(start).Round(time.Millisecond), sealing.Round(time.Millisecond), appending.Round(time.Millisecond))
	if dev == nil {
		return nil
	}
	if err := dev.finish(ctx, os.Stdout); err != nil {
		return err
	}
	if !*checkpoint {
		return nil
	}
	uk, err := keys.LoadSecret(*userSec)
	if err != nil {
		return err
	}
	t := time.Now()
	s, err := syncer.New(syncer.Config{User: *user, UserKey: uk, SpoolKey: sk.Public(), Store: dev.store,
		Source: syncer.StoreSource{Store: st, User: *user}, TempDir: filepath.Dir(*device)})
	if err != nil {
		return err
	}
	stats, pos, err := s.WriteCheckpoint(ctx)
	if err != nil {
		return err
	}
	cp, err := st.LatestCheckpoint(ctx, *user)
	if err != nil {
		return err
	}
	fmt.Printf("checkpoint at %d of %d bytes written in %s (%d entries compacted away)\n", pos, len(cp.Data),
		time.Since(t).Round(time.Millisecond), stats.Deleted)
	return nil
}

// progressEvery is how many messages apart the progress lines are.
const progressEvery = 100000

// loadavg returns the load average as "(load 1 5 15)", or "".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return ""
	}
	return "(load " + strings.Join(f[:3], " ") + ")"
}

// sealedBatch is a batch of sealed deliveries of messages first,
// first+1, ... and, with --device, the entries the device applies for
// them.
type sealedBatch struct {
	first   int
	data    [][]byte
	entries []mailstore.Entry
}

// deviceWriter writes a device's database as its first sync would: each
// batch applied with mailstore's ApplyChained, with the log's chain hash at
// every position, as the sync loop applies what it read and opened
// (internal/syncer); then the search index built and merged as cspool
// reindex builds it. The daemon started on it finds itself at the log's
// head.
type deviceWriter struct {
	store    *mailstore.Store
	batches  chan sealedBatch
	done     chan error
	chain    chain.Hash
	applying time.Duration
	indexing time.Duration
	began    time.Time
	index    bool // build the search index (seed spool --index)
}

// openDevice opens a new device database, encrypted at rest with the
// user's key as cspool imap-server opens it. The log must be empty too:
// the device's positions are the log's from 1.
func openDevice(ctx context.Context, st *sqlitestore.Store, path, userSec, user string, up keys.PublicKey, index bool) (*deviceWriter, error) {
	if head, err := st.Head(ctx, user); err != nil || head != 0 {
		return nil, fmt.Errorf("--device needs a new spool (the log's head is %d, %v)", head, err)
	}
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("--device %s exists: it must be a new database", path)
	}
	uk, err := keys.LoadSecret(userSec)
	if err != nil {
		return nil, err
	}
	if !uk.Public().Equal(up) {
		return nil, fmt.Errorf("--user-secret %s is not the secret key of --user-key", userSec)
	}
	key := devicedb.Key(uk.DatabaseKey("mailstore"))
	// The writer's cache holds what a batch of thousands of messages and
	// its index touch (the daemon's 8 MiB holds a batch of 500; SQLite compiled
	// to Go has 256 MB a connection, so 96 MiB).
	ms, err := mailstore.OpenWith(path, mailstore.Options{Parser: mimeform.Parser{}, Key: &key, WriteCacheKiB: 96 << 10})
	if err != nil {
		return nil, err
	}
	return &deviceWriter{store: ms, index: index}, nil
}

// start starts the goroutine that applies the batches handed to apply, in
// order, while the next are sealed and appended.
func (d *deviceWriter) start(ctx context.Context) {
	d.batches, d.done, d.began = make(chan sealedBatch, 1), make(chan error, 1), time.Now()
	go func() {
		var err error
		for b := range d.batches {
			if err != nil {
				continue
			}
			t := time.Now()
			hashes := make([]chain.Hash, len(b.data))
			for i, data := range b.data {
				d.chain = chain.Next(d.chain, data)
				hashes[i] = d.chain
			}
			last := uint64(b.first + len(b.data))
			var res *mailstore.Result
			if res, err = d.store.ApplyChained(ctx, b.entries, nil, last, hashes); err == nil {
				for _, o := range res.Outcomes {
					if o.Status == mailstore.Rejected {
						err = fmt.Errorf("the device rejected entry %d: %s: %s", o.Pos, o.Reason, o.Detail)
						break
					}
				}
			}
			d.applying += time.Since(t)
			if err == nil && d.index {
				// The batch's bodies indexed in one transaction before
				// the next batch applies: the writer is the one serial
				// part, and the next batches are sealed meanwhile.
				t = time.Now()
				_, _, err = d.store.IndexPending(ctx, len(b.data))
				d.indexing += time.Since(t)
			}
			if n := b.first + len(b.data); n/progressEvery > b.first/progressEvery {
				fmt.Printf("device at %d after %s (applying %s, indexing %s) %s\n", n, time.Since(d.began).Round(time.Second),
					d.applying.Round(time.Second), d.indexing.Round(time.Second), loadavg())
			}
		}
		d.done <- err
	}()
}

// apply hands a batch, appended to the log, to the applying goroutine.
func (d *deviceWriter) apply(b sealedBatch) error {
	select {
	case err := <-d.done:
		d.done <- err
		if err == nil {
			err = errors.New("the device stopped applying")
		}
		return err
	case d.batches <- b:
		return nil
	}
}

// finish waits for the last batch to apply, then builds the search index
// (IndexPending, 1,000 bodies a transaction) and merges it into one
// segment (MergeIndex, 500 pages a step) as cspool reindex does.
func (d *deviceWriter) finish(ctx context.Context, w io.Writer) error {
	close(d.batches)
	if err := <-d.done; err != nil {
		return err
	}
	pos, err := d.store.Position(ctx)
	if err != nil {
		return err
	}
	if !d.index {
		fmt.Fprintf(w, "device at position %d in %s (applying %s, no search index)\n", pos, time.Since(d.began).Round(time.Millisecond),
			d.applying.Round(time.Millisecond))
		return nil
	}
	t := time.Now()
	n := 0
	for {
		// What the batches left (none unless a batch held a body twice).
		done, left, err := d.store.IndexPending(ctx, 1000)
		if err != nil {
			return err
		}
		n += done
		if left == 0 || done == 0 {
			break
		}
	}
	fmt.Fprintf(w, "device at position %d in %s (applying %s, indexing %s)\n", pos, time.Since(d.began).Round(time.Millisecond),
		d.applying.Round(time.Millisecond), (d.indexing + time.Since(t)).Round(time.Millisecond))
	t = time.Now()
	for {
		merged, err := d.store.MergeIndex(ctx, 500)
		if err != nil {
			return err
		}
		if !merged {
			break
		}
	}
	fmt.Fprintf(w, "device search index merged in %s\n", time.Since(t).Round(time.Millisecond))
	return nil
}

// parallel calls f(k) for k in [0, n) on every core and returns the first
// error.
func parallel(n int, f func(k int) error) error {
	w := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make([]error, w)
	for j := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := j; k < n; k += w {
				if err := f(k); err != nil {
					errs[j] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func seedLMTP(args []string) error {
	fs := flag.NewFlagSet("seed lmtp", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:24", "LMTP address")
	rcpt := fs.String("rcpt", "alice@example.org", "recipient")
	count := fs.Int("count", 10000, "messages")
	size := fs.Int("size", 10<<10, "approximate message size")
	seed := fs.Uint64("seed", 1, "content seed")
	fs.Parse(args)
	conn, err := net.Dial("tcp", *addr)
	if err != nil {
		return err
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("seed.example.org"); err != nil {
		return err
	}
	start := time.Now()
	for i := 0; i < *count; i++ {
		if err := c.Mail("sender@example.org", nil); err != nil {
			return err
		}
		if err := c.Rcpt(*rcpt, nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write(message(*seed, i, *size)); err != nil {
			return err
		}
		if _, err := w.CloseWithLMTPResponse(); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	fmt.Printf("delivered %d messages to %s in %s\n", *count, *addr, time.Since(start).Round(time.Millisecond))
	return c.Quit()
}

// seedMaildir writes the messages as files into a Maildir's cur/ folder (for
// a peer whose own delivery is too slow to seed large mailboxes).
func seedMaildir(args []string) error {
	fs := flag.NewFlagSet("seed maildir", flag.ExitOnError)
	dir := fs.String("dir", "Maildir", "Maildir folder")
	count := fs.Int("count", 10000, "messages")
	size := fs.Int("size", 10<<10, "approximate message size")
	seed := fs.Uint64("seed", 1, "content seed")
	first := fs.Int("first", 0, "number the files from this (to add to a Maildir already seeded)")
	fs.Parse(args)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(*dir, sub), 0o755); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := parallel(*count, func(i int) error {
		m := message(*seed, i, *size)
		name := fmt.Sprintf("%d.M%dP1.bench,S=%d:2,", 1764000000+*first+i, *first+i, len(m))
		return os.WriteFile(filepath.Join(*dir, "cur", name), m, 0o644)
	}); err != nil {
		return err
	}
	fmt.Printf("wrote %d messages into %s in %s\n", *count, *dir, time.Since(start).Round(time.Millisecond))
	return nil
}
