package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
)

// A server started with --entry-format 3 seals its LMTP deliveries as the
// steps of one chain for each user (docs/FORMAT.md §2, "Version 3: a chain of keys"); a restart starts
// a new chain; a device syncs and applies them all, as it does version 2.
// Any other format is refused at start.
func TestServerEntryFormat3(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	args := func(lmtp string) []string { return lmtpServerArgs(dir, usersPath, lmtp) }
	env := append(os.Environ(), "USER=alice")
	code, _, stderr := runExit(t, dir, env, bin, append([]string{"server", "--entry-format", "4"}, args("127.0.0.1:1")...)...)
	if code != 2 || !strings.Contains(stderr, "--entry-format 4") {
		t.Fatalf("--entry-format 4: exit %d, want 2 (usage) naming the flag:\n%s", code, stderr)
	}

	deliverN := func(lmtp string, from, n int) {
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		for i := from; i < from+n; i++ {
			body := fmt.Sprintf("From: bob@example.net\r\nTo: alice@example.org\r\nSubject: chained %d\r\n\r\n%s\r\n", i, strings.Repeat("x", i*50000))
			if err := lc.SendMail("bob@example.net", []string{"alice@example.org"}, strings.NewReader(body)); err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
		}
	}
	sync := func(url, want string) {
		code, out, stderr := runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", "mail.db", "--spool-server", url,
			"--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub")
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("sync: exit %d, want %q:\n%s\n%s", code, want, out, stderr)
		}
	}

	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, append([]string{"--entry-format", "3"}, args(lmtpAddr)...)...)
	deliverN(lmtpAddr, 0, 8) // the last ones span several chunks
	if log := p.stderr.String(); !strings.Contains(log, "entry_format=3") {
		t.Errorf("the server's start line does not name the entry format:\n%s", log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ac, err := api.NewClient(p.url, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries, _, err := ac.Read(ctx, 0, 100, 64<<20, 0)
	if err != nil || len(entries) != 8 {
		t.Fatalf("read: %d entries, %v", len(entries), err)
	}
	for i, e := range entries {
		if e.Data[4] != 3 || !bytes.Equal(e.Data[21:53], entries[0].Data[21:53]) || !bytes.Equal(e.Data[53:57], []byte{0, 0, 0, byte(i)}) {
			t.Fatalf("entry %d: header %x, want version 3, step %d of the first one's chain", i, e.Data[:57], i)
		}
	}
	sync(p.url, "8 applied")
	first := entries[0].Data[21:53]
	p.stop(t)

	p = startServer(t, bin, append([]string{"--entry-format", "3"}, args(lmtpAddr)...)...)
	defer p.stop(t)
	deliverN(lmtpAddr, 8, 1)
	if ac, err = api.NewClient(p.url, "alice", alice, nil); err != nil {
		t.Fatal(err)
	}
	entries, _, err = ac.Read(ctx, 8, 100, 64<<20, 0)
	if err != nil || len(entries) != 1 {
		t.Fatalf("read after the restart: %d entries, %v", len(entries), err)
	}
	if d := entries[0].Data; d[4] != 3 || bytes.Equal(d[21:53], first) || !bytes.Equal(d[53:57], []byte{0, 0, 0, 0}) {
		t.Fatalf("after a restart: header %x, want step 0 of a new chain", d[:57])
	}
	sync(p.url, "1 applied")
}

// The server's default, --entry-format auto: a user's LMTP deliveries are
// sealed in format 3 once every read of the log has said, for
// --entry-format-after, that its device reads format 3, and in format 2
// as soon as a device that does not say it (one built before format 3)
// reads the log. A log this release's store makes has every read
// recorded from its start: format 3 from its first delivery. Across a
// restart, from the store.
func TestServerEntryFormatAuto(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := append(lmtpServerArgs(dir, usersPath, lmtpAddr), "--entry-format-after", "0s")
	p := startServer(t, bin, args...)
	if log := p.stderr.String(); !strings.Contains(log, "entry_format=auto entry_format_after=0s") {
		t.Errorf("the server's start line does not name the entry format:\n%s", log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := 0
	// deliver delivers one message and returns its entry's format.
	deliver := func() byte {
		t.Helper()
		n++
		lc := dialLMTP(t, lmtpAddr)
		defer lc.Close()
		body := fmt.Sprintf("From: bob@example.net\r\nTo: alice@example.org\r\nSubject: auto %d\r\n\r\nhello\r\n", n)
		if err := lc.SendMail("bob@example.net", []string{"alice@example.org"}, strings.NewReader(body)); err != nil {
			t.Fatalf("delivery %d: %v", n, err)
		}
		ac, err := api.NewClient(p.url, "alice", alice, nil)
		if err != nil {
			t.Fatal(err)
		}
		es, _, err := ac.Read(ctx, uint64(n-1), 1, 1<<20, 0) // says reads=4, as every device of this release
		if err != nil || len(es) != 1 {
			t.Fatalf("reading delivery %d: %d entries, %v", n, len(es), err)
		}
		return es[0].Data[4]
	}
	// As a device built before format 3 reads, at the head (an entry of
	// format 3 would stop it): no reads parameter; signed again with the
	// timestamp a server just started asks for.
	oldRead := func() {
		t.Helper()
		ts := time.Now()
		for range 2 {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/users/alice/entries?after=%d&max_count=1", p.url, n), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := api.SignRequest(req, nil, alice, ts); err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			earliest, err := strconv.ParseInt(resp.Header.Get(api.HeaderEarliestTS), 10, 64)
			if err != nil {
				t.Fatalf("an old device's read: %s", resp.Status)
			}
			ts = time.Unix(earliest, 0)
		}
		t.Fatal("an old device's read: refused twice")
	}
	if v := deliver(); v != 3 {
		t.Fatalf("a new log, before any read: format %d, want 3", v)
	}
	if v := deliver(); v != 3 {
		t.Fatalf("after a read saying reads=4: format %d, want 3", v)
	}
	oldRead()
	if v := deliver(); v != 2 {
		t.Fatalf("after an old device's read: format %d, want 2", v)
	}
	p.stop(t)
	// Restarted with a day to wait: the time recorded (the read after the
	// old device's) is not a day old.
	args[len(args)-1] = "24h"
	p = startServer(t, bin, args...)
	defer p.stop(t)
	if v := deliver(); v != 2 {
		t.Fatalf("restarted, with a day to wait: format %d, want 2", v)
	}
}

// lmtpServerArgs are the flags of a server on dir's spool (aliceWithSpool)
// delivering over LMTP at lmtp for example.org.
func lmtpServerArgs(dir, usersPath, lmtp string) []string {
	return []string{"--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--spool-key", filepath.Join(dir, "spool.sec"), "--lmtp", lmtp, "--lmtp-domains", "example.org"}
}
