package mailstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestRejectedAsAfter: the records of one reason after a position, oldest
// first, the others and those at or before it left out; an error from
// the callback stops the reading and comes back.
func TestRejectedAsAfter(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	for pos, reason := range map[uint64]string{2: "entry not for this user", 3: "bad signature", 5: "entry not for this user",
		7: "entry not for this user", 8: "entry author not trusted", 11: "entry not for this user"} {
		if err := s.RecordRejected(ctx, pos, reason); err != nil {
			t.Fatal(err)
		}
	}
	list := func(after uint64) []string {
		var got []string
		if err := s.RejectedAsAfter(ctx, "entry not for this user", after, func(r Rejection) error {
			got = append(got, fmt.Sprintf("%d:%s", r.Pos, r.Reason))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for after, want := range map[uint64][]string{
		0:  {"2:entry not for this user", "5:entry not for this user", "7:entry not for this user", "11:entry not for this user"},
		5:  {"7:entry not for this user", "11:entry not for this user"},
		11: nil,
	} {
		if got := list(after); !slices.Equal(got, want) {
			t.Errorf("after %d: %q, want %q", after, got, want)
		}
	}
	stop := errors.New("enough")
	n := 0
	err := s.RejectedAsAfter(ctx, "entry not for this user", 0, func(Rejection) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("stopped by the callback: %v after %d rows, want its error after 1", err, n)
	}
}
