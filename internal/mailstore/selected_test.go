package mailstore

import (
	"context"
	"errors"
	"testing"

	"cspool/internal/command"
)

// TestSelectedChecksUIDValidity: every read through a Selected reads the
// mailbox's messages only while it has the UIDVALIDITY selected; with
// another one, or with the mailbox gone, it reads none and fails with
// ErrUIDValidity or ErrNoMailbox.
func TestSelectedChecksUIDValidity(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	id, err := s.MailboxIdentity(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var missing command.ID
	missing[0] = 1
	reads := map[string]func(x *Selected, fn func(*Message) error) error{
		"Fetch": func(x *Selected, fn func(*Message) error) error {
			return x.Fetch(ctx, UIDSet{{Start: 1, Stop: 0}}, WantRaw, fn)
		},
		"FetchForms": func(x *Selected, fn func(*Message) error) error {
			return x.FetchForms(ctx, UIDSet{{Start: 1, Stop: 0}}, WantMetadataOnly, fn)
		},
		"FetchForms listing": func(x *Selected, fn func(*Message) error) error {
			return x.FetchForms(ctx, UIDSet{{Start: 1, Stop: 2}}, WantMetadataOnly|WantListing, fn)
		},
		"Scan": func(x *Selected, fn func(*Message) error) error { return x.Scan(ctx, WantHeader, fn) },
		"ScanUIDs": func(x *Selected, fn func(*Message) error) error {
			return x.ScanUIDs(ctx, []UID{1, 2}, 0, fn)
		},
		"MessageIDs": func(x *Selected, fn func(*Message) error) error {
			ids, err := x.MessageIDs(ctx, []UID{1, 2})
			for uid := range ids {
				fn(&Message{UID: uid})
			}
			return err
		},
		"TextSearch": func(x *Selected, fn func(*Message) error) error {
			a, err := x.TextSearch(ctx, SearchText, "hello")
			if a != nil {
				for uid := range a.Match {
					fn(&Message{UID: uid})
				}
			}
			return err
		},
	}
	for name, read := range reads {
		for _, tc := range []struct {
			what string
			x    *Selected
			want error
		}{
			{"as selected", s.Selected(id.ID, id.UIDValidity), nil},
			{"with another UIDVALIDITY", s.Selected(id.ID, id.UIDValidity+1), ErrUIDValidity},
			{"of a mailbox gone", s.Selected(missing, id.UIDValidity), ErrNoMailbox},
		} {
			n := 0
			err := read(tc.x, func(*Message) error { n++; return nil })
			switch {
			case tc.want == nil && (err != nil || n != 2):
				t.Errorf("%s %s: %d messages, %v; want 2", name, tc.what, n, err)
			case tc.want != nil && (!errors.Is(err, tc.want) || n != 0):
				t.Errorf("%s %s: %d messages, %v; want none and %v", name, tc.what, n, err, tc.want)
			}
		}
	}
}
