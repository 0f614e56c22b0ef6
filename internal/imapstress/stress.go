// Package imapstress drives an IMAP server with concurrent clients on one
// mailbox (SELECT, FETCH, STORE of flags and keywords, EXPUNGE, APPEND,
// NOOP, LOGOUT at full speed) and checks every response each client gets,
// as a careful client keeps its view of the mailbox:
//
//   - no BAD and no NO, except NO [EXPUNGEISSUED] (counted apart);
//   - no stale sequence numbers: a FETCH for a number the view does not
//     have, or naming another UID than the view has there, an EXPUNGE out
//     of range, an EXISTS that shrinks the view, UIDs out of order;
//   - no EXPUNGE during a non-UID FETCH, STORE or SEARCH (RFC 9051 section
//     7.5.1, RFC 3501 section 7.4.1);
//   - no keyword in a FETCH before a FLAGS listing it (RFC 9051 section
//     7.3.5);
//   - at the end, every client's view, kept only from what the server sent
//     it, converges (after NOOPs) to what a fresh session fetches.
//
// It counts completed commands by name, for the rates in
// docs/BENCHMARKS.md. It speaks IMAP4rev1 over plain TCP and is meant for
// servers on loopback. The same run works against cspool and Dovecot.
package imapstress

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config configures a Run.
type Config struct {
	// Addrs are the servers, all serving the same user's mail (devices of
	// one account); client i uses Addrs[i%len(Addrs)].
	Addrs          []string
	User, Password string
	// Mailbox is the mailbox every client selects; "" is INBOX.
	Mailbox string
	// Clients is the number of concurrent clients; 0 is 10.
	Clients int
	// Duration bounds the run (the final convergence check comes after);
	// MaxOps bounds each client's operations. At least one must be set.
	Duration time.Duration
	MaxOps   int
	// Keywords are the keywords STOREs set and clear; nil is 6 of them.
	Keywords []string
	// MinMessages and MaxMessages keep the mailbox size in a band: no
	// EXPUNGE below the first, no APPEND above the second (0: 5 and 60).
	MinMessages, MaxMessages int
	// Mix weighs the operations (names as in DefaultMix); nil is
	// DefaultMix.
	Mix map[string]int
	// Seed makes the clients' choices repeatable.
	Seed uint64
	// Settle, if set, is called after the last operation and before the
	// views are compared: a server with several devices waits there until
	// they have all applied every change.
	Settle func()
}

// Report is what a Run saw.
type Report struct {
	Elapsed time.Duration
	// Ops counts completed commands by name ("FETCH", "UID STORE", ...);
	// Time sums their durations, from sending to the tagged reply.
	Ops  map[string]int
	Time map[string]time.Duration
	// Violations lists the first 100 protocol errors seen; Count has them
	// all.
	Violations []string
	Count      int
	// ExpungeIssued counts NO [EXPUNGEISSUED] replies.
	ExpungeIssued int
	// Final is the mailbox a fresh session saw at the end: UIDs and their
	// flags (without \Recent), sorted.
	Final []Message
}

// Message is one message of a view.
type Message struct {
	UID   uint32
	Flags []string
}

func (m Message) String() string { return fmt.Sprintf("%d %v", m.UID, m.Flags) }

// Rate returns the operations per second of command name.
func (r *Report) Rate(name string) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops[name]) / r.Elapsed.Seconds()
}

// recorder gathers counts and violations from every client.
type recorder struct {
	mu  sync.Mutex
	rep *Report
}

func (r *recorder) done(name string, d time.Duration) {
	r.mu.Lock()
	r.rep.Ops[name]++
	r.rep.Time[name] += d
	r.mu.Unlock()
}

func (r *recorder) expungeIssued() {
	r.mu.Lock()
	r.rep.ExpungeIssued++
	r.mu.Unlock()
}

func (r *recorder) violation(id int, cmd, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Count++
	if len(r.rep.Violations) < 100 {
		r.rep.Violations = append(r.rep.Violations, fmt.Sprintf("client %d, %s: %s", id, cmd, fmt.Sprintf(format, args...)))
	}
}

// convergeTimeout bounds the wait for the views to converge at the end.
const convergeTimeout = 20 * time.Second

