package spooltest

import (
	"testing"
	"time"

	"cspool/internal/spool"
)

func (s *suite) readerTests() []namedTest {
	return []namedTest{{"ReaderFormats", s.testReaderFormats}}
}

// testReaderFormats: a new log's times start at the epoch (every read of
// it recorded), and a user with no log has them so; a read sets the time
// of each format it says it reads where none is set, keeps those set,
// clears the others; for that user alone, nothing for a user with no log
// (the log made after starts at the epoch), and seen by a second handle
// (another server).
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
	// No log: nothing recorded.
	want(rf, "nora", epoch, epoch)
	if err := rf.NoteReader(ctx, "nora", 0, t0); err != nil {
		t.Fatal(err)
	}
	want(rf, "nora", epoch, epoch)
	mustAppend(t, st, "nora", []byte("1"))
	mustAppend(t, st, "olga", []byte("1"))
	want(rf, "nora", epoch, epoch)
	steps := []struct {
		reads    int
		at       time.Time
		f3, f4   time.Time
		describe string
	}{
		{4, at(0), epoch, epoch, "kept"},
		{3, at(1), epoch, time.Time{}, "format 4 cleared"},
		{4, at(2), epoch, at(2), "format 4 set"},
		{4, at(3), epoch, at(2), "kept"},
		{0, at(4), time.Time{}, time.Time{}, "both cleared"},
		{2, at(5), time.Time{}, time.Time{}, "still clear"},
		{3, at(6), at(6), time.Time{}, "format 3 set"},
		{5, at(7), at(6), at(7), "a newer device reads both"},
	}
	for _, c := range steps {
		if err := rf.NoteReader(ctx, "nora", c.reads, c.at); err != nil {
			t.Fatal(err)
		}
		t.Logf("reads=%d: %s", c.reads, c.describe)
		want(rf, "nora", c.f3, c.f4)
	}
	want(rf, "olga", epoch, epoch)
	other := s.reopen(t, st).(spool.ReaderFormats)
	want(other, "nora", at(6), at(7))
	if err := rf.NoteReader(ctx, "", 4, t0); err == nil {
		t.Fatal("NoteReader took an invalid user name")
	}
}
