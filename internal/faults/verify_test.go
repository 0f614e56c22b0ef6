package faults

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

var tokenSection = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-Fault-Token"}, Peek: true}

// tokens returns how often each token is in a device's mailbox, over IMAP.
func tokens(t *testing.T, d *device, box string) map[string]int {
	t.Helper()
	c, conn, err := dialIMAP(d.addr())
	if err != nil {
		t.Fatalf("logging in to device %s: %v", d.name, err)
	}
	defer c.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	sel, err := c.Select(box, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("device %s: EXAMINE %s: %v", d.name, box, err)
	}
	out := map[string]int{}
	if sel.NumMessages == 0 {
		return out
	}
	msgs, err := c.Fetch(seqRange(1, sel.NumMessages), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{tokenSection}}).Collect()
	if err != nil {
		t.Fatalf("device %s: FETCH in %s: %v", d.name, box, err)
	}
	for _, m := range msgs {
		h := string(bytes.TrimSpace(m.FindBodySection(tokenSection)))
		tok, ok := strings.CutPrefix(h, "X-Fault-Token: ")
		if !ok {
			t.Errorf("device %s, %s: message %d has header %q, want an X-Fault-Token", d.name, box, m.SeqNum, h)
			continue
		}
		out[tok]++
	}
	return out
}

// verify waits for both devices to apply the spool's head, then checks
// every acknowledged token is in INBOX or Archive exactly once on both, no
// token twice, no stray token, and (after stopping the daemons) equal
// Dumps, no integrity alarm and no rejected entries (but retried
// deliveries, when the load sent some again). It stops the daemons.
func verify(t *testing.T, c *cluster, l *ledger) {
	t.Helper()
	head := c.waitConverged(90 * time.Second)
	l.mu.Lock()
	acked, sent := len(l.acked), len(l.sent)
	l.mu.Unlock()
	if acked == 0 {
		t.Fatal("no delivery was acknowledged: the load did not run")
	}
	var counts []int
	for _, d := range c.devices {
		seen := map[string]int{}
		for _, box := range []string{"INBOX", "Archive"} {
			for tok, n := range tokens(t, d, box) {
				seen[tok] += n
			}
		}
		l.mu.Lock()
		for tok := range l.acked {
			if seen[tok] != 1 {
				t.Errorf("device %s: acknowledged token %s present %d times, want exactly once", d.name, tok, seen[tok])
			}
		}
		for tok, n := range seen {
			if !l.sent[tok] {
				t.Errorf("device %s: token %s was never sent", d.name, tok)
			}
			if n > 1 {
				t.Errorf("device %s: token %s present %d times (applied twice)", d.name, tok, n)
			}
		}
		l.mu.Unlock()
		for tok := range tokens(t, d, "Copies") {
			if !l.sent[tok] {
				t.Errorf("device %s: Copies holds token %s, never sent", d.name, tok)
			}
		}
		counts = append(counts, len(seen))
	}
	t.Logf("converged at head %d; %d sent, %d acknowledged, %v delivered messages on the devices", head, sent, acked, counts)

	var states []*mailstore.State
	for _, d := range c.devices {
		d.p.stop(t)
		key := devicedb.Key(c.userKey.DatabaseKey("mailstore"))
		ms, err := mailstore.OpenWith(d.db, mailstore.Options{Parser: mimeform.Parser{}, Key: &key, NoMigrate: true})
		if err != nil {
			t.Fatalf("opening device %s's database: %v", d.name, err)
		}
		ctx := context.Background()
		st, err := ms.Dump(ctx)
		if err != nil {
			t.Fatalf("dumping device %s: %v", d.name, err)
		}
		n, err := ms.RejectedCount(ctx)
		dups := 0
		if err == nil && l.retries > 0 {
			// A delivery sent again after a lost answer is a retry the
			// device suppresses (docs/DELIVERY.md, "Retried deliveries").
			dups, err = ms.RejectedAs(ctx, mailstore.ReasonDuplicate)
			if dups > l.retries {
				t.Errorf("device %s rejected %d entries as retried deliveries, but only %d deliveries were sent again", d.name, dups, l.retries)
			}
		}
		if err != nil || n != dups {
			rej, _ := ms.Rejected(ctx, 5)
			t.Errorf("device %s rejected %d entries (%v), %d of them retried deliveries, want none but those: %+v", d.name, n, err, dups, rej)
		}
		if al, err := ms.Alarms(ctx); err != nil || len(al) != 0 {
			t.Errorf("device %s has integrity alarms %+v (%v), want none", d.name, al, err)
		}
		ms.Close()
		states = append(states, st)
	}
	for i, st := range states[1:] {
		name := c.devices[i+1].name
		if d := mailstore.Diff(states[0], st, 10); len(d) > 0 {
			t.Errorf("devices a and %s differ after converging at %d:\n%s", name, head, strings.Join(d, "\n"))
		}
		if states[0].Checksum() != st.Checksum() {
			t.Errorf("device checksums differ: a %x, %s %x", states[0].Checksum(), name, st.Checksum())
		}
	}
}
