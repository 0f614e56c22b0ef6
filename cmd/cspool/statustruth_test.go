package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/statuspage"
)

// TestStatusTellsTheTruth runs the daemon through a spool outage and a
// restore of the spool from a backup (docs/OPERATING.md, "Backups"), and
// reads cspool status, the status page and IMAP at each step: while the
// spool does not answer, nothing says "up to date" and the head is unknown,
// with the last contact, the error and what to do; after the restore the
// spool's head is shown below the device's position, the alarm is the last
// error, and an IMAP change is refused naming the alarm, not as a server
// bug. Every message acknowledged stays on the device.
func TestStatusTellsTheTruth(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	port := strings.TrimPrefix(s.spoolURL, "http://127.0.0.1:")
	restartSpool := func() {
		t.Helper()
		s.server = startProc(t, "cspool server (again)", s.dir, s.env, bin, "server", "--port", port, "--spool-key", "spool.sec")
		waitHealthy(t, s.spoolURL, s.server)
	}
	s.deliver(t, 2)
	s.startDaemon(t, "mail.db")
	s.waitReport(t, "position 2", func(r *statuspage.Report) bool { return r.Sync.Position == 2 })

	// The operator's backup, taken with the server stopped (the spool
	// directory as a whole), then two more messages.
	s.server.stop(t, syscall.SIGTERM, 30*time.Second)
	copyDir(t, filepath.Join(s.dir, "spool"), filepath.Join(s.dir, "spool-backup"))
	restartSpool()
	s.deliver(t, 2)
	s.waitReport(t, "position 4, up to date", func(r *statuspage.Report) bool {
		return r.Sync.Position == 4 && r.Sync.State == statuspage.StateCurrent
	})
	status := func() string {
		t.Helper()
		code, out, errOut := runExit(t, s.dir, s.env, bin, "status", "--db", "mail.db")
		if code != 0 {
			t.Fatalf("cspool status: exit %d, stderr %q", code, errOut)
		}
		return out
	}
	if out := status(); !strings.Contains(out, "Position:      4 of 4 (up to date)") {
		t.Fatalf("cspool status with the spool up:\n%s", out)
	}

	// The spool stops: the head is unknown, not "up to date". The
	// daemon's long poll in flight may end first with the stopping
	// server's EOF; its next try, a backoff later, finds the port closed.
	// The report waited for is that one: the spool not answering at all.
	s.server.stop(t, syscall.SIGTERM, 30*time.Second)
	s.waitReport(t, "the spool refusing connections", func(r *statuspage.Report) bool {
		return !r.Sync.Connected && strings.Contains(r.Sync.LastError, "connection refused")
	})
	out := status()
	for _, want := range []string{
		"Sync:          NOT CONNECTED: no answer from the spool " + s.spoolURL + " since ",
		"Position:      4 applied; the spool's head is unknown now (4 at the last contact)",
		"TO DO: Nothing yet: the daemon keeps trying by itself",
		"connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cspool status with the spool stopped lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "up to date") || strings.Contains(out, "Last error:    none") || strings.Contains(out, "Last contact:  never") {
		t.Errorf("cspool status with the spool stopped claims what it does not know:\n%s", out)
	}
	page := s.page(t)
	for _, want := range []string{`<span id="lag" class="warn">unknown</span>`, `<span id="head" class="warn">unknown</span> now (4 at the last contact)`,
		`<span id="connected" class="warn">NOT CONNECTED`, `<ul id="actions"><li>Nothing yet`} {
		if !strings.Contains(page, want) {
			t.Errorf("status page with the spool stopped lacks %q", want)
		}
	}
	if strings.Contains(page, "up to date") {
		t.Errorf("status page with the spool stopped says up to date:\n%s", page)
	}

	// The operator restores the backup: the spool's log ends at 2.
	if err := os.RemoveAll(filepath.Join(s.dir, "spool")); err != nil {
		t.Fatal(err)
	}
	copyDir(t, filepath.Join(s.dir, "spool-backup"), filepath.Join(s.dir, "spool"))
	restartSpool()
	s.waitReport(t, "the rollback alarm", func(r *statuspage.Report) bool { return len(r.Alarms) > 0 })
	out = status()
	const rollback = "the spool's head 2 is behind position 4, which this device already applied: the log was rolled back"
	for _, want := range []string{
		"ALARM: sync stopped at position 4: " + rollback,
		"TO DO: Do not delete this device's database",
		"Sync:          STOPPED by the integrity alarm; connected to the spool",
		"Position:      4 applied; the spool's head is 2, behind what this device applied",
		"Last error:    the integrity alarm above stopped the sync",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cspool status after the restore lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "up to date") || strings.Contains(out, "Last error:    none") {
		t.Errorf("cspool status after the restore claims all is well:\n%s", out)
	}
	page = s.page(t)
	for _, want := range []string{`<span id="head" class="err">2</span> behind what this device applied`, `<span id="lag" class="err">stopped</span>`} {
		if !strings.Contains(page, want) {
			t.Errorf("status page after the restore lacks %q", want)
		}
	}

	// An IMAP change now names the alarm.
	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", s.imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(s.user, s.password).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	err = c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != imap.ResponseCodeContactAdmin ||
		!strings.Contains(ie.Text, rollback) || !strings.Contains(ie.Text, "cspool status") {
		t.Errorf("STORE during the alarm: %v, want NO [CONTACTADMIN] naming the alarm and cspool status", err)
	}
	r := s.waitReport(t, "INBOX", func(r *statuspage.Report) bool { return true })
	if inboxCount(r) != 4 {
		t.Errorf("INBOX has %d messages on the device after the restore, want the 4 acknowledged", inboxCount(r))
	}
}

// page reads the daemon's status page (HTML) with the IMAP login.
func (s *statusSetup) page(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.statusAddr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(s.user, s.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status page: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// copyDir copies a directory tree with cp -a (modes and all).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}
