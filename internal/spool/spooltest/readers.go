package spooltest

import (
	"testing"
	"time"

	"cspool/internal/spool"
)

func (s *suite) readerTests() []namedTest {
	return []namedTest{{"ReaderFormats", s.testReaderFormats}}
}

// testReaderFormats: the time since when every read of a log said it reads
// entry format 3 is set by the first such read, kept by the next ones,
// cleared by one that does not say it; for that user alone, nothing for a
// user with no log, and seen by a second handle (another server).
func (s *suite) testReaderFormats(t *testing.T) {
	st := s.open(t)
	rf, ok := st.(spool.ReaderFormats)
	if !ok {
		t.Fatalf("%T is not a spool.ReaderFormats: --entry-format auto needs it", st)
	}
	ctx := ctxT(t)
	t0 := time.Unix(1_800_000_000, 0)
	want := func(user string, at time.Time) {
		t.Helper()
		got, err := rf.Version3Since(ctx, user)
		if err != nil || !got.Equal(at) {
			t.Fatalf("Version3Since(%q) = %v, %v; want %v", user, got, err, at)
		}
	}
	// No log: nothing recorded.
	if err := rf.NoteReader(ctx, "nora", true, t0); err != nil {
		t.Fatal(err)
	}
	want("nora", time.Time{})
	mustAppend(t, st, "nora", []byte("1"))
	mustAppend(t, st, "olga", []byte("1"))
	want("nora", time.Time{})
	steps := []struct {
		v3   bool
		at   time.Time
		want time.Time
	}{
		{true, t0, t0},
		{true, t0.Add(time.Hour), t0}, // kept
		{false, t0.Add(2 * time.Hour), time.Time{}},
		{false, t0.Add(3 * time.Hour), time.Time{}},
		{true, t0.Add(4 * time.Hour), t0.Add(4 * time.Hour)},
	}
	for _, c := range steps {
		if err := rf.NoteReader(ctx, "nora", c.v3, c.at); err != nil {
			t.Fatal(err)
		}
		want("nora", c.want)
	}
	want("olga", time.Time{})
	other := s.reopen(t, st).(spool.ReaderFormats)
	if got, err := other.Version3Since(ctx, "nora"); err != nil || !got.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("a second handle's Version3Since = %v, %v; want %v", got, err, t0.Add(4*time.Hour))
	}
	if err := rf.NoteReader(ctx, "", true, t0); err == nil {
		t.Fatal("NoteReader took an invalid user name")
	}
}
