package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
)

// TestHugeHeaderRefused: `cspool server` reads a request's header up to
// api.MaxHeaderBytes and answers one beyond it 431, before any handler.
// Before, net/http's default of a megabyte held: anyone could send
// /v1/health (or any route, refused only after the parse) a megabyte of
// one-byte fields, each request costing the server 66 ms of CPU to parse,
// where a plain request cost a fiftieth of a millisecond. A header of the
// size a proxy's fields make is still served.
func TestHugeHeaderRefused(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER="+loginName())
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	port := port43k(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port), "--spool-key", "spool.sec")
	defer server.stop(t, syscall.SIGTERM, 40*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice, err := api.NewClient("http://"+addr, "alice", mustKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = alice.Health(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 20 s: %v\n%s", err, server.stderr)
		}
	}
	// fields returns about n bytes of short header fields.
	fields := func(n int) string {
		var b strings.Builder
		for i := 0; b.Len() < n; i++ {
			fmt.Fprintf(&b, "X%d: a\r\n", i)
		}
		return b.String()
	}
	status := func(header string) int {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go fmt.Fprintf(c, "GET /v1/health HTTP/1.1\r\nHost: %s\r\n%s\r\n", addr, header)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("header of %d bytes: %v", len(header), err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		bytes, want int
	}{
		{8 << 10, http.StatusOK},
		{api.MaxHeaderBytes, http.StatusOK},
		{api.MaxHeaderBytes + 8<<10, http.StatusRequestHeaderFieldsTooLarge},
		{1 << 20, http.StatusRequestHeaderFieldsTooLarge},
	} {
		if got := status(fields(tc.bytes)); got != tc.want {
			t.Errorf("a header of %d bytes of short fields: %d, want %d", tc.bytes, got, tc.want)
		}
	}
	// A device goes on.
	if _, err := alice.Append(ctx, "alice", [][]byte{[]byte("mine")}); err != nil {
		t.Errorf("alice's append after: %v", err)
	}
}