// Run drives the server until Duration or MaxOps, then checks that the
// views converge. An error means the run could not be made (a client
// could not connect or log in, a connection broke); what the server got
// wrong is in the Report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Addrs) == 0 || (cfg.Duration <= 0 && cfg.MaxOps <= 0) {
		return nil, fmt.Errorf("imapstress: set Addrs, and Duration or MaxOps")
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = "INBOX"
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 10
	}
	if cfg.Keywords == nil {
		cfg.Keywords = []string{"$k0", "$k1", "$k2", "$Label3", "Work", "Later"}
	}
	if cfg.MinMessages <= 0 {
		cfg.MinMessages = 5
	}
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = 60
	}
	if cfg.Mix == nil {
		cfg.Mix = DefaultMix
	}
	rep := &Report{Ops: map[string]int{}, Time: map[string]time.Duration{}}
	rec := &recorder{rep: rep}
	clients := make([]*client, cfg.Clients)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.close()
			}
		}
	}()
	for i := range clients {
		cl, err := dial(&cfg, i, rec)
		if err != nil {
			return nil, err
		}
		clients[i] = cl
		if err := cl.login(); err != nil {
			return nil, err
		}
	}
	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	start := time.Now()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
			for n := 0; cfg.MaxOps <= 0 || n < cfg.MaxOps; n++ {
				if runCtx.Err() != nil {
					return
				}
				cl, err := clients[i].step(rng)
				clients[i] = cl
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	for _, err := range errs {
		if err != nil {
			return rep, err
		}
	}
	if cfg.Settle != nil {
		cfg.Settle()
	}
	return rep, converge(ctx, &cfg, clients, rec)
}

// converge waits until every client's view, after NOOPs, is what a fresh
// session fetches; the fresh view goes into the report. The fresh view is
// fetched again before each retry: the mailbox may still change after this
// run's clients stopped (another device of the user, a delivery), and a
// client's view must then catch up with the mailbox as it is now, not as
// it was.
func converge(ctx context.Context, cfg *Config, clients []*client, rec *recorder) error {
	fresh, err := dial(cfg, -1, rec)
	if err != nil {
		return err
	}
	defer fresh.close()
	if err := fresh.login(); err != nil {
		return err
	}
	look := func() ([]Message, error) {
		if _, err := fresh.do("UID FETCH", "1:* (UID FLAGS)"); err != nil {
			return nil, err
		}
		return fresh.view(), nil
	}
	truth, err := look()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(convergeTimeout)
	for _, cl := range clients {
		for {
			if _, err := cl.do("NOOP", ""); err != nil {
				return err
			}
			diff := cl.differs(truth)
			if diff == "" {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				rec.violation(cl.id, "NOOP", "the view did not converge: %s", diff)
				break
			}
			time.Sleep(50 * time.Millisecond)
			if truth, err = look(); err != nil {
				return err
			}
		}
	}
	rec.rep.Final = truth
	return nil
}

