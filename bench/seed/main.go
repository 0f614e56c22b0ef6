// Command seed fills a mailbox with generated messages for the benchmarks:
// either straight into a cspool spool directory (sealed deliveries, in
// batches) or into any LMTP server (Dovecot, or cspool's own listener).
// The same seed gives the same messages in both, so peers are compared on
// identical mail.
//
//	go run ./bench/seed spool --spool-dir DIR --user alice --user-key user.pub --spool-key spool.sec --count 10000
//	go run ./bench/seed lmtp --addr 127.0.0.1:24 --rcpt alice@example.org --count 10000
//	go run ./bench/seed maildir --dir Maildir --count 10000
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
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
	fs.Parse(args)
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
	start := time.Now()
	// Batches are sealed on all cores, each entry at its index, while the
	// batch before is appended: the log holds the messages in order.
	sealed := make(chan [][]byte, 2)
	errc := make(chan error, 1)
	go func() {
		defer close(sealed)
		for first := 0; first < *count; first += *batch {
			n := min(*batch, *count-first)
			out := make([][]byte, n)
			if err := parallel(n, func(k int) error {
				c := &command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(*seed, first+k, *size)}
				b, _, err := entry.Seal(c, sk, up, *user, nil)
				out[k] = b
				return err
			}); err != nil {
				errc <- err
				return
			}
			sealed <- out
		}
	}()
	for b := range sealed {
		if _, err := st.Append(ctx, *user, b); err != nil {
			return err
		}
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Printf("seeded %d messages into %s in %s\n", *count, *dir, time.Since(start).Round(time.Millisecond))
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
