package mailstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"cspool/internal/command"
)

func TestApplyIsAllOrNothing(t *testing.T) {
	errInjected := errors.New("injected failure")
	tests := []struct {
		name string
		// fail returns the hook for an Apply with ctx's cancel function.
		fail func(cancel context.CancelFunc) func(i int) error
	}{
		{"injected error midway", func(context.CancelFunc) func(int) error {
			return func(i int) error {
				if i == 5 {
					return errInjected
				}
				return nil
			}
		}},
		{"context cancelled midway", func(cancel context.CancelFunc) func(int) error {
			return func(i int) error {
				if i == 3 {
					cancel()
				}
				return nil
			}
		}},
		{"error at the last entry", func(context.CancelFunc) func(int) error {
			return func(i int) error {
				if i == 9 {
					return errInjected
				}
				return nil
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			var l testLog
			var first []Entry
			for i := range 5 {
				first = append(first, l.spool(deliverCmd(simpleMessage(fmt.Sprint("first", i)))))
			}
			mustApply(t, s, first...)
			before := dump(t, s)

			var batch []Entry
			for i := range 10 {
				switch i % 3 {
				case 0:
					batch = append(batch, l.spool(deliverCmd(simpleMessage(fmt.Sprint("second", i)))))
				case 1:
					batch = append(batch, l.user(&command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{first[i/3].ID}}))
				default:
					batch = append(batch, l.spool(&command.Command{Kind: command.Expunge, IDs: []command.ID{first[0].ID}})) // rejected
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s.beforeEntry = tc.fail(cancel)
			if _, err := s.Apply(ctx, batch, batch[len(batch)-1].Pos); err == nil {
				t.Fatal("Apply with a failure midway: expected an error, got none")
			}
			s.beforeEntry = nil
			after := dump(t, s)
			if d := Diff(before, after, 10); d != nil {
				t.Fatalf("state changed by a failed Apply: %v", d)
			}
			if n, err := s.RejectedCount(context.Background()); err != nil || n != 0 {
				t.Fatalf("rejections recorded by a failed Apply: expected 0, got %d, %v", n, err)
			}
			// The same batch applies cleanly afterwards: nothing of it was kept.
			res := mustApply(t, s, batch...)
			for i, o := range res.Outcomes {
				want := Applied
				if i%3 == 2 {
					want = Rejected
				}
				if o.Status != want {
					t.Errorf("retry, entry %d: expected %s, got %s (%s)", i, want, o.Status, o.Detail)
				}
			}
			if pos, _ := s.Position(context.Background()); pos != batch[len(batch)-1].Pos {
				t.Errorf("position after retry: expected %d, got %d", batch[len(batch)-1].Pos, pos)
			}
		})
	}
}

func TestApplyPositions(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	e1, e2 := l.spool(deliverCmd("a")), l.spool(deliverCmd("b"))
	tests := []struct {
		name    string
		entries []Entry
		newPos  uint64
		wantErr error
	}{
		{"not increasing", []Entry{e2, e1}, 2, ErrPosition},
		{"new position before last entry", []Entry{e1, e2}, 1, ErrPosition},
		{"applies", []Entry{e1}, 1, nil},
		{"entry at the applied position", []Entry{e1}, 1, ErrPosition},
		{"skipping positions", nil, 5, nil},
		{"entry inside the skipped range", []Entry{e2}, 5, ErrPosition},
	}
	for _, tc := range tests {
		_, err := s.Apply(ctx, tc.entries, tc.newPos)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: expected %v, got %v", tc.name, tc.wantErr, err)
		}
	}
	if pos, err := s.Position(ctx); err != nil || pos != 5 {
		t.Errorf("Position: expected 5, got %d, %v", pos, err)
	}
}

func TestRejections(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	e1 := l.spool(deliverCmd(simpleMessage("one")))
	mustApply(t, s, e1)
	replay := Entry{Pos: 2, ID: e1.ID, Author: AuthorSpool, Cmd: e1.Cmd}
	forbidden := Entry{Pos: 4, ID: entryID(4), Author: AuthorSpool, Cmd: &command.Command{Kind: command.Expunge, IDs: []command.ID{e1.ID}}}
	unknown := Entry{Pos: 5, ID: entryID(5), Author: Author(9), Cmd: deliverCmd("x")}
	invalid := Entry{Pos: 6, ID: entryID(6), Author: AuthorUser, Cmd: &command.Command{Kind: command.Expunge}}
	if err := s.RecordRejected(ctx, 3, "bad signature"); err != nil {
		t.Fatalf("RecordRejected: %v", err)
	}
	if err := s.RecordRejected(ctx, 3, "bad signature again"); err != nil {
		t.Fatalf("RecordRejected twice: %v", err)
	}
	res, err := s.Apply(ctx, []Entry{replay, forbidden, unknown, invalid}, 6)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantReasons := []Reason{ReasonReplay, ReasonForbidden, ReasonForbidden, ReasonInvalid}
	for i, o := range res.Outcomes {
		if o.Status != Rejected || o.Reason != wantReasons[i] {
			t.Errorf("entry %d: expected rejected (%s), got %s (%s: %s)", i, wantReasons[i], o.Status, o.Reason, o.Detail)
		}
	}
	if res.Rejections() != 4 || len(res.Changes) != 0 {
		t.Errorf("expected 4 rejections and no changes, got %d and %d", res.Rejections(), len(res.Changes))
	}
	list, err := s.Rejected(ctx, 0)
	if err != nil {
		t.Fatalf("Rejected: %v", err)
	}
	var got []string
	for _, r := range list {
		got = append(got, fmt.Sprintf("%d:%s", r.Pos, r.Reason))
	}
	want := []string{"6:invalid", "5:forbidden", "4:forbidden", "3:bad signature", "2:replay"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Rejected: expected %v, got %v", want, got)
	}
	if list[3].Entry != nil || list[4].Entry == nil || *list[4].Entry != e1.ID {
		t.Errorf("Rejected entry ids: expected none for position 3 and %s for 2, got %v and %v", e1.ID, list[3].Entry, list[4].Entry)
	}
	if n, _ := s.RejectedCount(ctx); n != 5 {
		t.Errorf("RejectedCount: expected 5, got %d", n)
	}
	if uids := uidsOf(t, s, "INBOX"); len(uids) != 1 {
		t.Errorf("INBOX after rejections: expected 1 message, got %v", uids)
	}
	if l, _ := s.Rejected(ctx, 2); len(l) != 2 {
		t.Errorf("Rejected(limit 2): expected 2, got %d", len(l))
	}
}
