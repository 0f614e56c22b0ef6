package mailstore

import (
	"context"
	"database/sql"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestTextSearchHeader: HEADER of a field without a column of its own
// asks the index for a superset of the messages (every field's text is in
// column hdr), and a field's text is its unfolded value, raw and decoded,
// for HEADER and TEXT alike: here a needle that spans a fold between an
// encoded word of an unknown charset, which does not decode, and the next.
func TestTextSearchHeader(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	mustApply(t, s,
		l.spool(deliverCmd("From: a@example.org\r\nX-Folded: =?utf-8?q?caf=C3=A9?=\r\n =?x-unknown?q?zzz?=\r\nSubject: =?utf-8?q?caf=C3=A9?= one\r\n\r\nbody one\r\n")),
		l.spool(deliverCmd("From: b@example.org\r\nMessage-ID: <uniq-123@example.org>\r\nSubject: two\r\n\r\nbody two\r\n")),
		l.spool(deliverCmd("From: c@example.org\r\nSubject: three uniq-123\r\n\r\nbody three\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	for _, tc := range []struct {
		field, needle string
		key           SearchKey
		want          []imap.UID
		superset      bool
	}{
		{"Message-ID", "UNIQ-123", SearchHeader, []imap.UID{2, 3}, true}, // 3 has it in Subject
		{"X-Folded", "?= =?x-unknown", SearchHeader, []imap.UID{1}, true},
		{"", "?= =?X-unknown", SearchText, []imap.UID{1}, false},
		{"", "café", SearchText, []imap.UID{1}, false},
		{"Subject", "uniq-123", SearchSubject, []imap.UID{3}, false},
	} {
		if tc.field != "" && HeaderSearchKey(tc.field) != tc.key {
			t.Errorf("HeaderSearchKey(%s) = %d, want %d", tc.field, HeaderSearchKey(tc.field), tc.key)
		}
		a, err := s.TextSearch(ctx, InboxID(), tc.key, tc.needle)
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Sorted(maps.Keys(a.Match))
		if !slices.Equal(got, tc.want) || a.Superset != tc.superset || len(a.Unindexed) != 0 {
			t.Errorf("%s %q: match %v superset %v unindexed %v; want %v %v", tc.field, tc.needle, got, a.Superset, a.Unindexed, tc.want, tc.superset)
		}
	}
}

// TestSchema8Reindexes: a database of schema version 7 (whose index lacks
// the unfolded field values) has every body indexed again after the
// migration to version 8.
func TestSchema8Reindexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: a\r\n\r\none\r\n")), l.spool(deliverCmd("Subject: b\r\n\r\ntwo\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		// Back to version 7's shape: versions 9 and 10 add columns (the undo
		// triggers naming it are made again by the migration).
		for _, q := range []string{"DROP TRIGGER undo_bodies_ins", "DROP TRIGGER undo_bodies_upd", "DROP TRIGGER undo_bodies_del",
			"ALTER TABLE bodies DROP COLUMN envelope_wire", "ALTER TABLE bodies DROP COLUMN structure_wire"} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, "PRAGMA user_version = 7")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.IndexSize(ctx)
	if err != nil || st.Bodies != 2 || st.Unindexed != 2 {
		t.Fatalf("after the migration: %+v, %v; want both bodies unindexed", st, err)
	}
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	if a, err := s.TextSearch(ctx, InboxID(), SearchBody, "two"); err != nil || !a.Match[2] || len(a.Match) != 1 {
		t.Fatalf("TextSearch after reindexing: %+v, %v", a, err)
	}
}
