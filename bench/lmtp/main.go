// Command lmtp measures LMTP delivery: messages per second and the latency
// from the end of DATA to the last recipient's reply (for cspool, the append
// acknowledgement: the entries are durable), with several connections.
//
// It works against any LMTP server (--addr HOST:PORT), or, without --addr,
// starts cspool's own listener over a fresh SQLite spool in a temporary
// directory (or --spool-dir) with generated keys. The run is bounded by
// --count messages and by --max-time.
//
//	go run ./bench/lmtp --conns 1 --count 2000 --size 10240
//	go run ./bench/lmtp --conns 8 --count 5000 --addr 127.0.0.1:24 --rcpt user@example.org
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/deliver"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

type config struct {
	addr     string
	conns    int
	count    int
	size     int
	rcpts    []string
	maxTime  time.Duration
	spoolDir string
	jsonOut  bool
}

func main() {
	var c config
	var rcpt string
	flag.StringVar(&c.addr, "addr", "", "LMTP server HOST:PORT; empty starts cspool's listener over a temporary spool")
	flag.IntVar(&c.conns, "conns", 1, "concurrent connections")
	flag.IntVar(&c.count, "count", 1000, "messages to send in all")
	flag.IntVar(&c.size, "size", 10240, "message size in bytes")
	flag.StringVar(&rcpt, "rcpt", "bench@example.org", "recipients of each message, comma-separated")
	flag.DurationVar(&c.maxTime, "max-time", 5*time.Minute, "stop sending after this long")
	flag.StringVar(&c.spoolDir, "spool-dir", "", "spool directory for the built-in listener (default: a temporary one, removed afterwards)")
	flag.BoolVar(&c.jsonOut, "json", false, "print the result as JSON")
	flag.Parse()
	c.rcpts = strings.Split(rcpt, ",")
	if c.conns < 1 || c.count < 1 || c.size < 1 {
		fmt.Fprintln(os.Stderr, "lmtp bench: --conns, --count and --size must be positive")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "lmtp bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if c.addr == "" {
		addr, stop, err := startCspool(c)
		if err != nil {
			return err
		}
		defer stop()
		c.addr = addr
	}
	res, err := load(c)
	if err != nil {
		return err
	}
	if c.jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("addr=%s conns=%d size=%d rcpts=%d\n", c.addr, c.conns, c.size, len(c.rcpts))
	fmt.Printf("sent=%d ok=%d failed=%d in %.2fs: %.0f msg/s, %.0f deliveries/s, %.1f MB/s\n",
		res.Sent, res.OK, res.Failed, res.Seconds, res.MsgPerSec, res.MsgPerSec*float64(len(c.rcpts)), res.MsgPerSec*float64(c.size)/1e6)
	fmt.Printf("end-of-DATA to last reply: p50=%.2fms p99=%.2fms max=%.2fms\n", res.P50ms, res.P99ms, res.MaxMs)
	return nil
}

// startCspool runs cspool's LMTP listener over a SQLite spool, with one
// user per recipient local part.
func startCspool(c config) (string, func(), error) {
	dir := c.spoolDir
	cleanup := func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "cspool-lmtp-bench-")
		if err != nil {
			return "", nil, err
		}
		dir, cleanup = d, func() { os.RemoveAll(d) }
	}
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	spoolKey, err := keys.Generate(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	users := deliver.StaticDirectory{}
	for _, r := range c.rcpts {
		local, _, _ := strings.Cut(r, "@")
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			return "", nil, err
		}
		users[local] = k.Public()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	l := deliver.NewLMTP(&deliver.Deliverer{Log: st, SpoolKey: spoolKey, Users: users},
		deliver.LMTPOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go l.Serve(ln)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.Shutdown(ctx)
		s := st.Stats()
		fmt.Fprintf(os.Stderr, "store: %d appends in %d commits (%.1f appends per fsync)\n", s.Appends, s.Commits, float64(s.Appends)/max(1, float64(s.Commits)))
		st.Close()
		cleanup()
	}
	return ln.Addr().String(), stop, nil
}

type result struct {
	Sent, OK, Failed        int
	Seconds, MsgPerSec      float64
	P50ms, P99ms, MaxMs     float64
	FirstError              string `json:",omitempty"`
	Conns, Size, Recipients int
}

func message(size int, n int64) []byte {
	head := fmt.Sprintf("From: bench@example.net\r\nTo: bench@example.org\r\nSubject: bench %d\r\nMessage-ID: <%d@bench.test>\r\n\r\n", n, n)
	b := []byte(head)
	line := "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n"
	for len(b) < size {
		b = append(b, line...)
	}
	b = b[:size-2]
	return append(b, "\r\n"...)
}

func load(c config) (*result, error) {
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		ok, fail int
		firstErr error
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(c.maxTime)
	start := time.Now()
	for range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record := func(d time.Duration, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					fail++
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				ok++
				lat = append(lat, d)
			}
			conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
			if err != nil {
				record(0, err)
				return
			}
			cl := smtp.NewClientLMTP(conn)
			defer cl.Close()
			if err := cl.Hello("bench.test"); err != nil {
				record(0, err)
				return
			}
			for time.Now().Before(deadline) {
				n := next.Add(1)
				if n > int64(c.count) {
					break
				}
				d, err := sendTimed(cl, message(c.size, n), c.rcpts)
				record(d, err)
				var lerr smtp.LMTPDataError
				if err != nil && !errors.As(err, &lerr) {
					return // connection broken
				}
			}
			cl.Quit()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	res := &result{
		Sent: ok + fail, OK: ok, Failed: fail,
		Seconds:   elapsed.Seconds(),
		MsgPerSec: float64(ok) / elapsed.Seconds(),
		P50ms:     pct(0.50), P99ms: pct(0.99), MaxMs: pct(1),
		Conns: c.conns, Size: c.size, Recipients: len(c.rcpts),
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	if ok == 0 {
		return res, fmt.Errorf("no message delivered: %v", firstErr)
	}
	return res, nil
}

// sendTimed sends one message and returns the time from the end of its data
// to the last recipient's reply.
func sendTimed(cl *smtp.Client, msg []byte, rcpts []string) (time.Duration, error) {
	if err := cl.Mail("bench@example.net", nil); err != nil {
		return 0, err
	}
	for _, r := range rcpts {
		if err := cl.Rcpt(r, nil); err != nil {
			return 0, err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(msg); err != nil {
		return 0, err
	}
	t0 := time.Now()
	_, err = w.CloseWithLMTPResponse()
	return time.Since(t0), err
}
