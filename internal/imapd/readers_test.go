package imapd

import (
	"context"
	"fmt"
	"testing"

	"cspool/internal/devicetest"
	"cspool/internal/entry"
)

// TestChangesFollowReaders: an EXPUNGE and a DELETE are written as commands
// of version 2, in entry format 4, only once the spool has said that every
// device of the user reads that format; before (a spool that says nothing,
// or a device of the user that reads up to format 3), as version 1 in
// format 2, which a device of the release before applies instead of
// stopping before it.
func TestChangesFollowReaders(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	n := 0
	deliver := func() {
		t.Helper()
		n++
		d.synced(r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d\r\n", n, n)))
	}
	last := func(want byte, what string) {
		t.Helper()
		es, err := r.Store.Read(context.Background(), devicetest.User, r.Head()-1, 1, 1<<20)
		if err != nil || len(es) != 1 {
			t.Fatalf("reading the last entry: %d, %v", len(es), err)
		}
		if v, _ := entry.VersionOf(es[0].Data); v != want {
			t.Fatalf("%s: written in entry format %d, want %d", what, v, want)
		}
	}
	w := loginWire(t, d.addr)
	for i, c := range []struct {
		readers int
		want    byte
	}{{0, entry.Version}, {entry.Version3, entry.Version}, {entry.Version4, entry.Version4}} {
		d.src.setReaders(c.readers)
		deliver() // read after the spool says it
		if got := d.store.WritesVersion2(context.Background()); got != (c.want == entry.Version4) {
			t.Fatalf("told %d: WritesVersion2 = %v", c.readers, got)
		}
		if got := d.sync.Status().Readers; got != c.readers {
			t.Fatalf("told %d: the sync status says %d", c.readers, got)
		}
		w.ok("SELECT INBOX")
		w.ok(`STORE 1 +FLAGS.SILENT (\Deleted)`)
		w.ok("EXPUNGE")
		last(c.want, fmt.Sprintf("an EXPUNGE, told %d", c.readers))
		box := fmt.Sprintf("F%d", i)
		w.ok("CREATE " + box)
		w.ok("DELETE " + box)
		last(c.want, fmt.Sprintf("a DELETE, told %d", c.readers))
	}
}
