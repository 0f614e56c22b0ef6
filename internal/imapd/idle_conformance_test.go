package imapd

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// line is one line a raw connection read, with when it arrived.
type line struct {
	text string
	at   time.Time
}

// readUntil reads lines until done says stop (given every line so far),
// at most 1000 lines, within limit.
func (rc *rawConn) readUntil(limit time.Duration, done func([]line) bool) []line {
	rc.t.Helper()
	var got []line
	rc.c.SetReadDeadline(time.Now().Add(limit))
	for len(got) < 1000 {
		s, err := rc.br.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("reading: %v; got so far:\n%s", err, joinLines(got))
		}
		got = append(got, line{strings.TrimRight(s, "\r\n"), time.Now()})
		if done(got) {
			return got
		}
	}
	rc.t.Fatalf("no end in 1000 lines:\n%s", joinLines(got))
	return nil
}

func joinLines(ls []line) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

// subsequence returns the index in got of each of want, matched in order as
// prefixes, or -1 from the first that is missing.
func subsequence(got []line, want []string) []int {
	idx := make([]int, len(want))
	k := 0
	for i, w := range want {
		idx[i] = -1
		for ; k < len(got); k++ {
			if strings.HasPrefix(got[k].text, w) {
				idx[i] = k
				k++
				break
			}
		}
		if idx[i] < 0 {
			break
		}
	}
	return idx
}

func storeUID(t *testing.T, c *imapclient.Client, uid imap.UID, flag imap.Flag) {
	t.Helper()
	if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{flag}}, nil).Close(); err != nil {
		t.Fatalf("UID STORE %d +FLAGS %s: %v", uid, flag, err)
	}
}

// TestIdleAfterDone makes changes exactly in the window between a client's
// DONE and its next IDLE, as Thunderbird leaves one (DONE, NOOP, UID FETCH,
// a pause, IDLE): from another session on the same device, from another
// device, and by a delivery. Each must be written as soon as IDLE starts,
// before the client sends anything else; go-imap's SessionTracker.Idle
// alone would wait for the next change.
func TestIdleAfterDone(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	b := r.device("b")
	b.synced(r.Head())

	rc := dialRaw(t, a.addr)
	rc.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	rc.until("a1 OK")
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 OK")

	other := a.client(nil) // another session on the same device
	mustSelect(t, other, "INBOX")
	cb := b.client(nil) // a session on another device
	mustSelect(t, cb, "INBOX")

	// Each round: the other session flags a message, device b appends one
	// and changes UID 1, and one is delivered; want is what must follow
	// "+ idling", in this order (other lines may come between).
	rounds := []struct {
		uid  imap.UID
		flag imap.Flag
		onB  func() // device b's change to UID 1
		want []string
	}{
		{2, imap.FlagFlagged, func() { storeUID(t, cb, 1, imap.FlagSeen) },
			[]string{`* 2 FETCH (UID 2 FLAGS (\Flagged`, `* 5 EXISTS`, `* 1 FETCH (UID 1 FLAGS (\Seen`, `* 6 EXISTS`}},
		{3, imap.FlagAnswered, func() {
			storeUID(t, cb, 1, imap.FlagDeleted)
			if err := cb.UIDExpunge(imap.UIDSetNum(1)).Close(); err != nil {
				t.Fatal(err)
			}
		}, []string{`* 3 FETCH (UID 3 FLAGS (\Answered`, `* 7 EXISTS`, `* 1 FETCH (UID 1 FLAGS (\Seen \Deleted`, `* 1 EXPUNGE`, `* 7 EXISTS`}},
		{4, imap.FlagDraft, func() {},
			[]string{`* 3 FETCH (UID 4 FLAGS (\Draft`, `* 8 EXISTS`, `* 9 EXISTS`}},
	}
	var lat []time.Duration
	for i, round := range rounds {
		rc.cmd("i1 IDLE")
		rc.until("+ ")
		rc.cmd("DONE")
		rc.until("i1 OK")
		rc.cmd("n1 NOOP")
		rc.until("n1 OK")
		rc.cmd("f1 UID FETCH 1:* (UID FLAGS)")
		rc.until("f1 OK")

		// The window: nothing is read from rc until IDLE.
		storeUID(t, other, round.uid, round.flag)
		msg := "Subject: from device b\r\n\r\nx\r\n"
		ac := cb.Append("INBOX", int64(len(msg)), nil)
		ac.Write([]byte(msg))
		ac.Close()
		if _, err := ac.Wait(); err != nil {
			t.Fatal(err)
		}
		round.onB()
		r.Deliver([]byte("Subject: delivered in the window\r\n\r\nx\r\n"))
		a.synced(r.Head())

		want := append([]string{"+ "}, round.want...)
		start := time.Now()
		rc.cmd("i2 IDLE")
		got := rc.readUntil(10*time.Second, func(ls []line) bool {
			return !slices.Contains(subsequence(ls, want), -1)
		})
		idx := subsequence(got, want)
		if idx[0] != 0 {
			t.Fatalf("round %d: IDLE answered with\n%s", i, joinLines(got))
		}
		for _, l := range got {
			if !strings.HasPrefix(l.text, "* ") && !strings.HasPrefix(l.text, "+ ") {
				t.Errorf("round %d: %q during IDLE", i, l.text)
			}
		}
		lat = append(lat, got[len(got)-1].at.Sub(start))
		rc.cmd("DONE")
		rc.until("i2 OK")
	}
	slices.Sort(lat)
	t.Logf("IDLE sent to the last update queued before it read: median %v, max %v (goal 100 ms)", lat[len(lat)/2], lat[len(lat)-1])
}
