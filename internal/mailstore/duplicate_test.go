package mailstore

import (
	"context"
	"testing"

	"cspool/internal/command"
)

// TestDuplicateDelivery: a delivery of the same bytes as a message the
// store holds, in any mailbox, delivered up to DuplicateWindow before, is
// rejected as a retry when the message has a Message-ID, alone in its
// batch or in a run; past the window, without a Message-ID, or once the
// first copy is gone, it is a message again.
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	const t0 = int64(1700000000000)
	const hour = int64(3600 * 1000)
	msg := simpleMessage("retried")
	noID := "From: a@example.org\r\nSubject: no id\r\n\r\nThe same text.\r\n"
	at := func(body string, date int64) Entry {
		return l.spool(&command.Command{Kind: command.Deliver, Date: date, Body: []byte(body)})
	}
	status := func(res *Result) []Reason {
		var out []Reason
		for _, o := range res.Outcomes {
			if o.Status == Rejected {
				out = append(out, o.Reason)
			} else {
				out = append(out, "")
			}
		}
		return out
	}
	check := func(what string, res *Result, want ...Reason) {
		t.Helper()
		got := status(res)
		if len(got) != len(want) {
			t.Fatalf("%s: outcomes %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: outcomes %v, want %v", what, got, want)
				return
			}
		}
	}
	first := at(msg, t0)
	check("the first delivery", mustApply(t, s, first), "")
	check("its retry an hour later", mustApply(t, s, at(msg, t0+hour)), ReasonDuplicate)
	check("the same bytes without a Message-ID, twice", mustApply(t, s, at(noID, t0), at(noID, t0+hour)), "", "")
	// In a run: a retry of a held message, a retry of the run's own, and
	// the same bytes past the window.
	fresh := simpleMessage("fresh")
	check("a run", mustApply(t, s, at(msg, t0+2*hour), at(fresh, t0+2*hour), at(fresh, t0+3*hour),
		at(msg, t0+DuplicateWindow.Milliseconds()+1)), ReasonDuplicate, "", ReasonDuplicate, "")

	// The first copy moved to another mailbox still counts; gone, it
	// does not.
	res := mustApply(t, s, l.user(&command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{first.ID}}))
	if len(res.Outcomes) != 1 || len(res.Outcomes[0].Placed) != 1 {
		t.Fatalf("move: %+v", res.Outcomes)
	}
	moved := res.Outcomes[0].Placed[0].ID
	check("a retry once moved", mustApply(t, s, at(msg, t0+4*hour)), ReasonDuplicate)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{moved}}))
	check("a retry once expunged", mustApply(t, s, at(msg, t0+5*hour)), "")

	rej, err := s.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	dups := 0
	for _, r := range rej {
		if r.Reason == ReasonDuplicate {
			dups++
			if r.Detail != duplicateDetail {
				t.Errorf("detail %q, want %q", r.Detail, duplicateDetail)
			}
		}
	}
	if dups != 4 {
		t.Errorf("%d duplicates recorded, want 4", dups)
	}
}

func TestHasMessageID(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"Message-ID: <a@b>\r\n\r\nbody\r\n", true},
		{"From: x\r\nmessage-id:<a@b>\r\n\r\n", true},
		{"From: x\nMESSAGE-ID: <a@b>\n\nbody", true},
		{"Subject: x\r\n\r\nMessage-ID: <in the body>\r\n", false},
		{"Subject: x\r\n X-Message-ID: folded\r\n\r\n", false},
		{"X-Message-ID: <a@b>\r\n\r\n", false},
		{"no header at all\r\n", false},
		{"", false},
	} {
		if got := hasMessageID([]byte(c.msg)); got != c.want {
			t.Errorf("hasMessageID(%q) = %v, want %v", c.msg, got, c.want)
		}
	}
}
