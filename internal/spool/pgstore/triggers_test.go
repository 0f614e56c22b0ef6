package pgstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A database whose schema is at the newest version but lacks a trigger
// that version makes, or has it disabled (a restore of some sections of a
// dump, a trigger disabled for a load and left so), is refused at Open,
// naming the trigger, instead of being run without the rule it keeps; the
// same database with the trigger enabled again opens.
func TestMissingTriggerRefused(t *testing.T) {
	o := newOpener(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range []struct{ name, sql, undo string }{
		{"cspool_entries.cspool_entries_keep_chain", "DROP TRIGGER cspool_entries_keep_chain ON cspool_entries", ""},
		{"cspool_logs.cspool_logs_kept", "ALTER TABLE cspool_logs DISABLE TRIGGER cspool_logs_kept", "ALTER TABLE cspool_logs ENABLE TRIGGER cspool_logs_kept"},
		{"cspool_chain.cspool_chain_immutable", "ALTER TABLE cspool_chain DISABLE TRIGGER ALL", "ALTER TABLE cspool_chain ENABLE TRIGGER ALL"},
	} {
		s := o.fresh(t)
		if _, err := s.pool.Exec(ctx, c.sql); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(ctx, o.dsns[s], Options{})
		if s2 != nil {
			s2.Close()
		}
		if !errors.Is(err, ErrMissingTriggers) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("Open after %s: %v, want ErrMissingTriggers naming %s", c.sql, err, c.name)
		}
		if c.undo == "" {
			continue
		}
		if _, err := s.pool.Exec(ctx, c.undo); err != nil {
			t.Fatal(err)
		}
		o.reopen(t, s)
	}
}
