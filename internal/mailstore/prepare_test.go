package mailstore

import (
	"bytes"
	"context"
	"testing"

	"cspool/internal/command"
)

// TestPreparedSameState: deliveries and appends applied with the work on
// their bytes made before Apply (Store.Prepare) give the state the same entries
// give without it, and work made for other bytes is never used: an entry
// carrying another message's Prepared stores its own bytes, parsed.
func TestPreparedSameState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var l testLog
	entries := deliverEntries(20)
	for i := range 5 {
		entries = append(entries, l.user(&command.Command{Kind: command.Append, Mailbox: "Archive", Flags: []string{`\Seen`},
			Date: 1700000000000, Body: benchMessage(100 + i)}))
	}
	for i := range entries {
		entries[i].Pos, entries[i].ID = uint64(i+1), entryID(uint64(i+1))
	}
	plain, prepared := openTest(t), openTest(t)
	if _, err := plain.Apply(ctx, entries, uint64(len(entries))); err != nil {
		t.Fatal(err)
	}
	with := make([]Entry, len(entries))
	for i, e := range entries {
		e.Prepared = prepared.Prepare(e.Cmd)
		if e.Prepared == nil {
			t.Fatalf("entry %d: no Prepared for a %s", e.Pos, e.Cmd.Kind)
		}
		with[i] = e
	}
	// Entry 3 carries the work made for a copy of entry 4's message.
	other := *entries[3].Cmd
	other.Body = bytes.Clone(other.Body)
	with[2].Prepared = prepared.Prepare(&other)
	if _, err := prepared.Apply(ctx, with, uint64(len(with))); err != nil {
		t.Fatal(err)
	}
	a, err := plain.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prepared.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, b, 10); d != nil {
		t.Fatalf("applied with Prepared, the state differs: %v", d)
	}
}
