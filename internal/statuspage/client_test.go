package statuspage

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"cspool/internal/ownersock"
)

func TestFetch(t *testing.T) {
	t.Parallel()
	srv := serve(t, Config{Source: &fixedSource{r: sampleReport()}, User: "alice", Password: "s3cret"})
	ctx := context.Background()
	r, err := Fetch(ctx, http.DefaultClient, srv.URL, "alice", "s3cret")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if r.Sync.Position != 40 || r.IMAP.Port != 1143 || len(r.Mailboxes) != 2 {
		t.Errorf("Fetch gave %+v", r)
	}
	if _, err := Fetch(ctx, http.DefaultClient, srv.URL, "alice", "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	newer := sampleReport()
	newer.Version = ReportVersion + 1
	srv2 := serve(t, Config{Source: &fixedSource{r: newer}, User: "alice", Password: "s3cret"})
	if _, err := Fetch(ctx, http.DefaultClient, srv2.URL, "alice", "s3cret"); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("newer version: %v, want a version error", err)
	}
}

// serveSocket serves a socket handler for src on a real control socket.
func serveSocket(t *testing.T, src Source) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mail.db.run", "control.sock")
	ln, err := ownersock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewSocketHandler(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestFetchSocket(t *testing.T) {
	t.Parallel()
	rep := sampleReport()
	rep.Page = PageState{Problem: "127.0.0.1:1144 is in use by another program"}
	path := serveSocket(t, &fixedSource{r: rep})
	ctx := context.Background()
	r, err := FetchSocket(ctx, path)
	if err != nil {
		t.Fatalf("FetchSocket: %v", err)
	}
	if r.Sync.Position != 40 || r.IMAP.Port != 1143 || r.Page.Problem == "" {
		t.Errorf("FetchSocket gave %+v", r)
	}
	// A directory that lets others in is refused before anything is sent.
	if err := os.Chmod(filepath.Dir(path), 0o711); err != nil {
		t.Fatal(err)
	}
	var ue *ownersock.UnsafeDirError
	if _, err := FetchSocket(ctx, path); !errors.As(err, &ue) {
		t.Errorf("FetchSocket through a 0711 directory: %v, want an UnsafeDirError", err)
	}
	if _, err := FetchSocket(ctx, filepath.Join(t.TempDir(), "x.run", "control.sock")); !errors.Is(err, ownersock.ErrNotRunning) {
		t.Errorf("FetchSocket without a daemon: %v, want ErrNotRunning", err)
	}
}

func TestWriteTextPage(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		page PageState
		want string
	}{
		{PageState{URL: "http://127.0.0.1:1144/"}, "Status page:   http://127.0.0.1:1144/ (log in with the IMAP user and password)"},
		{PageState{Problem: "127.0.0.1:1144 is taken"}, "Status page:   NOT SERVED: 127.0.0.1:1144 is taken"},
		{PageState{}, "Status page:   off"},
	} {
		r := sampleReport()
		r.Page = c.page
		var b strings.Builder
		if err := WriteText(&b, &r, r.Generated); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), c.want+"\n") {
			t.Errorf("page %+v: output lacks %q:\n%s", c.page, c.want, b.String())
		}
	}
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	r.Alarms = []string{"the spool's log has a gap"}
	r.Search = &SearchIndex{Unindexed: 5, Outdated: 7}
	var b strings.Builder
	if err := WriteText(&b, &r, r.Generated); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "ALARM: the spool's log has a gap\n") {
		t.Errorf("output does not open with the alarm:\n%s", out)
	}
	for _, want := range []string{
		"cspool daemon for alice",
		"127.0.0.1 port 1143, user alice, password in /home/alice/mail.db.password",
		"connected to the spool",
		"40 of 42 (2 behind)",
		"(3 s ago)",
		"position 12: bad signature",
		"Rejected:",
		"1 entries",
		"Search index:",
		"building, 5 messages to go",
		"; 7 messages indexed by an earlier cspool to index again",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var inbox string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "INBOX") {
			inbox = strings.Join(strings.Fields(l), " ")
		}
	}
	if inbox != "INBOX 7 3 20.0 KiB" {
		t.Errorf("INBOX line %q, want INBOX 7 3 20.0 KiB", inbox)
	}
}

// TestWriteTextPrintable: what cspool status prints of texts from elsewhere
// (the last error, which holds a spool server's answer or the names of a
// certificate presented in its place; a smarthost's reply; the reasons of
// rejected entries; the names of mailboxes) comes with its control
// characters and bidirectional controls escaped, on its own line: an escape
// sequence there acted on the terminal (clearing the screen over the
// alarm), and a line end started a line of the sender's choosing.
func TestWriteTextPrintable(t *testing.T) {
	t.Parallel()
	hostile := "x509: certificate is valid for evil\x1b[2J\x1b]0;t\x07\r\nALARM: none, all is well \u202eRED\u0085"
	r := sampleReport()
	r.Alarms = []string{"the log was rolled back"}
	r.Sync.LastError = hostile
	r.Page = PageState{Problem: hostile}
	r.Outbox = &Outbox{LastError: hostile}
	r.Rejected.Recent = append(r.Rejected.Recent, Rejection{Pos: 13, Reason: hostile, Detail: hostile})
	r.Mailboxes = append(r.Mailboxes, Mailbox{Name: hostile})
	var b strings.Builder
	if err := WriteText(&b, &r, r.Generated); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, c := range out {
		if c != '\n' && (unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c)) {
			t.Fatalf("the output holds %U:\n%q", c, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "ALARM: none") {
			t.Errorf("a line of the hostile text's own, %q:\n%s", l, out)
		}
	}
	if want := `evil\x1b[2J\x1b]0;t\x07\x0d\x0aALARM: none, all is well \u202eRED\x85`; strings.Count(out, want) != 6 {
		t.Errorf("the text %q is in the output %d times, want 6:\n%s", want, strings.Count(out, want), out)
	}
}

// TestWriteTextHold: "Outbox held" names the hold, as --release-outbox
// must (outbox.Config.ReleaseHeld): a bare flag releases nothing.
func TestWriteTextHold(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	r.Outbox = &Outbox{Queued: 2, Held: 2, Hold: "3f9a61c2e07b"}
	var b strings.Builder
	if err := WriteText(&b, &r, r.Generated); err != nil {
		t.Fatal(err)
	}
	if want := "restart once with --release-outbox=3f9a61c2e07b to send them"; !strings.Contains(b.String(), want) {
		t.Errorf("the status lacks %q:\n%s", want, b.String())
	}
}

// TestWriteTextDeletions: the status says how this device writes an
// EXPUNGE and a DELETE, from what the spool said of the user's devices,
// and why when it is the earlier rule; nothing before the spool said.
func TestWriteTextDeletions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		readers int
		want    string
	}{
		{0, ""},
		{3, "Deletions: EXPUNGE and DELETE as earlier releases wrote them (a device of this user read the log saying it reads only up to entry format 3: upgrade cspool on it)"},
		{4, "Deletions: EXPUNGE and DELETE take only what this device showed (every device of this user reads entry format 4)"},
	} {
		r := sampleReport()
		r.Sync.Readers = c.readers
		var b strings.Builder
		if err := WriteText(&b, &r, r.Generated); err != nil {
			t.Fatal(err)
		}
		var got string
		for _, l := range strings.Split(b.String(), "\n") {
			if strings.HasPrefix(l, "Deletions:") {
				got = strings.Join(strings.Fields(l), " ")
			}
		}
		if got != c.want {
			t.Errorf("told %d: %q, want %q", c.readers, got, c.want)
		}
	}
}
