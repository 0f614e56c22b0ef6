package entry

import (
	"bytes"
	"runtime"
	"testing"

	"cspool/internal/testproc"
)

// TestPlainClass: every size up to maxPooledPlain falls in a class that
// holds it and is at most an eighth larger (MinPadded at least), and a
// class's own size falls in that class.
func TestPlainClass(t *testing.T) {
	for n := 1; n <= maxPooledPlain; n++ {
		idx, size, ok := plainClass(n)
		if !ok || size < n || (n > MinPadded && size > n+n/8+1) || idx < 0 || idx >= len(plainPools) {
			t.Fatalf("%d bytes: class %d of %d bytes, %v", n, idx, size, ok)
		}
		if idx2, size2, _ := plainClass(size); idx2 != idx || size2 != size {
			t.Fatalf("%d bytes: class %d of %d bytes, but %d bytes fall in class %d of %d", n, idx, size, size, idx2, size2)
		}
	}
	if _, _, ok := plainClass(maxPooledPlain + 1); ok {
		t.Error("a plaintext over maxPooledPlain is pooled")
	}
}

// TestReleaseReuses: an entry opened after another was released takes its
// buffer (Open then allocates no plaintext, 10.5 KB for a 10 KB delivery),
// and its body is its own; the released entry's body is gone.
func TestReleaseReuses(t *testing.T) {
	f := newFixture(t)
	var sealed [2][]byte
	var bodies [2][]byte
	for i := range sealed {
		bodies[i] = bytes.Repeat([]byte{'a' + byte(i)}, 10<<10)
		b, _, err := Seal(deliver(bodies[i]), f.spool, f.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		sealed[i] = b
	}
	a, err := Open(sealed[0], f.user, "alice", f.spool.Public())
	if err != nil {
		t.Fatal(err)
	}
	a.Release()
	if a.Cmd.Body != nil {
		t.Error("a released entry keeps its body")
	}
	a.Release() // a second time: nothing
	b, err := Open(sealed[1], f.user, "alice", f.spool.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Cmd.Body, bodies[1]) {
		t.Fatal("an entry opened into a released buffer has another body")
	}
	b.Release()
	if testproc.Race {
		return // the race detector's sync.Pool drops a part of what is put back
	}
	// The bytes an Open allocates, with the entries released and without.
	perOpen := func(release bool) uint64 {
		const n = 200
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range n {
			o, err := Open(sealed[i%2], f.user, "alice", f.spool.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Cmd.Body, bodies[i%2]) {
				t.Fatalf("open %d: the body is not the one sealed", i)
			}
			if release {
				o.Release()
			}
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / n
	}
	kept, released := perOpen(false), perOpen(true)
	if released+10<<10 > kept {
		t.Errorf("Open of a 10 KB delivery allocates %d bytes after a Release, %d without; want the plaintext (over 10 KB) less", released, kept)
	}
	t.Logf("Open of a 10 KB delivery: %d bytes after a Release, %d without", released, kept)
}
