package mailstore

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// TestDeliverRunAsOneByOne applies a run of deliveries in one batch
// (apply_deliver.go) and the same entries one batch each, after the same
// history, and requires the same Results and the same rows in every table
// an apply writes (storage ids, references and origins included; the
// rejections' times aside): a delivery retried in the run and one of a
// message stored before it (duplicate.go), bodies delivered twice in the
// run, a body stored before it, a message id that exists (a copy's), a replay of an
// earlier entry and one inside the run, an invalid and a forbidden
// Deliver, one by the user, an empty body, and more than 64 new messages
// (the run's statements cut into chunks of 64, 8 and 1).
func TestDeliverRunAsOneByOne(t *testing.T) {
	t.Parallel()
	var l testLog
	first := l.spool(&command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(simpleMessage("before"))})
	copied := l.user(&command.Command{Kind: command.Copy, Mailbox: "Archive", IDs: []command.ID{first.ID}})
	history := []Entry{first, copied}

	var run []Entry
	add := func(e Entry) { run = append(run, e) }
	deliver := func(body string) Entry {
		return l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000001000 + len(run)), Body: []byte(body)})
	}
	add(deliver(simpleMessage("twice")))
	add(deliver(simpleMessage("twice")))  // a retried delivery
	add(deliver(simpleMessage("before"))) // a retry of one stored before the run
	later := deliver(simpleMessage("before"))
	later.Cmd.Date += DuplicateWindow.Milliseconds() + 1 // the same bytes, past the window: its body is shared
	add(later)
	clash := deliver(simpleMessage("clash"))
	clash.ID = command.DeriveID(copied.ID, 0) // the copy's message id
	add(clash)
	l.pos++
	add(Entry{Pos: l.pos, ID: first.ID, Author: AuthorSpool, Cmd: first.Cmd}) // a replay
	inRun := deliver(simpleMessage("in run"))
	add(inRun)
	l.pos++
	add(Entry{Pos: l.pos, ID: inRun.ID, Author: AuthorSpool, Cmd: inRun.Cmd}) // replayed in the run
	bad := deliver(simpleMessage("invalid"))
	bad.Cmd.Mailbox = "Sent" // a Deliver takes no mailbox
	add(bad)
	stranger := deliver(simpleMessage("stranger"))
	stranger.Author = Author(9)
	add(stranger)
	l.pos++
	add(Entry{Pos: l.pos, ID: entryID(l.pos), Author: AuthorUser,
		Cmd: &command.Command{Kind: command.Deliver, Date: 1700000002000, Body: []byte(simpleMessage("by the user"))}})
	add(deliver(""))
	for i := range 80 {
		// Five bodies twice, with no Message-ID: messages sharing a body.
		add(deliver(fmt.Sprintf("Subject: many %d\r\n\r\nHello.\r\n", i%75)))
	}
	for i := range run {
		if i%2 == 0 { // half of them prepared, as the sync loop does all
			run[i].Prepared = (&Store{parser: mimeform.Parser{}}).Prepare(run[i].Cmd)
		}
	}
	if deliverRunLen(run) != len(run) {
		t.Fatalf("the run is %d entries, %d of them Deliver", len(run), deliverRunLen(run))
	}

	one, all := openTest(t), openTest(t)
	for _, s := range []*Store{one, all} {
		for _, e := range history {
			mustApply(t, s, e)
		}
	}
	var oneByOne Result
	for _, e := range run {
		r := mustApply(t, one, e)
		oneByOne.Outcomes = append(oneByOne.Outcomes, r.Outcomes...)
		oneByOne.Changes = append(oneByOne.Changes, r.Changes...)
	}
	atOnce := mustApply(t, all, run...)

	if !reflect.DeepEqual(atOnce.Outcomes, oneByOne.Outcomes) {
		for i := range min(len(atOnce.Outcomes), len(oneByOne.Outcomes)) {
			if !reflect.DeepEqual(atOnce.Outcomes[i], oneByOne.Outcomes[i]) {
				t.Errorf("outcome %d: at once %+v, one by one %+v", i, atOnce.Outcomes[i], oneByOne.Outcomes[i])
			}
		}
		t.Fatalf("outcomes differ (%d at once, %d one by one)", len(atOnce.Outcomes), len(oneByOne.Outcomes))
	}
	if !reflect.DeepEqual(atOnce.Changes, oneByOne.Changes) {
		t.Fatalf("changes differ:\nat once    %+v\none by one %+v", atOnce.Changes, oneByOne.Changes)
	}
	statuses := map[Status]int{}
	reasons := map[Reason]int{}
	for _, o := range atOnce.Outcomes {
		statuses[o.Status]++
		reasons[o.Reason]++
	}
	if reasons[ReasonIDExists] != 1 || reasons[ReasonReplay] != 2 || reasons[ReasonInvalid] != 1 || reasons[ReasonForbidden] != 1 ||
		reasons[ReasonDuplicate] != 2 || statuses[Applied] != len(run)-7 {
		t.Fatalf("the run does not exercise what it should: statuses %v, reasons %v", statuses, reasons)
	}
	for _, table := range []string{"state", "mailboxes", "bodies", "forms", "structures", "blobs", "messages", "entries",
		"unindexed", "body_count", "subscriptions", "keywords"} {
		a, b := tableRows(t, all, "SELECT * FROM "+table), tableRows(t, one, "SELECT * FROM "+table)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("table %s: at once %d rows, one by one %d rows, not the same:\n%.600v\n%.600v", table, len(a), len(b), a, b)
		}
	}
	a := tableRows(t, all, "SELECT pos, entry, reason, detail FROM rejected")
	if b := tableRows(t, one, "SELECT pos, entry, reason, detail FROM rejected"); !reflect.DeepEqual(a, b) {
		t.Errorf("rejections: at once %v, one by one %v", a, b)
	}
}

// tableRows returns every row query gives, in rowid order, each value
// printed with %#v.
func tableRows(t *testing.T, s *Store, query string) []string {
	t.Helper()
	rows, err := s.rdb.QueryContext(context.Background(), query+" ORDER BY rowid")
	if err != nil {
		rows, err = s.rdb.QueryContext(context.Background(), query+" ORDER BY 1")
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%#v", vals))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
