package syncer

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/testproc"
)

// TestMisdeliveredAmongManyRejections: a spool serves a flood of entries
// signed by a stranger (rejected and passed by, each recorded), then
// batches that each hold an entry sealed to another key. Each such batch
// counts what it adds to the misdelivered alarm, not every rejection the
// store holds: before, each listed every rejection of any reason into
// memory and looked for a kept file for each, so the 20 batches here
// allocated about 13 times what they do without the flood before them.
// The alarm still counts every misdelivered entry, and again from the
// store at the next start.
func TestMisdeliveredAmongManyRejections(t *testing.T) {
	testproc.SkipUnderRace(t)
	ctx := context.Background()
	other, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const strangers, batches, per = 10000, 20, 10
	// phase syncs, with a fresh device, the stranger entries the rig's log
	// holds and then batches of per entries, each with one sealed to
	// another key, and returns the bytes allocated by the second part.
	phase := func(r *rig) (uint64, *Syncer) {
		keep := filepath.Join(r.dir, "kept")
		s, ms := r.deviceWith("a", Config{KeepDir: keep})
		syncAll(t, s)
		var bs [][]byte
		for i := range batches {
			for j := range per {
				to := r.user.Public()
				if j == per/2 {
					to = other.Public()
				}
				b, _, err := entry.Seal(msg(i*per+j), r.spool, to, "alice", nil)
				if err != nil {
					t.Fatal(err)
				}
				bs = append(bs, b)
			}
		}
		if _, err := r.log.Append(ctx, "alice", bs); err != nil {
			t.Fatal(err)
		}
		small, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
			Store: ms, KeepDir: keep, BatchCount: per})
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		syncAll(t, small)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc, small
	}

	quiet := newRig(t)
	quiet.deliver(quiet.spool, msg(0))
	base, _ := phase(quiet)

	r := newRig(t)
	bs := r.strangers(strangers)
	if _, err := r.log.Append(ctx, "alice", bs); err != nil {
		t.Fatal(err)
	}
	r.deliver(r.spool, msg(0))
	flooded, s := phase(r)
	t.Logf("%d batches with a misdelivered entry allocated %d bytes after %d rejections, %d bytes after none", batches, flooded, strangers, base)
	if flooded > 3*base {
		t.Errorf("%d batches with a misdelivered entry allocated %d bytes after %d rejections, %d after none: want about the same", batches, flooded, strangers, base)
	}
	want := "20 entries of the log"
	if st := s.Status(); !strings.Contains(st.Misdelivered, want) || st.Rejected != batches {
		t.Errorf("status: misdelivered %q, %d rejected; want %q and %d", st.Misdelivered, st.Rejected, want, batches)
	}
	again, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: s.cfg.Store, KeepDir: s.cfg.KeepDir})
	if err != nil {
		t.Fatal(err)
	}
	if st := again.Status(); !strings.Contains(st.Misdelivered, want) {
		t.Errorf("status at the next start: misdelivered %q, want %q", st.Misdelivered, want)
	}
}
