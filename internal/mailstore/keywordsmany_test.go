package mailstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"cspool/internal/command"
	"cspool/internal/testproc"
)

// TestManyKeywordsInOneCommand sets 3,000 keywords on a message in one
// command, spelled in two ways each, and checks that they are all there
// once, sorted, in their first spelling, and that the command allocated
// in proportion to them: each keyword was added with a union of the set
// so far, a map and a sort of it, so the command allocated 1.5 GB
// (quadratic: a STORE of 5,000 keywords took 3 s), now 4.4 MB.
func TestManyKeywordsInOneCommand(t *testing.T) {
	testproc.SkipUnderRace(t)
	const n = 3000
	s := openTest(t)
	l := &testLog{}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))))
	id := entryID(1)
	var flags []string
	for i := n - 1; i >= 0; i-- {
		flags = append(flags, fmt.Sprintf("Kw%04d", i), fmt.Sprintf("KW%04d", i))
	}
	set := &command.Command{Kind: command.SetFlags, Flags: append([]string{`\Seen`}, flags...), IDs: []command.ID{id}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	mustApply(t, s, l.user(set))
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 20<<20 {
		t.Errorf("setting %d keywords allocated %d MB, want under 20", n, alloc>>20)
	} else {
		t.Logf("setting %d keywords allocated %.1f MB", n, float64(alloc)/(1<<20))
	}
	var got []string
	err := s.Scan(context.Background(), InboxID(), 0, func(m *Message) error {
		got = m.Flags
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 || got[0] != `\Seen` {
		t.Fatalf("flags: %d, first %q, want %d, \\Seen first", len(got), got[0], n+1)
	}
	for i, k := range got[1:] {
		if want := fmt.Sprintf("Kw%04d", i); k != want {
			t.Fatalf("keyword %d is %q, want %q", i, k, want)
		}
	}
}
