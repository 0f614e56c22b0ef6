package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestOpenSecretKeyAsDocumented holds docs/OPERATING.md's paragraph on a
// secret key file its group or others may read to the commands: the exit
// status it gives every command, and the one it gives cspool deliver, are
// what cspool server and cspool deliver exit with on such a spool key (mode
// 0644), with the doc's error text. The paragraph gave every command exit
// 1, and cspool deliver exits 77 (sysexits, docs/DELIVERY.md).
func TestOpenSecretKeyAsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, ok := strings.Cut(string(doc), "\nA secret key file, the user's or the spool's,")
	if !ok {
		t.Fatal(`docs/OPERATING.md has no paragraph "A secret key file, the user's or the spool's, ..."`)
	}
	para, _, _ = strings.Cut(para, "\n\n")
	para = strings.Join(strings.Fields(para), " ")
	all := regexp.MustCompile(`refused by every command that loads it, exit (\d+)`).FindStringSubmatch(para)
	deliver := regexp.MustCompile("`cspool deliver` (\\d+)").FindStringSubmatch(para)
	if all == nil || deliver == nil || !strings.Contains(para, "secret key file is readable by its group or others: permissions 0640") {
		t.Fatalf("docs/OPERATING.md: the paragraph on open secret keys gives no exit status for every command and for cspool deliver, or no error text:\n%s", para)
	}
	want := map[string]int{}
	want["server"], _ = strconv.Atoi(all[1])
	want["deliver"], _ = strconv.Atoi(deliver[1])

	dir := t.TempDir()
	var out bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	key := filepath.Join(dir, "spool.sec")
	if code := run(e, []string{"gen-keys", key, filepath.Join(dir, "spool.pub")}); code != 0 {
		t.Fatalf("gen-keys: exit %d\n%s", code, out.String())
	}
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for sub, args := range map[string][]string{
		"server":  {"server", "--users", users, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", key, "--port", "0"},
		"deliver": {"deliver", "--users", users, "--user", "alice", "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", key},
	} {
		var stderr bytes.Buffer
		e := &env{stdin: strings.NewReader("Subject: x\r\n\r\nx\r\n"), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
		code := run(e, args)
		if code != want[sub] || !strings.Contains(stderr.String(), "secret key file is readable by its group or others: permissions 0640") {
			t.Errorf("cspool %s with a spool key of mode 0640: exit %d, stderr\n%s\nwant exit %d (docs/OPERATING.md) and the doc's error", sub, code, stderr.String(), want[sub])
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "spool")); err == nil {
		t.Error("a refused command made the spool directory; the doc says nothing is made")
	}
}
