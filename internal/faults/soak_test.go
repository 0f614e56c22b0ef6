package faults

import (
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/testproc"
)

// TestSoak: two devices, 50 IMAP sessions across them (FETCH, STORE,
// SEARCH, IDLE), continuous LMTP deliveries, for CSPOOL_SOAK (default 15s).
// Then: no failures but expected NOs, no loss, convergence, and each
// daemon's RSS at the end within 2x + 64 MB of its RSS after warm-up.
//
// A heavy test: it runs with CSPOOL_HEAVY=1 (CI sets it) or CSPOOL_SOAK.
func TestSoak(t *testing.T) {
	if os.Getenv("CSPOOL_SOAK") == "" {
		testproc.NeedHeavy(t)
	}
	dur := 15 * time.Second
	if v := os.Getenv("CSPOOL_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CSPOOL_SOAK=%q: %v", v, err)
		}
		dur = d
	}
	c := newCluster(t, clusterOptions{})
	l := newLedger()
	ld := startLoad(t, c, l, loadOptions{maxMessages: 100000, pace: 10 * time.Millisecond, mutators: true})
	var sessions sync.WaitGroup
	for i := 0; i < 50; i++ {
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			readLoop(ld, c.devices[i%2], l, uint64(i))
		}()
	}
	warm := dur / 3
	time.Sleep(warm)
	var warmRSS []int
	for _, d := range c.devices {
		warmRSS = append(warmRSS, d.p.rssKB(t))
	}
	time.Sleep(dur - warm)
	var endRSS []int
	for _, d := range c.devices {
		endRSS = append(endRSS, d.p.rssKB(t))
	}
	ld.stop()
	sessions.Wait()
	t.Logf("soak %v: %s", dur, l.summary())
	for i, d := range c.devices {
		t.Logf("device %s RSS: %d kB after warm-up, %d kB at the end", d.name, warmRSS[i], endRSS[i])
		if endRSS[i] > 2*warmRSS[i]+64<<10 {
			t.Errorf("device %s RSS grew from %d kB to %d kB", d.name, warmRSS[i], endRSS[i])
		}
	}
	// A MOVE into INBOX applied on the device before the log gave INBOX's
	// next UIDs to deliveries it had not applied yet gives INBOX a new
	// UIDVALIDITY on that device (docs/MAILSTORE.md, invariants; docs/FAULTS.md,
	// "Soak"): allowed, and only as found by selecting INBOX again.
	l.checkErrors(t, nil, joinLists(imapRaces, imapOffline))
	verify(t, c, l)
}

// readLoop is one IMAP session: FETCH, STORE, SEARCH and a short IDLE on
// INBOX, at random, until the load stops.
func readLoop(ld *load, d *device, l *ledger, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	c, conn, err := dialIMAP(d.addr())
	if err != nil {
		l.note(l.imapErrs, imapClass(err))
		return
	}
	defer c.Close()
	for i := 0; i < 100000 && !ld.stopped(); i++ {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		sel, err := c.Select("INBOX", nil).Wait()
		if err == nil && sel.NumMessages > 0 {
			n := uint32(r.IntN(int(sel.NumMessages))) + 1
			switch r.IntN(4) {
			case 0:
				_, err = c.Fetch(seqRange(n, min(n+10, sel.NumMessages)), &imap.FetchOptions{Flags: true, Envelope: true, BodySection: []*imap.FetchItemBodySection{tokenSection}}).Collect()
			case 1:
				err = c.Store(imap.SeqSetNum(n), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Soak"}}, nil).Close()
			case 2:
				_, err = c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-Fault-Token", Value: "t001"}}}, nil).Wait()
			default:
				var idle interface{ Close() error }
				if idle, err = c.Idle(); err == nil {
					time.Sleep(200 * time.Millisecond)
					err = idle.Close()
				}
			}
		}
		switch {
		case err == nil:
			l.mu.Lock()
			l.imapOK++
			l.mu.Unlock()
		case isReply(err):
			class := imapClass(err)
			if isCode(err, imap.ResponseCodeNonExistent) && sel != nil {
				// INBOX was there when selected: learn why it went.
				var lost error
				if class, lost = nonExistentClass(c, selection{"INBOX", sel.UIDValidity}, class); lost != nil {
					l.note(l.imapErrs, class)
					l.note(l.imapErrs, imapClass(lost))
					return
				}
			}
			l.note(l.imapErrs, class)
		default:
			l.note(l.imapErrs, imapClass(err))
			return
		}
		time.Sleep(time.Duration(50+r.IntN(100)) * time.Millisecond)
	}
}
