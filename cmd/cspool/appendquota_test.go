package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// imaplibAppendQuota is run by Python: it logs in, APPENDs count messages
// of size bytes into INBOX and prints one line per APPEND: the status (OK,
// NO) and the server's text.
const imaplibAppendQuota = `
import imaplib, sys
host, port, user, password, count, size = sys.argv[1:7]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
line = ("x" * 98 + "\r\n").encode()
for i in range(int(count)):
    head = ("From: alice@example.test\r\nSubject: big %d\r\n\r\n" % i).encode()
    body = head + line * (int(size) // len(line))
    typ, data = M.append("INBOX", None, None, body)
    print(typ + " " + b" ".join(d for d in data if d).decode())
M.logout()
`

// imaplibDeleteAppend is run by Python: it deletes every message of INBOX,
// then APPENDs one message of size bytes until it is taken (at most 90
// tries a second apart; between tries, a CREATE and a DELETE of a mailbox,
// small changes the device reads back, bring it the spool's usage since
// its checkpoint). It prints the number of tries, or FULL.
const imaplibDeleteAppend = `
import imaplib, sys, time
host, port, user, password, size = sys.argv[1:6]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
typ, data = M.select("INBOX")
if int(data[0]):
    M.store("1:*", "+FLAGS", "(\\Deleted)")
    M.expunge()
line = ("x" * 98 + "\r\n").encode()
body = b"From: alice@example.test\r\nSubject: after\r\n\r\n" + line * (int(size) // len(line))
for i in range(90):
    typ, data = M.append("INBOX", None, None, body)
    if typ == "OK":
        print(i + 1)
        break
    if b"OVERQUOTA" not in b" ".join(d for d in data if d):
        raise Exception("APPEND: %s %r" % (typ, data))
    M.create("poke")
    M.delete("poke")
    time.sleep(1)
else:
    print("FULL")
M.logout()
`

// TestAppendOverQuotaIMAP runs cspool server with a 5 MB --quota (and a
// 4 MB --quota-margin for the user's own appends) and a device, and APPENDs ten 1.4 MB messages over IMAP (imaplib). Before,
// all ten were answered OK and the spool held 17 MB for alice. Now the
// APPENDs that would take her log past the quota get NO [OVERQUOTA], the
// log stays within it, and every message answered OK is in INBOX. Once she
// deletes them, the device's checkpoint lets the spool compact, and an
// APPEND is taken again.
func TestAppendOverQuotaIMAP(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Python")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	work := t.TempDir()
	env := os.Environ()
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(alice, filepath.Join(work, "alice.sec"), filepath.Join(work, "alice.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice})
	const quota, size, count = 5_000_000, 1_400_000, 10
	httpPort, imapPort := freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", freePort(t))
	server := startProc(t, "cspool server", work, env, bin, "server", "--port", fmt.Sprint(httpPort),
		"--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec", "--quota", fmt.Sprint(quota), "--quota-margin", "4000000",
		"--metrics-addr", strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics"))
	waitHealthy(t, spoolURL, server)
	daemon := startProc(t, "cspool imap-server", work, env, bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", fmt.Sprint(imapPort), "--spool-server", spoolURL, "--status-addr", "")
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	port := fmt.Sprint(imapPort)

	out := runCmd(t, work, env, "", python, "-c", imaplibAppendQuota, "127.0.0.1", port, "alice", password, fmt.Sprint(count), fmt.Sprint(size))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != count {
		t.Fatalf("%d APPEND answers, want %d:\n%s", len(lines), count, out)
	}
	taken := 0
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "OK ") && taken == i:
			taken++
		case strings.HasPrefix(l, "NO ") && strings.Contains(l, "[OVERQUOTA]") && strings.Contains(l, "delete mail"):
		default:
			t.Errorf("APPEND %d: %q, want OK for the first ones, NO [OVERQUOTA] once the log is full", i+1, l)
		}
	}
	// 1.4 MB seals to about 1.44 MB: three fit in 5 MB, a fourth does not.
	if taken != 3 {
		t.Errorf("%d APPENDs taken, want 3 (of %d bytes each, quota %d)\n%s", taken, size, quota, out)
	}
	fams, _ := scrape(t, metricsURL)
	if got := value(fams, "cspool_log_bytes_max", "cspool_log_bytes_max", nil); got > quota || got < float64(taken*size) {
		t.Errorf("alice's log holds %v bytes, want between %d and the quota, %d", got, taken*size, quota)
	}
	if got := fetchIMAP(t, python, "127.0.0.1", port, "alice", password, taken); len(got) != taken {
		t.Errorf("INBOX holds %d messages, want the %d APPENDs answered OK", len(got), taken)
	}

	out = runCmd(t, work, env, "", python, "-c", imaplibDeleteAppend, "127.0.0.1", port, "alice", password, fmt.Sprint(size))
	if strings.TrimSpace(out) == "FULL" {
		t.Fatalf("after deleting every message, an APPEND was still refused for 90 s")
	}
	t.Logf("after deleting, the APPEND was taken at try %s", strings.TrimSpace(out))
}
