package spooltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"cspool/internal/spool"
)

// testKeepSpoolKey: the first key is recorded and taken again; another
// replaces it while the store holds no log; once a log exists another is
// refused with the recorded one, which is still taken.
func (s *suite) testKeepSpoolKey(t *testing.T) {
	st := s.store(t)
	kk, ok := st.(spool.KeyKeeper)
	if !ok {
		t.Fatalf("%T is not a spool.KeyKeeper: a server started with another spool key would sign mail no device trusts", st)
	}
	ctx := context.Background()
	a, b := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64)
	if err := kk.KeepSpoolKey(ctx, a[:32]); err == nil {
		t.Error("a 32-byte key taken")
	}
	for i, k := range [][]byte{a, a, b, b} {
		if err := kk.KeepSpoolKey(ctx, k); err != nil {
			t.Fatalf("key %d on a store with no log: %v", i, err)
		}
	}
	if _, err := st.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	var other *spool.OtherKeyError
	if err := kk.KeepSpoolKey(ctx, a); !errors.As(err, &other) || !bytes.Equal(other.Recorded, b) {
		t.Fatalf("another key once a log exists: %v, want an *OtherKeyError naming the recorded key", err)
	}
	if err := kk.KeepSpoolKey(ctx, b); err != nil {
		t.Errorf("the recorded key once a log exists: %v", err)
	}
}

// testKeyReplaced: two handles on one store, as two servers on one new
// store. The first records key a, the second then records b (no log yet).
// Every append through the first (Append, AppendAt, AppendWithin) is then
// refused with a *spool.KeyReplacedError that is temporary, and nothing
// lands; the second's appends go on, as do those of a third handle bound
// to b; and the first can no longer take a back, since a log exists.
func (s *suite) testKeyReplaced(t *testing.T) {
	st := s.store(t)
	second := s.reopen(t, st)
	kk := func(st spool.Store) spool.KeyKeeper {
		kk, ok := st.(spool.KeyKeeper)
		if !ok {
			t.Fatalf("%T is not a spool.KeyKeeper", st)
		}
		return kk
	}
	ctx := ctxT(t)
	a, b := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64)
	if err := kk(st).KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := kk(second).KeepSpoolKey(ctx, b); err != nil {
		t.Fatalf("another key on a store with no log: %v", err)
	}
	appends := map[string]func() (uint64, error){
		"Append": func() (uint64, error) { return st.Append(ctx, "alice", [][]byte{[]byte("a")}) },
		"AppendAt": func() (uint64, error) {
			return st.(spool.HeadAppender).AppendAt(ctx, "alice", 0, [][]byte{[]byte("a")})
		},
		"AppendWithin": func() (uint64, error) {
			return st.(spool.Quotas).AppendWithin(ctx, "alice", 1<<20, [][]byte{[]byte("a")})
		},
	}
	check := func(when string) {
		t.Helper()
		for name, f := range appends {
			_, err := f()
			var kr *spool.KeyReplacedError
			if !errors.As(err, &kr) || !bytes.Equal(kr.Recorded, b) || !bytes.Equal(kr.Bound, a) {
				t.Fatalf("%s: %s through the handle whose key was replaced: %v, want a *KeyReplacedError naming both keys", when, name, err)
			}
			if !errors.Is(err, spool.ErrKeyReplaced) || !errors.Is(err, spool.ErrUnavailable) {
				t.Errorf("%s: %s: %v is not ErrKeyReplaced and ErrUnavailable (temporary)", when, name, err)
			}
		}
	}
	check("before any log")
	if h, err := st.Head(ctx, "alice"); err != nil || h != 0 {
		t.Fatalf("head after the refused appends: %d, %v; want 0", h, err)
	}
	mustAppend(t, second, "alice", []byte("b1"))
	third := s.reopen(t, st)
	if err := kk(third).KeepSpoolKey(ctx, b); err != nil {
		t.Fatalf("the recorded key through a third handle: %v", err)
	}
	mustAppend(t, third, "alice", []byte("b2"))
	check("once a log exists")
	var other *spool.OtherKeyError
	if err := kk(st).KeepSpoolKey(ctx, a); !errors.As(err, &other) {
		t.Fatalf("the replaced key again once a log exists: %v, want an *OtherKeyError", err)
	}
	check("after the refused KeepSpoolKey")
	checkEntries(t, readAll(t, st, "alice"), 1, [][]byte{[]byte("b1"), []byte("b2")})
}

