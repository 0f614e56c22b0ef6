package mailstore

import (
	"context"
	"reflect"
	"testing"

	"cspool/internal/command"
)

// TestWithdrawAppend: a queued APPEND whose message a later queued change
// expunges, and nothing queued copies or moves, leaves the queue with the
// changes that named it alone; those that named it among others stay
// without it. The state is then the log's with what is left of the queue
// applied on top, as in a store that queued only that.
func TestWithdrawAppend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	id := func(b byte) command.ID { return command.ID{0xee, b} }
	appended := id(1)
	tests := []struct {
		what  string
		after func(m1 command.ID) []*command.Command // queued after the APPEND into Drafts
		want  func(m1 command.ID) []*command.Command // the queue after, nil: unchanged
	}{
		{"expunged, with flags of it and of another", func(m1 command.ID) []*command.Command {
			return []*command.Command{
				{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{m1, appended}},
				{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{appended}},
				{Kind: command.Expunge, IDs: []command.ID{appended, m1}},
			}
		}, func(m1 command.ID) []*command.Command {
			return []*command.Command{
				{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{m1}},
				{Kind: command.Expunge, IDs: []command.ID{m1}},
			}
		}},
		{"its mailbox deleted", func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.DeleteMailbox, Version: command.Version2, Mailbox: "Drafts", IDs: []command.ID{appended}}}
		}, func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.DeleteMailbox, Version: command.Version2, Mailbox: "Drafts"}}
		}},
		{"copied, then expunged", func(command.ID) []*command.Command {
			return []*command.Command{
				{Kind: command.Copy, Mailbox: "INBOX", IDs: []command.ID{appended}},
				{Kind: command.Expunge, IDs: []command.ID{appended}},
			}
		}, nil},
		{"flagged only", func(command.ID) []*command.Command {
			return []*command.Command{{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{appended}}}
		}, nil},
	}
	for _, tc := range tests {
		var l testLog
		log := []Entry{l.spool(deliverCmd(simpleMessage("one"))), l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Drafts"})}
		m1 := log[0].ID
		s, ref := openTest(t), openTest(t)
		mustApply(t, s, log...)
		mustApply(t, ref, log...)
		queue := append([]*command.Command{{Kind: command.Append, Mailbox: "Drafts", Date: 1700000000000, Body: []byte(simpleMessage("draft"))}}, tc.after(m1)...)
		for i, c := range queue {
			if _, err := s.Enqueue(ctx, id(byte(i+1)), c); err != nil {
				t.Fatal(err)
			}
		}
		before, err := s.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, ok, err := s.WithdrawAppend(ctx, appended)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		q, err := s.Queue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tc.want == nil {
			if ok || !reflect.DeepEqual(q, before) {
				t.Errorf("%s: withdrawn %v, queue of %d, want the APPEND kept and the queue of %d unchanged", tc.what, ok, len(q), len(before))
			}
			continue
		}
		want := tc.want(m1)
		if !ok || len(q) != len(want) {
			t.Fatalf("%s: withdrawn %v, queue of %d, want withdrawn and %d left", tc.what, ok, len(q), len(want))
		}
		for i, e := range q {
			if e.Cmd.Kind != want[i].Kind || !reflect.DeepEqual(e.Cmd.IDs, want[i].IDs) {
				t.Errorf("%s: queued %d is %v of %v, want %v of %v", tc.what, i, e.Cmd.Kind, e.Cmd.IDs, want[i].Kind, want[i].IDs)
			}
			if _, err := ref.Enqueue(ctx, e.ID, e.Cmd); err != nil {
				t.Fatal(err)
			}
		}
		sameState(t, tc.what+": after the withdrawal", s, ref, false)
	}
}
