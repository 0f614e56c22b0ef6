package syncer

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"slices"
	"testing"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// TestReplacedTwiceVouched: the spool's key replaced twice (first by
// second, second by third), a new device given only the third key trusts
// the second, which the spool vouches for, and applies its deliveries
// before the cutover; the first key's, two back, stay a stranger's
// (docs/OPERATING.md, "Replacing the spool key"), however the log is cut
// into reads. Before, a read that held an entry by the first key before
// those by the second asked the statement for the first key's author
// alone, found it named another, and stopped looking: the second key's
// deliveries in that read were passed by as a stranger's and never showed.
func TestReplacedTwiceVouched(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 2, 1000} {
		r := newRig(t)
		ctx := context.Background()
		first := r.spool
		second, third := r.evil, mustGenerate(t)
		r.replaceOnStore(first, second, []int{0, 1})
		r.deliver(second, msg(2))
		r.deliver(second, msg(3))
		// The second replacement, by a server started again: another
		// handle on the store.
		r.log.(*sqlitestore.Store).Close()
		st, err := sqlitestore.Open(filepath.Join(r.dir, "spool"), sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		r.log = st
		kr := r.log.(spool.KeyReplacer)
		if replaced, err := kr.ReplaceSpoolKey(ctx, second.Public().Bytes(), third.Public().Bytes()); err != nil || !replaced {
			t.Fatalf("replacing the second key: replaced %v, %v", replaced, err)
		}
		stated, err := keys.SignSuccession(third, second.Public())
		if err != nil {
			t.Fatal(err)
		}
		r.deliver(third, msg(4))
		url := r.serve(third.Public(), &stated)
		s, ms := r.vouchedDevice(url, "b", third.Public(), batch)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v", batch, got, want)
		}
		untrustedAt(t, ms, 1)
		untrustedAt(t, ms, 2)
	}
}

func mustGenerate(t *testing.T) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