// testKeyReplacedRace: appends through a handle bound to key a race with
// a second handle recording key b on the same new store. Whoever wins, the
// log never holds an append of a once b is recorded: either b is refused
// (a log existed when it looked) and every acknowledged append of a is
// there, or b is recorded and no append of a was acknowledged or landed.
func (s *suite) testKeyReplacedRace(t *testing.T) {
	a, b := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64)
	won := map[bool]int{}
	for round := 0; round < 6; round++ {
		st := s.store(t)
		second := s.reopen(t, st)
		ctx := ctxT(t)
		if err := st.(spool.KeyKeeper).KeepSpoolKey(ctx, a); err != nil {
			t.Fatal(err)
		}
		var acked atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 20; i++ {
					_, err := st.Append(ctx, fmt.Sprintf("u%d", (w+i)%3), [][]byte{[]byte("a")})
					switch {
					case err == nil:
						acked.Add(1)
					case !errors.Is(err, spool.ErrKeyReplaced):
						t.Errorf("append through a: %v", err)
						return
					}
				}
			}()
		}
		close(start)
		// Let the appenders start in some rounds, not in others.
		for i := 0; i < round*5; i++ {
			runtime.Gosched()
		}
		err := second.(spool.KeyKeeper).KeepSpoolKey(ctx, b)
		wg.Wait()
		var landed uint64
		for u := 0; u < 3; u++ {
			h, herr := st.Head(ctx, fmt.Sprintf("u%d", u))
			if herr != nil {
				t.Fatal(herr)
			}
			landed += h
		}
		var other *spool.OtherKeyError
		switch {
		case err == nil:
			won[true]++
			if acked.Load() != 0 || landed != 0 {
				t.Fatalf("round %d: b recorded, yet %d appends of a acknowledged and %d landed", round, acked.Load(), landed)
			}
		case errors.As(err, &other):
			won[false]++
			if uint64(acked.Load()) != landed {
				t.Fatalf("round %d: b refused; %d appends of a acknowledged, %d landed", round, acked.Load(), landed)
			}
		default:
			t.Fatalf("round %d: recording b: %v", round, err)
		}
	}
	t.Logf("b recorded in %d rounds, refused in %d", won[true], won[false])
}

