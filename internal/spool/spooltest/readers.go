package spooltest

import (
	"testing"
	"time"

	"cspool/internal/spool"
)

func (s *suite) readerTests() []namedTest {
	return []namedTest{{"ReaderFormats", s.testReaderFormats}}
}

// testReaderFormats: a user with no log has what a new log starts with
// (both times at the epoch, every read of it recorded, or both unset),
// and a read of it records nothing and says so; a read sets the time of
// each format it says it reads where none is set, keeps those set, clears
// the others; for that user alone, and seen by a second handle (another
// server).
func (s *suite) testReaderFormats(t *testing.T) {
	st := s.open(t)
	rf, ok := st.(spool.ReaderFormats)
	if !ok {
		t.Fatalf("%T is not a spool.ReaderFormats: --entry-format auto needs it", st)
	}
	ctx := ctxT(t)
	epoch, t0 := time.Unix(0, 0), time.Unix(1_800_000_000, 0)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	want := func(rf spool.ReaderFormats, user string, f3, f4 time.Time) {
		t.Helper()
		got, err := rf.ReadersSince(ctx, user)
		if err != nil || !got.Format3.Equal(f3) || !got.Format4.Equal(f4) {
			t.Fatalf("ReadersSince(%q) = %v, %v; want format 3 since %v, format 4 since %v", user, got, err, f3, f4)
		}
	}
	noLog, err := rf.ReadersSince(ctx, "nora")
	if err != nil {
		t.Fatal(err)
	}
	if !(noLog.Format3.Equal(epoch) && noLog.Format4.Equal(epoch)) && !(noLog.Format3.IsZero() && noLog.Format4.IsZero()) {
		t.Fatalf("ReadersSince of a user with no log = %v, want both at the epoch or both unset", noLog)
	}
	// No log: nothing recorded, and said so.
	if exists, err := rf.NoteReader(ctx, "nora", 0, t0); err != nil || exists {
		t.Fatalf("NoteReader of a user with no log: %v, %v; want false", exists, err)
	}
	want(rf, "nora", noLog.Format3, noLog.Format4)
	mustAppend(t, st, "nora", []byte("1"))
	mustAppend(t, st, "olga", []byte("1"))
	want(rf, "nora", noLog.Format3, noLog.Format4) // a new log starts so
	steps := []struct {
		reads    int
		at       time.Time
		f3, f4   time.Time
		describe string
	}{
		{0, at(0), time.Time{}, time.Time{}, "both cleared"},
		{4, at(1), at(1), at(1), "both set"},
		{4, at(2), at(1), at(1), "kept"},
		{3, at(3), at(1), time.Time{}, "format 4 cleared"},
		{4, at(4), at(1), at(4), "format 4 set"},
		{0, at(5), time.Time{}, time.Time{}, "both cleared"},
		{2, at(6), time.Time{}, time.Time{}, "still clear"},
		{3, at(7), at(7), time.Time{}, "format 3 set"},
		{5, at(8), at(7), at(8), "a newer device reads both"},
	}
	for _, c := range steps {
		if exists, err := rf.NoteReader(ctx, "nora", c.reads, c.at); err != nil || !exists {
			t.Fatalf("NoteReader: %v, %v", exists, err)
		}
		t.Logf("reads=%d: %s", c.reads, c.describe)
		want(rf, "nora", c.f3, c.f4)
	}
	want(rf, "olga", noLog.Format3, noLog.Format4)
	other := s.reopen(t, st).(spool.ReaderFormats)
	want(other, "nora", at(7), at(8))
	if _, err := rf.NoteReader(ctx, "", 4, t0); err == nil {
		t.Fatal("NoteReader took an invalid user name")
	}
}
