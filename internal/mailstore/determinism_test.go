package mailstore

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"cspool/internal/command"
)

var seedFlag = flag.Uint64("mailstore.seed", 0, "seed for the random log of TestDeterminism (0: the fixed seeds)")

// logGen makes a random but plausible log: most commands name things that
// exist, some name things that are gone, some are rejected.
type logGen struct {
	r       *rand.Rand
	log     testLog
	msgs    []command.ID // every message id ever created (some expunged since)
	boxIDs  []command.ID // ids of created mailboxes (some deleted or renamed since)
	entries []Entry
}

var genNames = []string{"INBOX", "Sent", "Drafts", "Trash", "Archive", "A", "A/b", "A/b/c", "B", "C/d", "inbox/x", "Ünïcode"}
var genFlags = []string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`, "$Label1", "$label1", "Work", "WORK", "$Junk"}
var genBodies = []string{
	"Subject: same\r\nMessage-ID: <dup@x>\r\n\r\nbody\r\n",
	"no header at all, not even a colon\n",
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
	"Content-Type: multipart/mixed; boundary=b\r\n\r\nnever closed\r\n",
	"",
}

func (g *logGen) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *logGen) someIDs() []command.ID {
	n := 1 + g.r.IntN(3)
	var ids []command.ID
	for i := 0; i < n && len(g.msgs) > 0; i++ {
		ids = append(ids, g.msgs[g.r.IntN(len(g.msgs))])
	}
	if len(ids) == 0 || g.r.IntN(10) == 0 {
		ids = append(ids, entryID(1<<40+uint64(g.r.IntN(1000)))) // never existed
	}
	return ids
}

func (g *logGen) someFlags() []string {
	n := 1 + g.r.IntN(3)
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, g.pick(genFlags))
	}
	return out
}

func (g *logGen) body() []byte {
	if g.r.IntN(3) == 0 {
		return []byte(g.pick(genBodies))
	}
	return []byte(simpleMessage(fmt.Sprintf("m%d", g.r.IntN(50))))
}

func (g *logGen) next() {
	var c *command.Command
	author := AuthorUser
	k := g.r.IntN(100)
	switch {
	case k < 25:
		author = AuthorSpool
		c = &command.Command{Kind: command.Deliver, Date: int64(1700000000000 + g.r.IntN(1e9)), Body: g.body()}
	case k < 35:
		c = &command.Command{Kind: command.Append, Mailbox: g.pick(genNames), Date: int64(1 + g.r.IntN(1e12)), Body: g.body()}
		if g.r.IntN(2) == 0 {
			c.Flags = g.someFlags()
		}
		if len(g.boxIDs) > 0 && g.r.IntN(3) == 0 {
			c.MailboxID = g.boxIDs[g.r.IntN(len(g.boxIDs))]
		}
	case k < 50:
		kinds := []command.Kind{command.SetFlags, command.ClearFlags, command.ReplaceFlags}
		c = &command.Command{Kind: kinds[g.r.IntN(3)], IDs: g.someIDs(), Flags: g.someFlags()}
	case k < 58:
		c = &command.Command{Kind: command.Copy, Mailbox: g.pick(genNames), IDs: g.someIDs()}
	case k < 66:
		c = &command.Command{Kind: command.Move, Mailbox: g.pick(genNames), IDs: g.someIDs()}
	case k < 74:
		c = &command.Command{Kind: command.Expunge, IDs: g.someIDs()}
	case k < 80:
		c = &command.Command{Kind: command.CreateMailbox, Mailbox: g.pick(genNames)}
	case k < 85:
		c = &command.Command{Kind: command.RenameMailbox, Mailbox: g.pick(genNames), NewName: g.pick(genNames)}
		if c.Mailbox == c.NewName {
			c.NewName += "2"
		}
	case k < 90:
		c = &command.Command{Kind: command.DeleteMailbox, Mailbox: g.pick(genNames)}
	case k < 94:
		kinds := []command.Kind{command.Subscribe, command.Unsubscribe}
		c = &command.Command{Kind: kinds[g.r.IntN(2)], Mailbox: g.pick(genNames)}
	case k < 97:
		author = AuthorSpool // beyond its rights
		c = &command.Command{Kind: command.Expunge, IDs: g.someIDs()}
	default:
		if len(g.entries) > 0 { // a replay: an old entry again at a new position
			old := g.entries[g.r.IntN(len(g.entries))]
			g.log.pos++
			g.entries = append(g.entries, Entry{Pos: g.log.pos, ID: old.ID, Author: old.Author, Cmd: old.Cmd})
			return
		}
		c = &command.Command{Kind: command.Checkpoint, Position: 1, Digest: make([]byte, 32)}
	}
	e := g.log.by(author, c)
	switch c.Kind {
	case command.Deliver, command.Append:
		g.msgs = append(g.msgs, e.ID)
	case command.Copy:
		for i := range c.IDs {
			g.msgs = append(g.msgs, command.DeriveID(e.ID, uint32(i)))
		}
	case command.CreateMailbox:
		g.boxIDs = append(g.boxIDs, e.ID)
	}
	g.entries = append(g.entries, e)
}

func generateLog(seed uint64, n int) []Entry {
	g := &logGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for len(g.entries) < n {
		g.next()
	}
	return g.entries
}

// applyInBatches applies entries size at a time and returns the outcomes
// and changes, concatenated.
func applyInBatches(t *testing.T, s *Store, entries []Entry, size int) *Result {
	t.Helper()
	all := &Result{}
	for i := 0; i < len(entries); i += size {
		batch := entries[i:min(i+size, len(entries))]
		res, err := s.Apply(context.Background(), batch, batch[len(batch)-1].Pos)
		if err != nil {
			t.Fatalf("Apply of entries %d..%d: %v", i, i+len(batch)-1, err)
		}
		all.Outcomes = append(all.Outcomes, res.Outcomes...)
		all.Changes = append(all.Changes, res.Changes...)
	}
	return all
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	seeds := []uint64{1, 2, 3}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	const n = 300
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			entries := generateLog(seed, n)
			one, fifty := openTest(t), openTest(t)
			resOne := applyInBatches(t, one, entries, 1)
			resFifty := applyInBatches(t, fifty, entries, 50)
			a, b := dump(t, one), dump(t, fifty)
			if d := Diff(a, b, 20); d != nil {
				t.Fatalf("seed %d (rerun with -mailstore.seed=%d): states differ after batches of 1 and 50:\n%v", seed, seed, d)
			}
			if a.Checksum() != b.Checksum() {
				t.Fatalf("seed %d: equal states with different checksums", seed)
			}
			if !reflect.DeepEqual(resOne, resFifty) {
				t.Fatalf("seed %d (rerun with -mailstore.seed=%d): results differ between batches of 1 and 50", seed, seed)
			}
			// The log must exercise the apply, not only its rejections.
			counts := map[Status]int{}
			for _, o := range resOne.Outcomes {
				counts[o.Status]++
			}
			if counts[Applied]+counts[Partial] < n/2 || counts[Applied] < n/4 || counts[Rejected] == 0 || counts[Partial] == 0 || len(a.Messages) == 0 {
				t.Fatalf("seed %d: log too degenerate: outcomes %v, %d messages", seed, counts, len(a.Messages))
			}
			t.Logf("seed %d: outcomes %v, %d mailboxes, %d messages", seed, counts, len(a.Mailboxes), len(a.Messages))
			checkInvariants(t, one, a)
		})
	}
}

// checkInvariants checks what must hold in any state: UIDs below UIDNEXT,
// unique UIDVALIDITYs, UIDs() matching the messages.
func checkInvariants(t *testing.T, s *Store, st *State) {
	t.Helper()
	uvs := map[uint32]bool{}
	next := map[command.ID]uint32{}
	for _, mb := range st.Mailboxes {
		if uvs[mb.UIDValidity] {
			t.Errorf("UIDVALIDITY %d used twice", mb.UIDValidity)
		}
		uvs[mb.UIDValidity] = true
		if mb.UIDValidity >= st.NextUIDValidity {
			t.Errorf("mailbox %q: UIDVALIDITY %d not below the counter %d", mb.Name, mb.UIDValidity, st.NextUIDValidity)
		}
		next[mb.ID] = mb.UIDNext
	}
	perBox := map[command.ID]int{}
	for _, m := range st.Messages {
		if n, ok := next[m.Mailbox]; !ok || m.UID >= n {
			t.Errorf("message %s: UID %d not below UIDNEXT %d of its mailbox", m.ID, m.UID, n)
		}
		perBox[m.Mailbox]++
	}
	for _, mb := range st.Mailboxes {
		uids, err := s.UIDs(context.Background(), mb.ID)
		if err != nil {
			t.Fatalf("UIDs(%q): %v", mb.Name, err)
		}
		if len(uids) != perBox[mb.ID] {
			t.Errorf("mailbox %q: UIDs lists %d, dump has %d messages", mb.Name, len(uids), perBox[mb.ID])
		}
		for i := 1; i < len(uids); i++ {
			if uids[i] <= uids[i-1] {
				t.Errorf("mailbox %q: UIDs not increasing: %v", mb.Name, uids)
				break
			}
		}
	}
}

func TestDiffSeesDifferences(t *testing.T) {
	t.Parallel()
	a, b := openTest(t), openTest(t)
	var la, lb testLog
	mustApply(t, a, la.spool(deliverCmd(simpleMessage("x"))))
	mustApply(t, b, lb.spool(deliverCmd(simpleMessage("y"))))
	da, db := dump(t, a), dump(t, b)
	if d := Diff(da, db, 0); len(d) == 0 {
		t.Fatal("Diff of states with different message bodies: expected differences, got none")
	}
	if da.Checksum() == db.Checksum() {
		t.Fatal("different states: expected different checksums, got equal ones")
	}
	if d := Diff(da, da, 0); d != nil {
		t.Fatalf("Diff of a state with itself: expected none, got %v", d)
	}
}