// testHoldSpoolKey: handles holding one key run side by side, as several
// servers with one key on one store do. While any holds it, another key
// is refused with a *spool.LiveKeyError naming the held key, by
// HoldSpoolKey and KeepSpoolKey alike, and nothing is recorded: the
// holders' appends go on. Once every holder is closed, a store that holds
// no log takes another key, which is then held in turn.
func (s *suite) testHoldSpoolKey(t *testing.T) {
	st := s.store(t)
	kh := func(st spool.Store) spool.KeyHolder {
		kh, ok := st.(spool.KeyHolder)
		if !ok {
			t.Fatalf("%T is not a spool.KeyHolder: a server started with another spool key would record it over a running one's", st)
		}
		return kh
	}
	ctx := ctxT(t)
	a, b, c := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64), bytes.Repeat([]byte{0xc}, 64)
	if err := kh(st).HoldSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	second := s.reopen(t, st)
	if err := kh(second).HoldSpoolKey(ctx, a); err != nil {
		t.Fatalf("the held key through a second handle: %v", err)
	}
	other := s.reopen(t, st)
	refused := func(when string, pub, live []byte) {
		t.Helper()
		for name, f := range map[string]func() error{
			"HoldSpoolKey": func() error { return kh(other).HoldSpoolKey(ctx, pub) },
			"KeepSpoolKey": func() error { return kh(other).KeepSpoolKey(ctx, pub) },
		} {
			var le *spool.LiveKeyError
			if err := f(); !errors.As(err, &le) || !bytes.Equal(le.Live, live) {
				t.Fatalf("%s: %s of another key while one is held: %v, want a *LiveKeyError naming the held key", when, name, err)
			}
		}
	}
	refused("two holders", b, a)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	refused("one holder closed, one left", b, a)
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if err := kh(other).HoldSpoolKey(ctx, b); err != nil {
		t.Fatalf("another key once no handle holds one, no log yet: %v", err)
	}
	last := s.reopen(t, other)
	var le *spool.LiveKeyError
	if err := kh(last).HoldSpoolKey(ctx, a); !errors.As(err, &le) || !bytes.Equal(le.Live, b) {
		t.Fatalf("the first key again while the second is held: %v, want a *LiveKeyError naming the second", err)
	}
	mustAppend(t, other, "alice", []byte("b1"))
	var ok *spool.OtherKeyError
	if err := kh(last).HoldSpoolKey(ctx, c); !errors.As(err, &ok) || !bytes.Equal(ok.Recorded, b) {
		t.Fatalf("a third key once a log exists: %v, want an *OtherKeyError", err)
	}
	if err := kh(last).HoldSpoolKey(ctx, b); err != nil {
		t.Fatalf("the held key through another handle after refusals: %v", err)
	}
	mustAppend(t, last, "alice", []byte("b2"))
	checkEntries(t, readAll(t, other, "alice"), 1, [][]byte{[]byte("b1"), []byte("b2")})
}

