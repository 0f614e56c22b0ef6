package deliver

import (
	"log/slog"
	"strings"
	"testing"
)

// TestRefusedRecipientNotLogged: a recipient that is no user's name was
// logged whole ("invalid user name \"...\""), any text a sender wrote
// there; the log says how long it was instead. A well-formed name that is
// no user is still named: the operator needs it.
func TestRefusedRecipientNotLogged(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "alice")
	var logs lockedBuffer
	addr := serve(t, f.d, LMTPOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	s.cmd("MAIL FROM:<a@example.net>", "250 ")
	marker := "private.words.here" + strings.Repeat("A", 200)
	s.cmd("RCPT TO:<"+marker+"@example.org>", "550 ")
	s.cmd("RCPT TO:<bob@example.org>", "550 ")
	s.cmd("QUIT", "221 ")
	out := logs.String()
	if strings.Contains(out, "private.words") {
		t.Errorf("the log holds the refused address:\n%s", out)
	}
	if !strings.Contains(out, "an address of") || !strings.Contains(out, "bob") {
		t.Errorf("the log does not say what was refused:\n%s", out)
	}
}
