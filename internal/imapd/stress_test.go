package imapd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"cspool/internal/imapstress"
	"cspool/internal/mailstore"
)

// stressBounds are a stress run's bounds: short by default, as long as
// CSPOOL_STRESS says (a duration, e.g. 5m) when set.
func stressBounds(t *testing.T) (time.Duration, int) {
	if v := os.Getenv("CSPOOL_STRESS"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CSPOOL_STRESS=%q: %v", v, err)
		}
		return d, 0
	}
	return 10 * time.Second, 40
}

// storeView is the mailbox as the device's store has it, for comparing
// with what the clients saw.
func storeView(t *testing.T, st *mailstore.Store, mailbox string) []imapstress.Message {
	t.Helper()
	ctx := context.Background()
	mb, err := st.MailboxByName(ctx, mailbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []imapstress.Message
	err = st.Scan(ctx, mb.ID, 0, func(m *mailstore.Message) error {
		fl := slices.Clone(m.Flags)
		sort.Slice(fl, func(i, j int) bool { return strings.ToLower(fl[i]) < strings.ToLower(fl[j]) })
		if fl == nil {
			fl = []string{}
		}
		out = append(out, imapstress.Message{UID: uint32(m.UID), Flags: fl})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runStress runs imapstress against two devices of one account, their
// INBOX holding n messages, and fails the test on any protocol error, a
// connection that broke, a panic in the log, or a final view that is not
// the stores'.
func runStress(t *testing.T, n int, cfg imapstress.Config) *imapstress.Report {
	t.Helper()
	r := newRig(t)
	a, la := stressDevice(r, "a")
	b, lb := stressDevice(r, "b")
	for i := 0; i < n; i++ {
		r.Deliver([]byte(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i, i)))
	}
	devs, logs := []*device{a, b}, []*logBuffer{la, lb}
	for _, d := range devs {
		d.synced(r.Head())
	}
	cfg.Duration, cfg.MaxOps = stressBounds(t)
	for _, d := range devs {
		cfg.Addrs = append(cfg.Addrs, d.addr)
	}
	cfg.User, cfg.Password = "alice", testPassword
	cfg.Settle = func() {
		for _, d := range devs {
			d.synced(r.Head())
		}
	}
	rep, err := imapstress.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("stress run: %v", err)
	}
	if rep.Count > 0 {
		t.Errorf("%d protocol errors, the first ones:\n%s", rep.Count, strings.Join(rep.Violations, "\n"))
	}
	for i, lb := range logs {
		if s := lb.String(); strings.Contains(s, "panic") {
			t.Errorf("device %d logged a panic:\n%s", i, s)
		}
	}
	for i, d := range devs {
		if got, want := fmt.Sprint(rep.Final), fmt.Sprint(storeView(t, d.store, "INBOX")); got != want {
			t.Errorf("device %d: the clients' final view\n%s\nis not the store's\n%s", i, got, want)
		}
	}
	var ops []string
	total := 0
	for name, n := range rep.Ops {
		ops = append(ops, fmt.Sprintf("%s %d (%.0f/s)", name, n, rep.Rate(name)))
		total += n
	}
	sort.Strings(ops)
	t.Logf("%d commands in %v, %d NO [EXPUNGEISSUED]: %s", total, rep.Elapsed.Round(time.Millisecond), rep.ExpungeIssued, strings.Join(ops, ", "))
	return rep
}

// stressDevice is a device whose log the stress tests read.
func stressDevice(r *rig, name string) (*device, *logBuffer) {
	lb := &logBuffer{}
	d := r.deviceWith(name, Config{Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	return d, lb
}

// TestConcurrentClients: 10 clients on one mailbox doing SELECT, FETCH,
// STORE of flags and keywords, EXPUNGE, APPEND, NOOP and LOGOUT at full
// speed, on two devices of one account: no protocol error (BAD, NO, stale
// sequence numbers, EXPUNGE during FETCH/STORE/SEARCH, keywords before
// FLAGS), no panic, and every view converges to the stores'. Bounded in
// operations and time; CSPOOL_STRESS=5m runs it for five minutes.
func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	rep := runStress(t, 20, imapstress.Config{Clients: 10, Seed: 1})
	// Under a heavy load the time bound may end the run before every kind
	// of command came up; changes must have.
	if rep.Ops["STORE"]+rep.Ops["UID STORE"]+rep.Ops["APPEND"]+rep.Ops["EXPUNGE"] == 0 {
		t.Errorf("no change completed: %v", rep.Ops)
	}
}

// TestConcurrentKeywords: 10 clients storing and clearing keywords on one
// mailbox (and fetching flags), on two devices: no client ever sees a
// keyword that FLAGS did not announce to it.
func TestConcurrentKeywords(t *testing.T) {
	t.Parallel()
	runStress(t, 8, imapstress.Config{Clients: 10, Seed: 2,
		Keywords: []string{"$k0", "$k1", "$k2", "$k3", "$k4", "$k5", "$k6", "$k7", "$k8", "$k9"},
		Mix:      map[string]int{"FETCH": 25, "FETCH n:m": 15, "STORE": 30, "UID STORE": 20, "NOOP": 10}})
}