// testReplaceSpoolKey: a store that holds logs, recording key a, takes
// key b over it through ReplaceSpoolKey(a, b), once no handle holds a;
// the logs, their positions and chain hashes stay as they were, and the
// next append follows them. While a handle holds a the replacement is
// refused and nothing is recorded; a store recording neither key, or a
// previous key equal to the new one, is refused; the same replacement
// again (another server, or a restart, with the flags left in) holds b
// and records nothing. After it a handle bound to a appends nothing (the
// append's own check), a to hold is an *OtherKeyError, and b is held by
// handles that never name a.
func (s *suite) testReplaceSpoolKey(t *testing.T) {
	st := s.store(t)
	kr := func(st spool.Store) spool.KeyReplacer {
		kr, ok := st.(spool.KeyReplacer)
		if !ok {
			t.Fatalf("%T is not a spool.KeyReplacer: a leaked spool key could not be replaced", st)
		}
		return kr
	}
	ctx := ctxT(t)
	a, b, c := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64), bytes.Repeat([]byte{0xc}, 64)
	if err := kr(st).HoldSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	data := map[string][][]byte{"alice": {nil}, "bob": {nil}}
	for i, user := range []string{"alice", "bob", "alice", "alice"} {
		d := []byte(fmt.Sprintf("%s-a-%d", user, i))
		mustAppend(t, st, user, d)
		data[user] = append(data[user], d)
	}
	// Bound to a without holding it, as a process of a release before
	// the hold would be.
	bound := s.reopen(t, st)
	if err := kr(bound).KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	other := s.reopen(t, st)
	var le *spool.LiveKeyError
	if _, err := kr(other).ReplaceSpoolKey(ctx, a, b); !errors.As(err, &le) || !bytes.Equal(le.Live, a) {
		t.Fatalf("ReplaceSpoolKey(a, b) while a handle holds a: %v, want a *LiveKeyError naming a", err)
	}
	d := []byte("alice-a-held")
	mustAppend(t, st, "alice", d)
	data["alice"] = append(data["alice"], d)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var np *spool.NotPreviousKeyError
	if _, err := kr(other).ReplaceSpoolKey(ctx, c, b); !errors.As(err, &np) || !bytes.Equal(np.Recorded, a) {
		t.Fatalf("ReplaceSpoolKey(c, b) on a store recording a: %v, want a *NotPreviousKeyError naming a", err)
	}
	if _, err := kr(other).ReplaceSpoolKey(ctx, a, a); err == nil {
		t.Fatal("ReplaceSpoolKey(a, a) was taken")
	}
	replaced, err := kr(other).ReplaceSpoolKey(ctx, a, b)
	if err != nil || !replaced {
		t.Fatalf("ReplaceSpoolKey(a, b) once no handle holds a: replaced %v, %v; want replaced", replaced, err)
	}
	for user, want := range data {
		checkEntries(t, readAll(t, other, user), 1, want[1:])
		if c, ok := other.(spool.Chainer); ok {
			checkChain(t, c, user, chainOf(want))
		}
	}
	var kre *spool.KeyReplacedError
	if _, err := bound.Append(ctx, "alice", [][]byte{[]byte("alice-a-bound")}); !errors.As(err, &kre) || !bytes.Equal(kre.Recorded, b) ||
		!bytes.Equal(kre.Bound, a) || !errors.Is(err, spool.ErrUnavailable) {
		t.Fatalf("an append bound to a after the replacement: %v, want a *KeyReplacedError (unavailable) naming b and a", err)
	}
	d = []byte("alice-b-0")
	mustAppend(t, other, "alice", d)
	data["alice"] = append(data["alice"], d)

	again := s.reopen(t, other)
	if replaced, err := kr(again).ReplaceSpoolKey(ctx, a, b); err != nil || replaced {
		t.Fatalf("ReplaceSpoolKey(a, b) again, b recorded and held: replaced %v, %v; want held, nothing replaced", replaced, err)
	}
	plain := s.reopen(t, other)
	if err := kr(plain).HoldSpoolKey(ctx, b); err != nil {
		t.Fatalf("HoldSpoolKey(b) after the replacement: %v", err)
	}
	old := s.reopen(t, other)
	var ok *spool.OtherKeyError
	if err := kr(old).HoldSpoolKey(ctx, a); !errors.As(err, &ok) || !bytes.Equal(ok.Recorded, b) {
		t.Fatalf("HoldSpoolKey(a) after the replacement: %v, want an *OtherKeyError naming b", err)
	}
	// A third key (a, replaced, is not taken back at all:
	// testSpoolKeyNotTakenBack).
	third := bytes.Repeat([]byte{0xe}, 64)
	if _, err := kr(old).ReplaceSpoolKey(ctx, b, third); !errors.As(err, &le) || !bytes.Equal(le.Live, b) {
		t.Fatalf("ReplaceSpoolKey(b, e) while handles hold b: %v, want a *LiveKeyError naming b", err)
	}
	d = []byte("alice-b-1")
	mustAppend(t, again, "alice", d)
	data["alice"] = append(data["alice"], d)
	for user, want := range data {
		checkEntries(t, readAll(t, plain, user), 1, want[1:])
		if c, ok := plain.(spool.Chainer); ok {
			checkChain(t, c, user, chainOf(want))
		}
	}
}

