package mailstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"cspool/internal/mimeform"
)

func TestOpenInitialState(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "mail.db")
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode: expected 0600, got %o", perm)
	}
	ctx := context.Background()
	mbs, err := s.Mailboxes(ctx)
	if err != nil {
		t.Fatalf("Mailboxes: %v", err)
	}
	want := map[string]InitialMailbox{}
	for _, m := range InitialMailboxes() {
		want[m.Name] = m
	}
	if len(mbs) != len(want) {
		t.Fatalf("expected %d initial mailboxes, got %d", len(want), len(mbs))
	}
	for _, mb := range mbs {
		w, ok := want[mb.Name]
		if !ok {
			t.Errorf("unexpected mailbox %q", mb.Name)
			continue
		}
		if mb.ID != w.ID || mb.UIDValidity != w.UIDValidity || mb.SpecialUse != w.SpecialUse || mb.UIDNext != 1 || !mb.Subscribed {
			t.Errorf("mailbox %q: expected %+v, uidnext 1, subscribed; got %+v", mb.Name, w, mb)
		}
	}
	if pos, err := s.Position(ctx); err != nil || pos != 0 {
		t.Errorf("Position: expected 0, got %d, %v", pos, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Reopening keeps the state and does not migrate again.
	s2, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s2.Close()
	if _, err := s2.MailboxByName(ctx, "inbox"); err != nil {
		t.Errorf("MailboxByName(inbox) after reopen: %v", err)
	}
	if _, err := s2.Position(ctx); err != nil {
		t.Errorf("Position after reopen: %v", err)
	}
	if _, err := s.Position(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Position on closed store: expected ErrClosed, got %v", err)
	}
}

func TestOpenRefusesOtherDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(path, []byte("not a database, just text that is long enough to be a header......................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, mimeform.Parser{}); err == nil {
		s.Close()
		t.Fatal("Open of a non-database file: expected an error, got none")
	}
}
