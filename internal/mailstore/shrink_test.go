package mailstore

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	"cspool/internal/command"
)

// TestShrinkHeldAppend: a queued APPEND whose message a later queued
// change expunges, and nothing queued copies or moves, gets the
// placeholder for its message and keeps its place, id and flags, with the
// changes after it as they were; its mailbox is shown as before (same
// UIDVALIDITY and UIDNEXT) and the state is that of a store that queued
// the placeholder. The log bringing the queue back leaves the store as a
// fresh one that applies the same entries: no trace of the message. One
// copied, one still shown (an EXPUNGE left it) or only flagged stays.
func TestShrinkHeldAppend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	id := func(b byte) command.ID { return command.ID{0xee, b} }
	appended := id(1)
	tests := []struct {
		what   string
		after  func(m1 command.ID) []*command.Command // queued after the APPEND into Drafts
		shrunk bool
	}{
		{"expunged, with flags of it and of another", func(m1 command.ID) []*command.Command {
			return []*command.Command{
				{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{m1, appended}},
				{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{appended}},
				{Kind: command.Expunge, IDs: []command.ID{appended}},
			}
		}, true},
		{"its mailbox deleted", func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.DeleteMailbox, Version: command.Version2, Mailbox: "Drafts", IDs: []command.ID{appended}}}
		}, true},
		{"copied, then expunged", func(command.ID) []*command.Command {
			return []*command.Command{
				{Kind: command.Copy, Mailbox: "INBOX", IDs: []command.ID{appended}},
				{Kind: command.Expunge, IDs: []command.ID{appended}},
			}
		}, false},
		{"named by an EXPUNGE that left it", func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.Expunge, Version: command.Version2, Flags: []string{`\Deleted`}, IDs: []command.ID{appended}}}
		}, false},
		{"flagged only", func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{appended}}}
		}, false},
	}
	for _, tc := range tests {
		var l testLog
		log := []Entry{l.spool(deliverCmd(simpleMessage("one"))), l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Drafts"})}
		m1 := log[0].ID
		s, ref, fresh := openTest(t), openTest(t), openTest(t)
		for _, st := range []*Store{s, ref, fresh} {
			mustApply(t, st, log...)
		}
		queue := append([]*command.Command{{Kind: command.Append, Mailbox: "Drafts", Flags: []string{`\Draft`}, Date: 1700000000000, Body: []byte(simpleMessage("draft"))}}, tc.after(m1)...)
		for i, c := range queue {
			if _, err := s.Enqueue(ctx, id(byte(i+1)), c); err != nil {
				t.Fatal(err)
			}
		}
		before, err := s.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		shown, err := s.MailboxByName(ctx, "Drafts")
		if err != nil && tc.after(m1)[0].Kind != command.DeleteMailbox {
			t.Fatal(err)
		}
		_, ok, err := s.ShrinkHeldAppend(ctx, appended)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		q, err := s.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.shrunk {
			if ok || !reflect.DeepEqual(q, before) {
				t.Errorf("%s: shrunk %v, queue of %d, want the APPEND and the queue of %d unchanged", tc.what, ok, len(q), len(before))
			}
			continue
		}
		if !ok || len(q) != len(before) {
			t.Fatalf("%s: shrunk %v, queue of %d, want shrunk and %d kept", tc.what, ok, len(q), len(before))
		}
		small := Placeholder(appended, queue[0].Date)
		if len(small) != 160 || !bytes.Contains(small, []byte("Subject: "+PlaceholderSubject+"\r\n")) {
			t.Errorf("placeholder of %d bytes: %q", len(small), small)
		}
		for i, e := range q {
			want := *before[i].Cmd
			if i == 0 {
				want.Body = small
			}
			if e.ID != before[i].ID || !reflect.DeepEqual(*e.Cmd, want) {
				t.Errorf("%s: queued %d is %v %+v, want %v %+v", tc.what, i, e.ID, e.Cmd, before[i].ID, want)
			}
			if _, err := ref.Enqueue(ctx, e.ID, e.Cmd); err != nil {
				t.Fatal(err)
			}
		}
		sameState(t, tc.what+": after the shrink", s, ref, false)
		if got, err := s.MailboxByName(ctx, "Drafts"); shown != nil && (err != nil || *got != *shown) {
			t.Errorf("%s: Drafts shown as %+v (%v) after the shrink, want as before, %+v", tc.what, got, err, *shown)
		}
		// The log brings the queue back as it is now.
		var sent []Entry
		for _, e := range q {
			sent = append(sent, l.user(e.Cmd))
			sent[len(sent)-1].ID = e.ID
		}
		mustApply(t, s, sent...)
		mustApply(t, fresh, sent...)
		if n, err := s.QueueLen(ctx); err != nil || n != 0 {
			t.Fatalf("%s: %d queued after the log brought the queue (%v), want none", tc.what, n, err)
		}
		sameState(t, tc.what+": after the log", s, fresh, false)
	}
}