// testSpoolKeyHistory: a store that replaced a by b, then b by c, says
// which key each replaced (spool.KeyHistory), through another handle too;
// a key no replacement recorded has none, nor does the first key, nor a
// key recorded over another on a store with no log (that is no
// replacement); a replacement taken again (a restart with the same flags)
// records nothing more, nor one naming another previous key. A store
// recording b with no record of what b replaced (a replacement made
// before the stores kept them) records a from ReplaceSpoolKey(a, b).
func (s *suite) testSpoolKeyHistory(t *testing.T) {
	st := s.store(t)
	kh, ok := st.(spool.KeyHistory)
	if !ok {
		t.Fatalf("%T is not a spool.KeyHistory: a device given only the new spool key could not learn the old one", st)
	}
	ctx := ctxT(t)
	z, a, b, c := bytes.Repeat([]byte{0x9}, 64), bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64), bytes.Repeat([]byte{0xc}, 64)
	previous := func(h spool.KeyHistory, pub, want []byte) {
		t.Helper()
		got, err := h.PreviousSpoolKey(ctx, pub)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("PreviousSpoolKey(%x...): %x, %v; want %x", pub[:1], got, err, want)
		}
	}
	// z recorded over on a store with no log: not a replacement.
	first := s.reopen(t, st)
	if err := first.(spool.KeyKeeper).KeepSpoolKey(ctx, z); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.(spool.KeyKeeper).KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, st, "alice", []byte("a-1"))
	previous(kh, a, nil)
	replace := func(prev, pub []byte) spool.Store {
		t.Helper()
		h := s.reopen(t, st)
		if _, err := h.(spool.KeyReplacer).ReplaceSpoolKey(ctx, prev, pub); err != nil {
			t.Fatalf("ReplaceSpoolKey: %v", err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		return h
	}
	replace(a, b)
	replace(a, b)
	previous(kh, b, a)
	replace(b, c)
	other := s.reopen(t, st).(spool.KeyHistory)
	previous(other, c, b)
	previous(other, b, a)
	previous(other, a, nil)
	previous(other, z, nil)
	// Once recorded, another previous key for c changes nothing.
	replace(a, c)
	previous(other, c, b)

	// A store whose key b was recorded over a by a release that kept no
	// history: the same replacement again (a server restarted with the
	// same --previous-spool-key) records it.
	st2 := s.store(t)
	if err := st2.(spool.KeyKeeper).KeepSpoolKey(ctx, b); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, st2, "alice", []byte("b-1"))
	previous(st2.(spool.KeyHistory), b, nil)
	h := s.reopen(t, st2)
	if replaced, err := h.(spool.KeyReplacer).ReplaceSpoolKey(ctx, a, b); err != nil || replaced {
		t.Fatalf("ReplaceSpoolKey(a, b) on a store recording b: replaced %v, %v; want b held, nothing replaced", replaced, err)
	}
	previous(st2.(spool.KeyHistory), b, a)
}

// testSpoolKeyNotTakenBack: a store that replaced a by b, then b by c,
// refuses to replace c by a or by b, a key a replacement took out (the
// flags' files swapped, or a key that leaked taken back), with a
// *spool.ReplacedBeforeError naming the key that replaced it, and records
// nothing: it still records c, and states no previous key for a. Before,
// the store recorded a over c, its servers signed with a again and stated
// that a replaced c, and the devices given a moved their records to it.
func (s *suite) testSpoolKeyNotTakenBack(t *testing.T) {
	st := s.store(t)
	ctx := ctxT(t)
	a, b, c := bytes.Repeat([]byte{0xa}, 64), bytes.Repeat([]byte{0xb}, 64), bytes.Repeat([]byte{0xc}, 64)
	if err := st.(spool.KeyKeeper).KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, st, "alice", []byte("a-1"))
	replace := func(prev, pub []byte) error {
		t.Helper()
		h := s.reopen(t, st)
		defer h.Close()
		_, err := h.(spool.KeyReplacer).ReplaceSpoolKey(ctx, prev, pub)
		return err
	}
	for _, r := range [][2][]byte{{a, b}, {b, c}} {
		if err := replace(r[0], r[1]); err != nil {
			t.Fatalf("ReplaceSpoolKey: %v", err)
		}
	}
	for _, back := range []struct{ key, by []byte }{{a, b}, {b, c}} {
		var rb *spool.ReplacedBeforeError
		if err := replace(c, back.key); !errors.As(err, &rb) || !bytes.Equal(rb.Key, back.key) || !bytes.Equal(rb.ReplacedBy, back.by) {
			t.Fatalf("ReplaceSpoolKey(c, %x...) on a store that replaced it: %v; want a *spool.ReplacedBeforeError naming it and the key that replaced it", back.key[:1], err)
		}
	}
	h := s.reopen(t, st)
	defer h.Close()
	if err := h.(spool.KeyKeeper).KeepSpoolKey(ctx, c); err != nil {
		t.Fatalf("the store's key after the refusals: %v, want c still", err)
	}
	if got, err := h.(spool.KeyHistory).PreviousSpoolKey(ctx, a); err != nil || got != nil {
		t.Fatalf("PreviousSpoolKey(a) after the refusals: %x, %v; want none", got, err)
	}
}

