package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/sendtest"
)

// smtplibSubmit logs in to the device's submission port and sends each
// file given, printing the 250 reply of each.
const smtplibSubmit = `
import smtplib, sys
host, port, user, password, sender, rcpt = sys.argv[1:7]
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.example.org")
s.login(user, password)
for path in sys.argv[7:]:
    s.mail(sender)
    s.rcpt(rcpt)
    code, msg = s.data(open(path, "rb").read())
    print(code, msg.decode())
s.quit()
`

// sendingRig is a spool server, a device daemon of alice's relaying to an
// in-process smarthost, and what restarts them.
type sendingRig struct {
	t                *testing.T
	bin, dir, python string
	env              []string
	host             *sendtest.Smarthost
	spoolArgs        []string
	spoolURL         string
	smtpPort         int
	spool, daemon    *proc
}

func newSendingRig(t *testing.T, opts sendtest.SmarthostOptions) *sendingRig {
	t.Helper()
	r := &sendingRig{t: t, bin: buildServerBinary(t), dir: t.TempDir(), python: needTool(t, "python3", "python3"), env: os.Environ()}
	alice, spoolK := mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(r.dir, name+".sec"), filepath.Join(r.dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, filepath.Join(r.dir, "users"), map[string]*keys.SecretKey{"alice": alice})
	ca := sendtest.NewCA(t, r.dir)
	r.host = sendtest.NewSmarthost(t, ca, opts)
	httpPort := freePort(t)
	r.spoolURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	r.spoolArgs = []string{"server", "--port", fmt.Sprint(httpPort), "--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec"}
	r.smtpPort = freePort(t)
	r.startSpool()
	return r
}

func (r *sendingRig) startSpool() {
	r.t.Helper()
	r.spool = startProc(r.t, "cspool server", r.dir, r.env, r.bin, r.spoolArgs...)
	waitHealthy(r.t, r.spoolURL, r.spool)
}

// startDaemon starts alice's daemon and waits for its settings.
func (r *sendingRig) startDaemon() {
	r.t.Helper()
	r.daemon = startProc(r.t, "cspool imap-server", r.dir, r.env, r.bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub", "--db", "alice.db",
		"--password", "pw", "--port", fmt.Sprint(freePort(r.t)), "--status-addr", "", "--spool-server", r.spoolURL,
		"--smtp-port", fmt.Sprint(r.smtpPort), "--relay", "smtp://"+r.host.Addr, "--relay-ca", r.host.CA.File,
		"--identity", "alice@example.org", "--relay-backoff", "100ms")
	r.daemon.waitOutput(r.t, "SMTP settings", 30*time.Second)
}

// kill ends the daemon with SIGKILL.
func (r *sendingRig) kill() {
	r.t.Helper()
	if err := r.daemon.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	<-r.daemon.done
	r.daemon.exited = true
}

// submit sends messages tagged with the given names; each gets its 250.
func (r *sendingRig) submit(names ...string) {
	r.t.Helper()
	var files []string
	for _, n := range names {
		p := filepath.Join(r.dir, n+".eml")
		msg := fmt.Sprintf("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nbody of %s\r\n", n, n, n)
		if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
			r.t.Fatal(err)
		}
		files = append(files, p)
	}
	out := runCmd(r.t, r.dir, r.env, "", r.python, append([]string{"-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(r.smtpPort),
		"alice", "pw", "alice@example.org", "bob@example.net"}, files...)...)
	if n := strings.Count(out, "250 2.0.0 Queued as"); n != len(names) {
		r.t.Fatalf("submitted %d messages, %d queued:\n%s", len(names), n, out)
	}
}

// relayedCounts counts the copies the smarthost got of each message.
func (r *sendingRig) relayedCounts() map[string]int {
	got := map[string]int{}
	for _, m := range r.host.Received() {
		for _, l := range strings.Split(string(m.Data), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				got[s]++
			}
		}
	}
	return got
}

