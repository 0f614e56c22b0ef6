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

// TestConfigUnreadableAsDocumented runs commands on a config file that
// does not exist and requires the exit statuses docs/CONFIG.md gives for
// it: its status for every command, and cspool deliver's (the mail
// system's statuses, docs/DELIVERY.md, whose table lists no 1). cspool
// deliver exited 1, a status outside sysexits, which an MTA reads as
// whatever it reads an unknown status as.
func TestConfigUnreadableAsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	m := regexp.MustCompile("A config file that cannot be read \\(missing, say\\) is a failure, not a usage error: exit status (\\d+) \\(`cspool deliver`: (\\d+)").FindStringSubmatch(text)
	if m == nil {
		t.Fatal("docs/CONFIG.md: no \"A config file that cannot be read (missing, say) is a failure, not a usage error: exit status N (`cspool deliver`: M\"")
	}
	all, _ := strconv.Atoi(m[1])
	deliver, _ := strconv.Atoi(m[2])
	missing := filepath.Join(t.TempDir(), "missing.conf")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"server", "--config", missing}, all},
		{[]string{"status", "--config", missing}, all},
		{[]string{"deliver", "--config", missing, "--user", "alice"}, deliver},
	} {
		var stderr bytes.Buffer
		e := &env{stdin: strings.NewReader("Subject: x\r\n\r\nx\r\n"), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
		if code := run(e, c.args); code != c.code || !strings.Contains(stderr.String(), "reading config file") {
			t.Errorf("cspool %v: exit %d, stderr %q; want %d (docs/CONFIG.md) and the file's error", c.args, code, stderr.String(), c.code)
		}
	}
}
