package deliver

import (
	"context"
	"fmt"
	"testing"

	"cspool/internal/keys"
)

// foldedDir is a StaticDirectory that also finds users by their folded
// names, as userdb.DB does.
type foldedDir StaticDirectory

func (d foldedDir) Lookup(ctx context.Context, user string) (keys.PublicKey, error) {
	return StaticDirectory(d).Lookup(ctx, user)
}

func (d foldedDir) LookupFolded(_ context.Context, folded string) (string, keys.PublicKey, error) {
	for name, k := range d {
		if keys.FoldCase(name) == folded {
			return name, k, nil
		}
	}
	return "", keys.PublicKey{}, fmt.Errorf("%q: %w", folded, keys.ErrUnknownUser)
}

// TestLMTPFoldedUser: a user whose name has capitals ("Carol") is reached
// by an address a mail server folded to lower case (carol@, as Exim sends
// by default), with an extension too; only "Carol@" reached it, and the
// rest got 550.
func TestLMTPFoldedUser(t *testing.T) {
	f := newFixture(t, "Carol", "alice")
	f.d.Users = foldedDir(f.d.Users.(StaticDirectory))
	addr := serve(t, f.d, LMTPOptions{RecipientDelimiter: "+"})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	s.cmd("MAIL FROM:<s@example.net>", "250 ")
	for _, rcpt := range []string{"carol@example.org", "CAROL+lists@example.org"} {
		s.cmd("RCPT TO:<"+rcpt+">", "250 ")
	}
	s.cmd("RCPT TO:<nobody@example.org>", "550 ")
	s.cmd("DATA", "354 ")
	s.write("Subject: x\r\n\r\nhi\r\n.\r\n")
	s.expect("250 2.0.0 <carol@example.org>")
	s.expect("250 2.0.0 <CAROL+lists@example.org>")
	if got := f.opened(t, "Carol"); len(got) != 1 {
		t.Errorf("Carol's log: %d entries, want 1", len(got))
	}
}