// view returns the client's view as messages, sorted by UID.
func (cl *client) view() []Message {
	out := make([]Message, len(cl.uids))
	for i := range cl.uids {
		out[i] = Message{UID: cl.uids[i], Flags: cl.flags[i]}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// differs says how the view differs from truth; unknown UIDs and flags
// (announced, never fetched) match anything.
func (cl *client) differs(truth []Message) string {
	if len(cl.uids) != len(truth) {
		return fmt.Sprintf("%d messages, a fresh session sees %d", len(cl.uids), len(truth))
	}
	for i, m := range truth {
		if cl.uids[i] != 0 && cl.uids[i] != m.UID {
			return fmt.Sprintf("message %d is UID %d, a fresh session sees UID %d", i+1, cl.uids[i], m.UID)
		}
		if cl.flags[i] != nil && !slices.EqualFunc(cl.flags[i], m.Flags, strings.EqualFold) {
			return fmt.Sprintf("UID %d has flags %v, a fresh session sees %v", m.UID, cl.flags[i], m.Flags)
		}
	}
	return ""
}

// login logs in and selects the mailbox.
func (cl *client) login() error {
	st, err := cl.do("LOGIN", quote(cl.cfg.User)+" "+quote(cl.cfg.Password))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(st, "OK") {
		return fmt.Errorf("client %d: LOGIN: %s", cl.id, st)
	}
	return cl.selectBox()
}

func (cl *client) selectBox() error {
	cl.uids, cl.flags, cl.keywords, cl.selected = nil, nil, nil, true
	st, err := cl.do("SELECT", quote(cl.cfg.Mailbox))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(st, "OK") {
		return fmt.Errorf("client %d: SELECT: %s", cl.id, st)
	}
	return nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// DefaultMix is the operations of a run and their weights.
var DefaultMix = map[string]int{
	"FETCH":     15, // FETCH 1:* (UID FLAGS)
	"FETCH n:m": 15, // a few messages, with RFC822.SIZE
	"STORE":     15, // +FLAGS or -FLAGS, a keyword and maybe \Seen
	"UID STORE": 15, // +FLAGS or -FLAGS, a keyword and \Flagged
	"EXPUNGE":   10, // STORE +FLAGS.SILENT (\Deleted) on one message, EXPUNGE
	"APPEND":    10, // with a keyword
	"SELECT":    8,
	"NOOP":      8,
	"LOGOUT":    4, // and a new connection: LOGIN, SELECT
}

// pick chooses an operation by weight.
func pick(rng *rand.Rand, mix map[string]int) string {
	names := make([]string, 0, len(mix))
	total := 0
	for name, w := range mix {
		names = append(names, name)
		total += w
	}
	sort.Strings(names)
	x := rng.IntN(total)
	for _, name := range names {
		if x -= mix[name]; x < 0 {
			return name
		}
	}
	return names[len(names)-1]
}

// step makes one random operation; LOGOUT returns the new connection.
func (cl *client) step(rng *rand.Rand) (*client, error) {
	n := len(cl.uids)
	kw := cl.cfg.Keywords[rng.IntN(len(cl.cfg.Keywords))]
	op := pick(rng, cl.cfg.Mix)
	if n == 0 && op != "APPEND" && op != "SELECT" && op != "LOGOUT" {
		op = "NOOP"
	}
	var err error
	switch op {
	case "FETCH":
		_, err = cl.do("FETCH", "1:* (UID FLAGS)")
	case "FETCH n:m":
		lo := 1 + rng.IntN(n)
		_, err = cl.do("FETCH", fmt.Sprintf("%d:%d (UID FLAGS RFC822.SIZE)", lo, min(n, lo+rng.IntN(8))))
	case "STORE":
		flags := kw
		if rng.IntN(3) == 0 {
			flags = `\Seen ` + kw
		}
		_, err = cl.do("STORE", fmt.Sprintf("%d %s (%s)", 1+rng.IntN(n), []string{"+FLAGS", "-FLAGS"}[rng.IntN(2)], flags))
	case "UID STORE":
		uid := cl.uids[rng.IntN(n)]
		if uid == 0 {
			_, err = cl.do("UID FETCH", "1:* (UID FLAGS)")
			break
		}
		_, err = cl.do("UID STORE", fmt.Sprintf("%d %s (%s \\Flagged)", uid, []string{"+FLAGS", "-FLAGS"}[rng.IntN(2)], kw))
	case "EXPUNGE":
		if n <= cl.cfg.MinMessages {
			_, err = cl.do("NOOP", "")
			break
		}
		if _, err = cl.do("STORE", fmt.Sprintf("%d +FLAGS.SILENT (\\Deleted)", 1+rng.IntN(n))); err == nil {
			_, err = cl.do("EXPUNGE", "")
		}
	case "APPEND":
		if n >= cl.cfg.MaxMessages {
			_, err = cl.do("NOOP", "")
			break
		}
		body := fmt.Sprintf("From: stress@example.org\r\nSubject: stress %d.%d\r\n\r\nbody %d\r\n", cl.id, cl.next, rng.Uint32())
		_, err = cl.doLiteral("APPEND", fmt.Sprintf("%s (%s) {%d}", quote(cl.cfg.Mailbox), kw, len(body)), []byte(body))
	case "SELECT":
		err = cl.selectBox()
	case "LOGOUT":
		return cl.logout()
	default:
		_, err = cl.do("NOOP", "")
	}
	return cl, err
}

// logout ends the session and starts a new one in its place.
func (cl *client) logout() (*client, error) {
	if _, err := cl.do("LOGOUT", ""); err != nil {
		return cl, err
	}
	cl.close()
	nc, err := dial(cl.cfg, cl.id, cl.rep)
	if err != nil {
		return cl, err
	}
	nc.next = cl.next
	return nc, nc.login()
}
