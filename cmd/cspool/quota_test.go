package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool/pgstore/pgtest"
)

// imaplibDeleteAll is run by Python: it logs in, marks every message of
// INBOX \Deleted and expunges them, and prints how many it deleted.
const imaplibDeleteAll = `
import imaplib, sys
host, port, user, password = sys.argv[1:5]
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
typ, data = M.select("INBOX")
n = int(data[0])
if n:
    M.store("1:*", "+FLAGS", "(\\Deleted)")
    M.expunge()
M.logout()
print("DELETED %d" % n)
`

// TestQuotaPostfix runs cspool server with --quota behind a real Postfix,
// on both stores. Mail for alice is delivered until her log is full; then
// LMTP answers 452 4.2.2 and Postfix keeps the rest in its queue, cspool
// deliver over HTTP exits 75, and /metrics shows the refusals and a log
// near its quota without naming it. Alice deletes her mail over IMAP; her
// device, which the spool's reads told that her log is at its quota,
// writes a checkpoint at once (with the default --checkpoint-min: three
// messages deleted are far from a tenth of a mailbox or 1,000 entries),
// the spool compacts, and after a queue flush
// Postfix delivers what it kept. Every message sent is either one alice
// deleted or one she has, byte for byte: nothing acknowledged is lost, and
// nothing bounced.
func TestQuotaPostfix(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	postfix := needPostfix(t)
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	// The two stores' runs share nothing (ports, folders, Postfix
	// instances, a database of its own): they run side by side.
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		testQuotaPostfix(t, postfix, python, bin, nil)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		testQuotaPostfix(t, postfix, python, bin, []string{"--store", "postgres", "--dsn", pgtest.Database(t)})
	})
}

func testQuotaPostfix(t *testing.T, postfix, python, bin string, storeArgs []string) {
	work := postfixWorkDir(t)
	env := os.Environ()
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(alice, filepath.Join(work, "alice.sec"), filepath.Join(work, "alice.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice})
	// Each message, with the Received field Postfix adds, seals to 10,901
	// bytes (padded with Padmé, FORMAT.md §2); the device's newest
	// checkpoint takes 1,173 more. Three messages fit, a fourth does not.
	const quota = 3*10901 + 3000
	httpPort, imapPort, lmtpPort, smtpPort := freePort(t), freePort(t), freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", freePort(t))
	server := startProc(t, "cspool server", work, env, bin, append([]string{"server", "--port", fmt.Sprint(httpPort),
		"--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec", "--lmtp", lmtpAddr,
		"--quota", fmt.Sprint(quota), "--metrics-addr", strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics")},
		storeArgs...)...)
	waitHealthy(t, spoolURL, server)
	daemon := startProc(t, "cspool imap-server", work, env, bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", fmt.Sprint(imapPort), "--spool-server", spoolURL, "--status-addr", "")
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	pf := startPostfix(t, postfix, work, smtpPort, lmtpAddr)

	message := func(i int) []byte {
		return []byte(fmt.Sprintf("From: bob@example.org\r\nTo: alice@example.test\r\nSubject: quota %d\r\n"+
			"Message-ID: <quota-%d@example.org>\r\nDate: Wed, 26 Nov 2025 10:00:00 +0100\r\n\r\ntoken-%d\r\n%s",
			i, i, i, strings.Repeat(strings.Repeat("q", 98)+"\r\n", 98)))
	}
	send := func(i int) {
		t.Helper()
		path := filepath.Join(work, fmt.Sprintf("m%d.eml", i))
		if err := os.WriteFile(path, message(i), 0o600); err != nil {
			t.Fatal(err)
		}
		out := runCmd(t, work, env, "", python, "-c", smtplibSend, "127.0.0.1", fmt.Sprint(smtpPort),
			"bob@example.org", "alice@example.test", path)
		if got := strings.TrimSpace(out); got != "SENT" {
			t.Fatalf("SMTP of message %d: %q, want SENT", i, got)
		}
	}
	const total = 5
	for i := 1; i <= 3; i++ {
		send(i)
	}
	first := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 3)
	for i := 4; i <= total; i++ {
		send(i)
	}
	pf.waitLog(t, "4.2.2", 60*time.Second)
	waitMetric(t, metricsURL, "cspool_logs_near_quota", nil, 1)
	fams, text := scrape(t, metricsURL)
	if got := value(fams, "cspool_deliveries_total", "cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "over_quota"}); got < 1 {
		t.Errorf("over_quota LMTP deliveries counted: %v, want at least 1", got)
	}
	if got := value(fams, "cspool_quota_bytes", "cspool_quota_bytes", nil); got != quota {
		t.Errorf("cspool_quota_bytes = %v, want %d", got, quota)
	}
	if strings.Contains(text, "alice") {
		t.Error("/metrics names the user")
	}

	// Through HTTP, a delivery waits too: exit 75, with the reason.
	code, _, errOut := runExitStdin(t, work, env, message(99), bin, "deliver", "--user", "alice", "--user-key", "alice.pub",
		"--spool-key", "spool.sec", "--spool-server", spoolURL, "--timeout", "20s")
	if code != exTempFail || !strings.Contains(errOut, "quota") {
		t.Errorf("cspool deliver to a full log: exit %d, want %d naming the quota\n%s", code, exTempFail, errOut)
	}

	// Alice makes room; her device checkpoints, the spool compacts, and
	// the mail Postfix kept is delivered by the next flush.
	if out := runCmd(t, work, env, "", python, "-c", imaplibDeleteAll, "127.0.0.1", fmt.Sprint(imapPort), "alice", password); strings.TrimSpace(out) != "DELETED 3" {
		t.Fatalf("deleting over IMAP: %q, want DELETED 3", out)
	}
	waitMetric(t, metricsURL, "cspool_logs_near_quota", nil, 0)
	var last [][]byte
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		pf.run(t, "flush")
		last = fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 0)
		if len(last) >= total-3 || time.Now().After(deadline) {
			break
		}
	}
	// Every message sent is one alice deleted or one she has now.
	var got [][]byte
	got = append(got, first...)
	got = append(got, last...)
	if len(got) != total {
		t.Fatalf("alice had %d and has %d messages; want %d and %d of the %d sent", len(first), len(last), 3, total-3, total)
	}
	seen := map[int]bool{}
	for _, m := range got {
		var i int
		if _, tok, ok := bytes.Cut(m, []byte("\r\n\r\ntoken-")); ok {
			fmt.Sscanf(string(tok), "%d", &i)
		}
		if i < 1 || i > total || seen[i] || !bytes.HasSuffix(m, message(i)) {
			t.Errorf("a message read back is not one of those sent, or is there twice:\n%.600q", m)
		}
		seen[i] = true
	}
	pf.stop(t)
	if b, _ := os.ReadFile(pf.maillog); bytes.Contains(b, []byte("status=bounced")) {
		t.Errorf("Postfix bounced a message; a full log must defer:\n%s", b)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	if log := server.stderr.String(); !strings.Contains(log, "code=452") {
		t.Errorf("the server log has no 452 line:\n%s", log)
	}
}
