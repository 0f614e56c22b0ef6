package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/statuspage"
)

// chromium runs Debian's headless chromium once (bounded to 60 s, the whole
// process group killed on timeout) with extra flags and the URL, and
// returns its standard output.
func chromium(t *testing.T, bin, target string, extra ...string) string {
	t.Helper()
	profile := t.TempDir()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile}, extra...)
	args = append(args, target)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, stderr.String())
	}
	return stdout.String()
}

// TestStatusPageInBrowser runs a spool server and a daemon from the built
// binary, delivers two messages, and reads the status page with a real
// headless browser: the DOM it built, and a screenshot.
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary and a browser")
	}
	browser := needTool(t, "chromium", "chromium")
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	s.startDaemon(t, "mail.db")
	s.deliver(t, 2)
	s.waitReport(t, "position 2 and INBOX 2", func(r *statuspage.Report) bool {
		return r.Sync.Position == 2 && r.Sync.Head == 2 && inboxCount(r) == 2
	})
	page := (&url.URL{Scheme: "http", User: url.UserPassword(s.user, s.password), Host: s.statusAddr, Path: "/"}).String()

	dom := chromium(t, browser, page, "--dump-dom")
	for _, want := range []string{
		`<span id="user">alice</span>`,
		fmt.Sprintf(`<td id="imap-port" class="mono">%d</td>`, s.imapPort),
		`<td id="imap-user" class="mono">alice</td>`,
		`<span id="connected" class="ok">connected to the spool http://127.0.0.1:`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the browser's DOM lacks %s", want)
		}
	}
	inbox := regexp.MustCompile(`<tr data-mailbox="INBOX">.*?data-messages="(\d+)".*?data-unseen="(\d+)"`).FindStringSubmatch(dom)
	if inbox == nil || inbox[1] != "2" || inbox[2] != "2" {
		t.Errorf("INBOX row %q, want 2 messages, 2 unseen", inbox)
	}
	pos := regexp.MustCompile(`<span id="position" class="mono">(\d+)</span>`).FindStringSubmatch(dom)
	head := regexp.MustCompile(`<span id="head" class="mono">(\d+)</span>`).FindStringSubmatch(dom)
	if pos == nil || head == nil || pos[1] != head[1] || pos[1] != "2" {
		t.Errorf("position %q, head %q; want both 2", pos, head)
	}
	if strings.Contains(dom, `class="alarm"`) || strings.Contains(dom, s.password) || strings.Contains(dom, "status test") {
		t.Error("the page shows an alarm, the password or message contents")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	// A wrong password gets no data (headless chromium shows nothing for
	// a refused login).
	bad := (&url.URL{Scheme: "http", User: url.UserPassword(s.user, s.password+"x"), Host: s.statusAddr, Path: "/"}).String()
	if dom := chromium(t, browser, bad, "--dump-dom"); strings.Contains(dom, "INBOX") || strings.Contains(dom, `id="position"`) {
		t.Errorf("with a wrong password the browser got:\n%s", dom)
	}

	// The screenshot is a rendered page, styled: the "connected" text is
	// drawn in the page's green, which only the inline style (allowed by
	// the Content-Security-Policy's hash) can give it.
	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, browser, page, "--window-size=1000,1200", "--hide-scrollbars", "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	dark, green := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			if r+g+bl < 200 {
				dark++
			}
			if g > 80 && r < 60 && bl < 70 && g > r+40 {
				green++
			}
		}
	}
	t.Logf("screenshot %dx%d: %d dark pixels, %d green", b.Dx(), b.Dy(), dark, green)
	if b.Dx() < 500 || b.Dy() < 500 || dark < 2000 || green < 20 {
		t.Errorf("screenshot %dx%d has %d dark and %d green pixels; want a rendered, styled page", b.Dx(), b.Dy(), dark, green)
	}
}
