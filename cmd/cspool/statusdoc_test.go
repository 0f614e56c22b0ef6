package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestStatusUnsafeDirAsDocumented runs `cspool status` against a socket
// directory of mode 0755 and requires docs/STATUS.md's lines ("The control
// socket") exactly, with the doc's /home/alice/mail.db for the test's
// database. The error named the control socket and the HTTP request the
// client made through it ("fetching DB.run/control.sock: Get
// \"http://cspool-daemon/status.json\": socket directory ..."), which said
// nothing to the user that the directory's own words did not.
func TestStatusUnsafeDirAsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/STATUS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### The control socket\n")
	if !ok {
		t.Fatal(`docs/STATUS.md has no "### The control socket"`)
	}
	blocks := codeBlocks(section)
	if len(blocks) == 0 || !strings.Contains(blocks[0], "cspool: error: refusing to talk to the daemon:") {
		t.Fatalf("docs/STATUS.md, The control socket: want the error of cspool status first, got %q", blocks)
	}
	var want []string
	for _, l := range strings.Split(blocks[0], "\n") {
		if l = strings.TrimSpace(l); l != "" {
			want = append(want, l)
		}
	}

	db := filepath.Join(t.TempDir(), "mail.db")
	if err := os.Mkdir(db+".run", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(db+".run", 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	code := run(e, []string{"status", "--db", db})
	got := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	wantText := strings.ReplaceAll(strings.Join(want, "\n"), "/home/alice/mail.db", db)
	if code != 1 || strings.Join(got, "\n") != wantText || stdout.Len() != 0 {
		t.Errorf("cspool status --db %s on a socket directory of mode 0755: exit %d, stdout %q, stderr\n%s\nwant exit 1 and docs/STATUS.md's\n%s",
			db, code, stdout.String(), stderr.String(), wantText)
	}
}

// TestStatusSynopses keeps docs/STATUS.md's synopses of cspool status and
// cspool sync ("cspool SUB [--flag ...]", the first block of the
// subcommand's section) in step with the flags: every flag the subcommand
// has, and no other. The sync synopsis lacked --debug, --max-message-size
// and --passphrase-file.
func TestStatusSynopses(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/STATUS.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"status", "sync"} {
		heading := "\n## `cspool " + sub + "`\n"
		_, section, ok := strings.Cut(string(doc), heading)
		if !ok {
			t.Errorf("docs/STATUS.md has no %q", strings.TrimSpace(heading))
			continue
		}
		blocks := codeBlocks(section)
		if len(blocks) == 0 || !strings.HasPrefix(blocks[0], "cspool "+sub+" [") {
			t.Errorf("docs/STATUS.md, cspool %s: want the synopsis \"cspool %s [...]\" first, got %q", sub, sub, blocks)
			continue
		}
		documented := map[string]bool{}
		for _, m := range regexp.MustCompile(`\[--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(blocks[0], -1) {
			documented[m[1]] = true
		}
		for _, m := range regexp.MustCompile(`\| --([a-z][a-z0-9-]*)`).FindAllStringSubmatch(blocks[0], -1) {
			documented[m[1]] = true
		}
		has := map[string]bool{}
		for _, f := range flagNames(t, sub) {
			has[f] = true
			if !documented[f] {
				t.Errorf("docs/STATUS.md, the synopsis of cspool %s lacks --%s", sub, f)
			}
		}
		for f := range documented {
			if !has[f] {
				t.Errorf("docs/STATUS.md, the synopsis of cspool %s gives --%s, which is no flag of it", sub, f)
			}
		}
	}
}
