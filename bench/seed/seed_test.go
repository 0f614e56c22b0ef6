package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// TestSeededDeviceServesAsSynced writes a spool's log and a device's
// database with `seed spool --device`, then serves the log with cspool
// server and runs two cspool imap-server processes: one on the seeded
// database, one on a new database that makes its real first sync. The
// seeded daemon must find itself at the log's head without applying
// anything, and both must answer SELECT, UID FETCH of every message's
// UID, FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE and BODY[], and
// searches (the index's and a scan's) with the same bytes.
func TestSeededDeviceServesAsSynced(t *testing.T) {
	const count = 240
	dir := t.TempDir()
	bin := filepath.Join(dir, "cspool")
	build := exec.Command("go", "build", "-o", bin, "cspool/cmd/cspool")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cspool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("gen-keys", at("user.sec"), at("user.pub"))
	run("gen-keys", at("spool.sec"), at("spool.pub"))
	pub, err := os.ReadFile(at("user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(pub), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			line = l
		}
	}
	if err := os.WriteFile(at("users"), []byte("alice "+line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Batches of 100 leave a short last one; 3 KB messages.
	if err := seedSpool([]string{"--spool-dir", at("spool"), "--user", "alice", "--user-key", at("user.pub"),
		"--spool-key", at("spool.sec"), "--count", strconv.Itoa(count), "--size", "3000", "--batch", "100",
		"--device", at("seeded.db"), "--user-secret", at("user.sec")}); err != nil {
		t.Fatalf("seed spool --device: %v", err)
	}

	start := func(args ...string) *testproc.Buffer {
		t.Helper()
		var out testproc.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("cspool %s:\n%s", args[0], out.String())
			}
		})
		return &out
	}
	sp := testproc.FreePort(t)
	start("server", "--spool-dir", at("spool"), "--users", at("users"), "--spool-key", at("spool.sec"), "--port", strconv.Itoa(sp))
	waitListen(t, sp)
	device := func(db string) int {
		port := testproc.FreePort(t)
		start("imap-server", "--user", "alice", "--user-key", at("user.sec"), "--user-public-key", at("user.pub"),
			"--spool-key", at("spool.pub"), "--spool-server", fmt.Sprintf("http://127.0.0.1:%d", sp), "--db", at(db),
			"--password", "pw", "--port", strconv.Itoa(port), "--status-addr", "")
		waitListen(t, port)
		return port
	}
	seeded := device("seeded.db")
	synced := device("synced.db")

	// The seeded daemon is at the log's head, applied nothing, and its
	// index is complete; the other one syncs until it is too.
	type status struct {
		Sync struct {
			State    string `json:"state"`
			Position uint64 `json:"position"`
			Head     uint64 `json:"head"`
			Applied  int    `json:"applied"`
			Alarm    string `json:"alarm"`
		} `json:"sync"`
		Search struct {
			Unindexed int `json:"unindexed"`
		} `json:"search"`
	}
	read := func(db string) status {
		t.Helper()
		var st status
		out, err := exec.Command(bin, "status", "--db", at(db), "--json").Output()
		if err == nil {
			err = json.Unmarshal(out, &st)
		}
		if err != nil {
			t.Fatalf("cspool status --db %s: %v\n%s", db, err, out)
		}
		return st
	}
	for _, db := range []string{"synced.db", "seeded.db"} {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			st := read(db)
			if st.Sync.Position == count && st.Sync.Head == count && st.Search.Unindexed == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v after 2 minutes, want position and head %d, nothing unindexed", db, st, count)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if st := read("seeded.db"); st.Sync.Applied != 0 || st.Sync.State != "current" || st.Sync.Alarm != "" {
		t.Errorf("the seeded daemon: %+v, want current, nothing applied, no alarm", st.Sync)
	}
	if st := read("synced.db"); st.Sync.Applied != count {
		t.Errorf("the daemon that synced applied %d, want %d", st.Sync.Applied, count)
	}

	cmds := []string{
		"SELECT INBOX",
		"UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY.PEEK[])",
		"UID SEARCH HEADER Message-ID <bench-1-120@example.org>",
		"UID SEARCH BODY quarterly",
		"UID SEARCH SUBJECT \"message 17 \"",
		"UID SEARCH TEXT xylophone",
	}
	want := session(t, seeded, cmds)
	got := session(t, synced, cmds)
	// \Recent is the one difference allowed: it marks what arrived while
	// the daemon ran, and the seeded one saw nothing arrive.
	for i := range got {
		got[i] = unrecent.ReplaceAll(got[i], nil)
		got[i] = recentCount.ReplaceAll(got[i], []byte("* 0 RECENT\r\n"))
	}
	for i, c := range cmds {
		if !bytes.Equal(want[i], got[i]) {
			t.Errorf("%s: the seeded daemon answered %d bytes, the one that synced %d; first difference at byte %d:\nseeded: %.300q\nsynced: %.300q",
				c, len(want[i]), len(got[i]), firstDiff(want[i], got[i]), tail(want[i], firstDiff(want[i], got[i])), tail(got[i], firstDiff(want[i], got[i])))
		}
	}
	// The answers are not empty: every message fetched, one found by its
	// Message-ID.
	if n := bytes.Count(want[1], []byte(" FETCH (")); n != count {
		t.Errorf("UID FETCH answered %d messages, want %d", n, count)
	}
	if !bytes.Contains(want[2], []byte("* SEARCH 121\r\n")) {
		t.Errorf("SEARCH HEADER Message-ID answered %q, want UID 121", want[2])
	}
}

var (
	unrecent    = regexp.MustCompile(`\\Recent ?| \\Recent`)
	recentCount = regexp.MustCompile(`(?m)^\* \d+ RECENT\r\n`)
)

// session logs in on 127.0.0.1:port and returns the answer to each of
// cmds, untagged lines and literals included, up to its tagged line.
func session(t *testing.T, port int, cmds []string) [][]byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i, c := range append([]string{"LOGIN alice pw"}, cmds...) {
		tag := fmt.Sprintf("t%d", i)
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, c); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v after %q", c, err, b.String())
			}
			b.WriteString(line)
			if n, ok := literal(line); ok {
				if _, err := io.CopyN(&b, r, n); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if strings.HasPrefix(line, tag+" ") {
				if !strings.HasPrefix(line, tag+" OK") {
					t.Fatalf("%s: %s", c, line)
				}
				break
			}
		}
		if i > 0 {
			out = append(out, b.Bytes())
		}
	}
	return out
}

// literal returns n if line ends with a literal's {n}.
func literal(line string) (int64, bool) {
	line = strings.TrimSuffix(line, "\r\n")
	if !strings.HasSuffix(line, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(line[i+1:len(line)-1], 10, 64)
	return n, err == nil
}

func waitListen(t *testing.T, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nothing listening on port %d after 30 s", port)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func firstDiff(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

func tail(b []byte, i int) []byte { return b[max(0, i-40):] }
