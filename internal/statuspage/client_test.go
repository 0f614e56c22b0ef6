package statuspage

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestFetch(t *testing.T) {
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

func TestWriteText(t *testing.T) {
	r := sampleReport()
	r.Alarms = []string{"the spool's log has a gap"}
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
