package mailstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

func TestQueries(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	var entries []Entry
	bodies := map[command.ID]string{}
	for i := range 10 {
		body := simpleMessage(fmt.Sprint("q", i))
		e := l.spool(deliverCmd(body))
		entries = append(entries, e)
		bodies[e.ID] = body
	}
	entries = append(entries,
		l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{entries[4].ID}}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entries[0].ID, entries[1].ID}}))
	mustApply(t, s, entries...)
	inbox := InboxID()

	mb, err := s.MailboxByName(ctx, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for i, e := range entries[:10] {
		if i != 4 {
			size += int64(len(bodies[e.ID]))
		}
	}
	if mb.Messages != 9 || mb.Unseen != 7 || mb.UIDNext != 11 || mb.Size != size || mb.HighestModSeq != 12 {
		t.Errorf("INBOX status: expected 9 messages, 7 unseen, uidnext 11, size %d, modseq 12; got %+v", size, mb)
	}

	tests := []struct {
		name string
		set  UIDSet
		want []UID
	}{
		{"single", UIDSet{{Start: 3, Stop: 3}}, []UID{3}},
		{"expunged uid", UIDSet{{Start: 5, Stop: 5}}, nil},
		{"range to star", UIDSet{{Start: 8, Stop: 0}}, []UID{8, 9, 10}},
		{"reversed and unsorted ranges", UIDSet{{Start: 7, Stop: 6}, {Start: 1, Stop: 2}}, []UID{1, 2, 6, 7}},
		{"star alone", UIDSet{{Start: 0, Stop: 0}}, []UID{10}},
		{"beyond the end", UIDSet{{Start: 99, Stop: 99}}, nil},
		{"range past the end to star includes the last", UIDSet{{Start: 100, Stop: 0}}, []UID{10}},
	}
	for _, tc := range tests {
		var got []UID
		err := s.Fetch(ctx, inbox, tc.set, WantEnvelope, func(m *Message) error {
			got = append(got, m.UID)
			if env, err := mimeform.DecodeEnvelope(m.Envelope); err != nil || env == nil || env.Subject == "" {
				t.Errorf("%s: uid %d without envelope", tc.name, m.UID)
			}
			// Body on demand, from inside the callback.
			raw, err := m.LoadRaw(ctx)
			if err != nil || string(raw) != bodies[m.ID] {
				t.Errorf("%s: LoadRaw of uid %d: expected the delivered body, got %d bytes, %v", tc.name, m.UID, len(raw), err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: Fetch: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: expected uids %v, got %v", tc.name, tc.want, got)
		}
	}

	stop := errors.New("stop")
	n := 0
	if err := s.Scan(ctx, inbox, 0, func(*Message) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Scan stopped by its callback: expected the callback's error after 1 call, got %v after %d", err, n)
	}

	m, err := s.Message(ctx, inbox, 2, WantRaw)
	if err != nil || m.ID != entries[1].ID || !reflect.DeepEqual(m.Flags, []string{`\Seen`}) || !bytes.Equal(m.Raw, []byte(bodies[m.ID])) {
		t.Errorf("Message(uid 2): expected id %s, flags [\\Seen], its body; got %+v, %v", entries[1].ID, m, err)
	}
	if _, err := s.Message(ctx, inbox, 5, 0); !errors.Is(err, ErrNoMessage) {
		t.Errorf("Message(expunged uid): expected ErrNoMessage, got %v", err)
	}
	if _, err := s.UIDs(ctx, entryID(999)); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("UIDs(unknown mailbox): expected ErrNoMailbox, got %v", err)
	}
	ids, err := s.MessageIDs(ctx, inbox, []UID{1, 5, 10})
	want := map[UID]command.ID{1: entries[0].ID, 10: entries[9].ID}
	if err != nil || !reflect.DeepEqual(ids, want) {
		t.Errorf("MessageIDs: expected %v, got %v, %v", want, ids, err)
	}
	if _, err := s.Locate(ctx, entries[4].ID); !errors.Is(err, ErrNoMessage) {
		t.Errorf("Locate(expunged): expected ErrNoMessage, got %v", err)
	}
}