// testSpoolKeyChain: a store that replaced a by b, then b by c, gives the
// succession back from c, newest first (spool.KeyChain), through another
// handle too, each replacement with the statement recorded for it, and
// only for the latest replacement recording its key over the one it
// names: once recorded, a statement is kept; and the chain holds at most
// spool.MaxKeyChain replacements, the latest. (A key put back is refused:
// testSpoolKeyNotTakenBack.)
func (s *suite) testSpoolKeyChain(t *testing.T) {
	st := s.store(t)
	kc, ok := st.(spool.KeyChain)
	if !ok {
		t.Fatalf("%T is not a spool.KeyChain: a device given the spool key could not learn the keys before the one it replaced", st)
	}
	ctx := ctxT(t)
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, 64) }
	sig := func(b byte) []byte { return bytes.Repeat([]byte{b}, 64) }
	a, b, c := key(0xa), key(0xb), key(0xc)
	replace := func(prev, pub []byte) {
		t.Helper()
		h := s.reopen(t, st)
		if _, err := h.(spool.KeyReplacer).ReplaceSpoolKey(ctx, prev, pub); err != nil {
			t.Fatalf("ReplaceSpoolKey: %v", err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// want: key, previous, sig (nil: none) of each link, newest first.
	chain := func(h spool.KeyChain, pub []byte, want ...[]byte) {
		t.Helper()
		got, err := h.SpoolKeyChain(ctx, pub)
		if err != nil {
			t.Fatalf("SpoolKeyChain(%x...): %v", pub[:1], err)
		}
		if len(got)*3 != len(want) {
			t.Fatalf("SpoolKeyChain(%x...): %d links, want %d", pub[:1], len(got), len(want)/3)
		}
		for i, l := range got {
			if !bytes.Equal(l.Key, want[3*i]) || !bytes.Equal(l.Previous, want[3*i+1]) || !bytes.Equal(l.Sig, want[3*i+2]) {
				t.Fatalf("SpoolKeyChain(%x...) link %d: %x... over %x... signed %x, want %x... over %x... signed %x",
					pub[:1], i, l.Key[:1], l.Previous[:1], l.Sig, want[3*i][:1], want[3*i+1][:1], want[3*i+2])
			}
		}
	}
	if err := st.(spool.KeyKeeper).KeepSpoolKey(ctx, a); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, st, "alice", []byte("a-1"))
	chain(kc, a)
	replace(a, b)
	chain(kc, b, b, a, nil)
	if err := kc.RecordSpoolKeySuccession(ctx, b, a, sig(0x1b)); err != nil {
		t.Fatal(err)
	}
	replace(b, c)
	other := s.reopen(t, st).(spool.KeyChain)
	chain(other, c, c, b, nil, b, a, sig(0x1b))
	// A statement naming another previous key records nothing; a second
	// one for the same replacement changes nothing.
	if err := kc.RecordSpoolKeySuccession(ctx, c, a, sig(0x2a)); err != nil {
		t.Fatal(err)
	}
	if err := kc.RecordSpoolKeySuccession(ctx, b, a, sig(0x2b)); err != nil {
		t.Fatal(err)
	}
	if err := kc.RecordSpoolKeySuccession(ctx, c, b, sig(0x1c)); err != nil {
		t.Fatal(err)
	}
	chain(other, c, c, b, sig(0x1c), b, a, sig(0x1b))
	chain(other, b, b, a, sig(0x1b))

	// A long succession: the latest spool.MaxKeyChain replacements.
	prev := c
	var want [][]byte
	for i := range spool.MaxKeyChain + 4 {
		k := key(byte(0x20 + i))
		replace(prev, k)
		want = append([][]byte{k, prev, nil}, want...)
		prev = k
	}
	chain(other, prev, want[:3*spool.MaxKeyChain]...)
}
