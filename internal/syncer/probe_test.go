package syncer

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestProbesSlowDown: while the spool does not answer, the loop asks it
// every ProbeInterval only in the first ProbeSlowAfter of the outage, and
// every ProbeSlowInterval after that (a laptop offline for hours, the
// devices of a server back from a long outage); an outage that begins
// after the spool answered again is probed quickly again. Before, it
// asked every ProbeInterval for as long as the outage lasted.
func TestProbesSlowDown(t *testing.T) {
	t.Parallel()
	const fast, slowAfter, slow = 10 * time.Millisecond, 300 * time.Millisecond, 3 * time.Second
	src, s := probingDevice(t, Config{ProbeInterval: fast, ProbeSlowAfter: slowAfter, ProbeSlowInterval: slow})

	// 2.3 s of outage: at most 300 ms / 9 ms + 2.3 s / 2.7 s probes, some
	// 35; every 10 ms throughout it would be some 230. Fewer on a busy
	// machine, never more.
	time.Sleep(slowAfter + 2*time.Second)
	n := src.probed()
	if n == 0 || n > 80 {
		t.Fatalf("%d probes in %v of outage, want 1 to 80 (every %v for %v, then every %v)",
			n, slowAfter+2*time.Second, fast, slowAfter, slow)
	}
	t.Logf("%d probes in %v of outage", n, slowAfter+2*time.Second)

	// The spool answers again: noticed at the next slow probe.
	src.set(false)
	waitFor(t, 3*slow, "the loop in contact again", func() bool { return s.Status().Connected })

	// A new outage starts with quick probes again: three come well before
	// a slow one could (at least 2.7 s).
	src.set(true)
	waitFor(t, 10*time.Second, "the new outage seen", func() bool { return !s.Status().Connected })
	before := src.probed()
	waitFor(t, slow*9/10-200*time.Millisecond, "three quick probes in the new outage", func() bool { return src.probed() >= before+3 })
}

// TestSlowProbeAnswered: a spool that answers its probes late (a server
// just started, with all of its devices probing at once) is waited for,
// not given up on: given up after a second, each probe was made again on
// a new connection, and a server that took longer than that to answer
// was never found back by a probe at all.
func TestSlowProbeAnswered(t *testing.T) {
	t.Parallel()
	src, s := probingDevice(t, Config{ProbeInterval: 50 * time.Millisecond})
	waitFor(t, 10*time.Second, "the first probe", func() bool { return src.probed() > 0 })
	src.mu.Lock()
	src.down, src.slowHealth = false, 1500*time.Millisecond
	src.mu.Unlock()
	waitFor(t, 20*time.Second, "the loop back in contact with a spool that answers probes after 1.5 s",
		func() bool { return s.Status().Connected })
}

// probingDevice runs, until the test ends, a sync loop on a new store
// whose spool is down from the start, with cfg's probe settings: after its
// first failure it pauses an hour, so only a probe finds the spool back.
func probingDevice(t *testing.T, cfg Config) (*offlineSource, *Syncer) {
	t.Helper()
	r := newRig(t)
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	src.set(true)
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.UserKey, cfg.SpoolKey, cfg.Source, cfg.Store = "alice", r.user, r.spool.Public(), src, ms
	cfg.Wait, cfg.MaxBackoff = time.Second, time.Hour
	cfg.Unreachable = func(err error) bool { return errors.Is(err, errDown) }
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.firstBackoff = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ms.Close()
	})
	return src, s
}
