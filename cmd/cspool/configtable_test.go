package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestConfigCommandsTable keeps docs/CONFIG.md's table of the commands that
// read a service's file in step with the code: a command takes from the
// file the settings that are its own flags and the service's ("with the
// same meaning"), so each row's "Takes from the file" is the flags the
// command shares with the service, --config aside. The table left out
// passphrase-file for cspool sync, recover and deliver and quota for
// cspool deliver, which they took all the same (a deliver refused over a
// quota no row spoke of).
func TestConfigCommandsTable(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| (`cspool [a-z-]+`(?:, `cspool [a-z-]+`)*) \\| (the daemon's file|the server's file) \\| (.*) \\|$")
	code := regexp.MustCompile("`([^`]+)`")
	services := map[string]string{"the daemon's file": "imap-server", "the server's file": "server"}
	rows := 0
	for _, l := range strings.Split(string(doc), "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		rows++
		var listed []string
		for _, k := range code.FindAllStringSubmatch(m[3], -1) {
			listed = append(listed, k[1])
		}
		slices.Sort(listed)
		service := flagNames(t, services[m[2]])
		for _, c := range code.FindAllStringSubmatch(m[1], -1) {
			sub := strings.TrimPrefix(c[1], "cspool ")
			var shared []string
			for _, f := range flagNames(t, sub) {
				if f != "config" && slices.Contains(service, f) {
					shared = append(shared, f)
				}
			}
			slices.Sort(shared)
			if !slices.Equal(listed, shared) {
				t.Errorf("docs/CONFIG.md: cspool %s takes %v from %s, the flags it shares with cspool %s; the table says %v",
					sub, shared, m[2], services[m[2]], listed)
			}
		}
	}
	if rows < 4 {
		t.Fatalf("docs/CONFIG.md: %d rows of commands reading a service's file, want the table of sync, status, export and deliver", rows)
	}
}
