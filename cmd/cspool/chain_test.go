package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	args := func(lmtp string) []string {
		return []string{"--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
			"--spool-key", filepath.Join(dir, "spool.sec"), "--lmtp", lmtp, "--lmtp-domains", "example.org"}
	}
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
