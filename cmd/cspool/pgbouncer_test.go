package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/spool/pgstore/pgtest"
)

// recipeLines returns the lines of the first ```ini block of the section
// named heading of a doc, without its [databases] header.
func recipeLines(t *testing.T, doc, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no section %q", doc, heading)
	}
	_, block, ok := strings.Cut(sec, "```ini\n")
	if !ok {
		t.Fatalf("%s, %q: no ```ini block", doc, heading)
	}
	block, _, _ = strings.Cut(block, "```")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		if l != "[databases]" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestPgBouncerRecipe runs the recipe of docs/POSTGRES.md, "Through
// PgBouncer": cspool's [databases] line with pool_mode=session, its dbname
// and server changed to the test's, in a PgBouncer whose default is
// transaction mode. Two servers through it (which did not start until
// the store set its parameters by SQL: "unsupported startup parameter")
// deliver over LMTP and a long poll on one wakes at a delivery through the
// other. A server given the same database through the bouncer's default
// (transaction mode) exits with status 1 naming the cause and the fix.
func TestPgBouncerRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	direct := pgtest.Database(t)
	du, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	dbname := strings.TrimPrefix(du.Path, "/")
	lines := recipeLines(t, "../../docs/POSTGRES.md", "## Through PgBouncer")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "cspool = host=127.0.0.1 port=5432 dbname=cspool ") {
		t.Fatalf("the recipe's [databases] lines changed: %q", lines)
	}
	line := strings.Replace(lines[0], "dbname=cspool", "dbname="+dbname, 1)
	line = strings.Replace(line, "host=127.0.0.1 port=5432", fmt.Sprintf("host=%s port=%s", du.Hostname(), du.Port()), 1)
	b := pgtest.StartBouncer(t, pgtest.BouncerConfig{Mode: "transaction", Databases: []string{line}})
	through := b.DSN(direct)
	tu, _ := url.Parse(through)
	tu.Path = "/cspool"
	recipe := tu.String()

	s := newPGSetupOn(t, recipe, "alice")
	bin := buildServerBinary(t)
	a, _ := s.start(t, bin, "--users-table")
	_, lmtpB := s.start(t, bin, "--users-table")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ac, err := api.NewClient(a.url, "alice", s.users["alice"], nil)
	if err != nil {
		t.Fatal(err)
	}
	lb := dialLMTP(t, lmtpB)
	defer lb.Close()
	for round := 0; round < 2; round++ {
		_, head, err := ac.Read(ctx, 1<<40, 1, 0, 0)
		if err != nil {
			t.Fatalf("reading alice's head through A: %v", err)
		}
		got := make(chan int, 1)
		go func() {
			es, _, err := ac.Read(ctx, head, 10, 1<<20, 60*time.Second)
			if err != nil {
				t.Errorf("long poll through A: %v", err)
			}
			got <- len(es)
		}()
		time.Sleep(300 * time.Millisecond) // the poll is waiting (either order passes)
		ok, code, err := lmtpSend(lb, []string{"alice"}, fmt.Sprintf("Subject: bouncer\r\n\r\ntoken=bouncer-%d\r\n", round))
		if err != nil || len(ok) != 1 {
			t.Fatalf("delivery through B: %v %d %v", ok, code, err)
		}
		if n := <-got; n != 1 {
			t.Fatalf("round %d: the long poll through A returned %d entries, want the one delivered through B", round, n)
		}
	}

	// The same database through the bouncer's default, transaction mode.
	port := freePort(t)
	cmd := exec.Command(bin, "server", "--port", fmt.Sprint(port), "--store", "postgres", "--dsn", through,
		"--spool-dir", t.TempDir(), "--spool-key", s.spoolSec, "--users-table")
	out, err := cmd.CombinedOutput()
	ee, isExit := err.(*exec.ExitError)
	if !isExit || ee.ExitCode() != exConfig {
		t.Fatalf("a server through transaction mode: %v, want exit status %d (EX_CONFIG)\n%s", err, exConfig, out)
	}
	for _, want := range []string{"sessions are shared between transactions or clients", "cspool: hint: ", "pool_mode = session"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("a server through transaction mode said:\n%s\nwant %q in it", out, want)
		}
	}
}