// sentCounts stops the daemon (SIGTERM) and counts, in its database, the
// copies in Sent of each message.
func (r *sendingRig) sentCounts() map[string]int {
	r.t.Helper()
	r.daemon.stop(r.t, syscall.SIGTERM, 30*time.Second)
	ms, err := mailstore.Open(filepath.Join(r.dir, "alice.db"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer ms.Close()
	got := map[string]int{}
	for _, m := range sendtest.Messages(r.t, ms, "Sent") {
		got[m.Envelope.Subject]++
	}
	return got
}

// waitSent waits until the daemon's database shows n messages in Sent
// (read while it runs).
func (r *sendingRig) waitSent(n int) {
	r.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ms, err := mailstore.Open(filepath.Join(r.dir, "alice.db"))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			mb, err := ms.MailboxByName(ctx, "Sent")
			cancel()
			ms.Close()
			if err == nil && int(mb.Messages) >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("Sent did not reach %d messages in 60 s", n)
		}
	}
}

func checkCounts(t *testing.T, what string, got map[string]int, names []string, want func(string) (lo, hi int)) {
	t.Helper()
	for _, n := range names {
		lo, hi := want(n)
		if got[n] < lo || got[n] > hi {
			t.Errorf("%s: %s has %d copies, want %d to %d", what, n, got[n], lo, hi)
		}
	}
	if len(got) > len(names) {
		t.Errorf("%s: unexpected messages %v", what, got)
	}
}

// TestSendingSurvivesKill kills `cspool imap-server` with SIGKILL in each
// state of docs/SENDING.md's table and restarts it: after the 250 but
// before the relay (the smarthost refusing for now), after the relay but
// before the Sent copy is filed (the spool server down), and inside the
// one duplicate window (the smarthost has the message but the daemon is
// killed before its 250 arrives). Every message reaches the smarthost once,
// the one in the window at most twice, and Sent has one copy of each.
func TestSendingSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	var mu sync.Mutex
	down := true
	var blockData chan struct{} // set: DATA replies wait for it
	r := newSendingRig(t, sendtest.SmarthostOptions{
		Reply: func(stage, _ string) error {
			mu.Lock()
			defer mu.Unlock()
			if stage == "MAIL" && down {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "down for now"}
			}
			return nil
		},
		AfterData: func() {
			mu.Lock()
			ch := blockData
			mu.Unlock()
			if ch != nil {
				<-ch
			}
		},
	})
	setDown := func(v bool) {
		mu.Lock()
		down = v
		mu.Unlock()
	}
	r.startDaemon()

	// 1. Acknowledged, not relayed: the smarthost defers; kill; it comes
	// back; each message goes once.
	first := []string{"a1", "a2", "a3"}
	r.submit(first...)
	time.Sleep(300 * time.Millisecond) // a few deferred attempts
	r.kill()
	if n := len(r.host.Received()); n != 0 {
		t.Fatalf("the smarthost accepted %d messages while refusing", n)
	}
	setDown(false)
	r.startDaemon()
	r.waitSent(3)

	// 2. Relayed, not in Sent: the spool server is down, so the copies
	// cannot be filed; kill; restart both: nothing is relayed again and
	// each copy is filed once.
	r.spool.stop(t, syscall.SIGTERM, 40*time.Second)
	second := []string{"b1", "b2", "b3"}
	r.submit(second...)
	r.host.Wait(t, 6, 30*time.Second)
	time.Sleep(200 * time.Millisecond) // the filing attempts fail meanwhile
	r.kill()
	r.startSpool()
	r.startDaemon()
	r.waitSent(6)

	// 3. The duplicate window: the smarthost has the message, and the
	// daemon dies before the 250 arrives. After the restart it is sent
	// again: at most twice, and one copy in Sent.
	mu.Lock()
	blockData = make(chan struct{})
	mu.Unlock()
	r.submit("c1")
	r.host.Wait(t, 7, 30*time.Second)
	r.kill()
	mu.Lock()
	close(blockData)
	blockData = nil
	mu.Unlock()
	r.startDaemon()
	r.waitSent(7)

	all := append(append(first, second...), "c1")
	relayed := r.relayedCounts()
	checkCounts(t, "smarthost", relayed, all, func(n string) (int, int) {
		if n == "c1" {
			return 1, 2
		}
		return 1, 1
	})
	t.Logf("the message killed inside the window was relayed %d times", relayed["c1"])
	checkCounts(t, "Sent", r.sentCounts(), all, func(string) (int, int) { return 1, 1 })
}
