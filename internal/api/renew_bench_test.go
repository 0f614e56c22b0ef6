package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRenewal is one idle device's renewal of its long-poll, as the
// server sees it at 10,000 devices: a signed read with a wait, after the
// head, on a kept-alive connection, verified, parked, its wait ended with
// nothing new, answered with the head alone, and the connection given back
// to the HTTP server. The server's wait is capped at a nanosecond so that
// the wait ends at once; everything else is the real path. Requests are
// signed before the timer starts and sent as bytes, and the answer is
// parsed with net/http's reader, so the figure is the server's work plus
// a little reading. cpu-ns/op is the process's CPU time (user and
// system) per renewal, both ends together.
func BenchmarkRenewal(b *testing.B) {
	e := newEnv(b, false, func(c *Config) { c.MaxWait = time.Nanosecond; c.MaxNonces = 1 << 22 })
	ctx := context.Background()
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		b.Fatal(err)
	}
	reqs := make([][]byte, b.N)
	now := time.Now()
	for i := range reqs {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/users/alice/entries?after=1&wait=300", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := SignRequest(req, nil, e.alice, now); err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			b.Fatal(err)
		}
		reqs[i] = buf.Bytes()
	}
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	renew := func(req []byte) {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cspool-Head") != "1" || resp.Close {
			b.Fatalf("status %d, head %q, close %v; want 200, 1, kept alive", resp.StatusCode, resp.Header.Get("Cspool-Head"), resp.Close)
		}
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := range b.N {
		renew(reqs[i])
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time the process used so far (user and
// system), in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
