package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/syncer"
)

// oneShotPatience is how long cspool sync --once and cspool recover wait,
// in all, on a spool that refuses for now and says when to come back
// (syncer.SyncOnceWaiting).
const oneShotPatience = 2 * time.Minute

func runSync(e *env, args []string) error {
	fs := newFlagSet(e, "sync", "", `
Bring the local mail database up to date with the spool, without serving
IMAP: read the user's log from the spool server from the database's
position to the spool's head, verify and apply every entry, show progress,
and exit. With --once=false it goes on following the log until interrupted.

Progress (entries and bytes read, rate, entries remaining) is one updating
line on a terminal and a line every few seconds otherwise.

Only one process syncs a database: the daemon (cspool imap-server) holds a
lock on DB.lock while it runs, and this command refuses to start while it
does; the daemon already syncs the database.

An integrity alarm (the spool's log failed a tamper-evidence check) stops
the sync, here and in the daemon, until a person clears it. --clear-alarm
prints the recorded alarms, removes them, then syncs. Clear only after
finding out what happened (ask the spool's operator): clearing repairs
nothing, it only lets the checks run again from the database's position,
and a log that still fails them raises the alarm again. Stop the daemon
first; this command refuses to run beside it.`, `
cspool sync --once --user-key=user.sec --spool-key=spool.pub --user-public-key=user.pub
cspool sync --user alice --db ~/.cspool/alice.db --spool-server https://spool.example.org
cspool sync --clear-alarm --user alice --db ~/.cspool/alice.db --spool-server https://spool.example.org
cspool sync --config ~/.config/cspool/alice.conf   # the daemon's config file (docs/CONFIG.md)`)
	devFlags := addDeviceFlags(fs, e, "the user `name` (the log's name on the spool)")
	dbPath, spoolURL := devFlags.db, devFlags.spoolURL
	once := fs.Bool("once", true, "sync up to the spool's head and exit (false: keep following the log)")
	interval := fs.Duration("progress", 0, "progress `interval` (0: 250ms on a terminal, 2s otherwise)")
	debug := fs.Bool("debug", false, "log debug detail")
	clearAlarm := fs.Bool("clear-alarm", false, "remove the recorded integrity alarms, then sync: a person's decision after asking the spool's operator; it repairs nothing, it only lets the checks run again")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	log := newLogger(e, *debug)
	dev, err := devFlags.open(e.stderr, log, "it is being synced already; see its state with: cspool status --db "+*dbPath, true)
	if errors.Is(err, errUserKeyAsSpoolKey) {
		// A wrong spool.pub, like the refusals below.
		return &exitError{err, exNoPerm}
	}
	if err != nil {
		return err
	}
	defer dev.close()
	if *clearAlarm {
		if err := clearAlarms(context.Background(), e.stdout, dev.store); err != nil {
			return err
		}
	}
	var src counter
	count := func(s syncer.Source) syncer.Source { src = newCountingSource(s); return src }
	if err := dev.startSync(syncOptions{wrap: count}); err != nil {
		var other *mailstore.OtherSpoolKeyError
		if errors.As(err, &other) {
			// The database refuses --spool-key: a wrong spool.pub, as
			// when the deliveries are signed by another key (below).
			return &exitError{err, exNoPerm}
		}
		return err
	}
	sy := dev.sync

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := newProgress(e.stdout, isTerminal(e.stdout), sy, src)
	every := *interval
	if every <= 0 {
		every = 2 * time.Second
		if p.tty {
			every = 250 * time.Millisecond
		}
	}
	done := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.show()
			}
		}
	}()
	if *once {
		_, err = sy.SyncOnceWaiting(ctx, oneShotPatience)
	} else {
		// After an integrity alarm Run waits for the end (the daemon goes
		// on serving what it has); this command has nothing left to do.
		runCtx, cancelRun := context.WithCancel(ctx)
		go func() {
			select {
			case <-sy.Alarmed():
				cancelRun()
			case <-runCtx.Done():
			}
		}()
		err = sy.Run(runCtx)
		cancelRun()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = nil
		}
	}
	close(done)
	<-ticked
	// Run ends on an alarm with the cancellation above: name the alarm.
	if a := sy.Status().Alarm; a != "" && !errors.Is(err, syncer.ErrIntegrity) {
		err = fmt.Errorf("%w: %s", syncer.ErrIntegrity, a)
	}
	p.finish(err != nil)
	var untrusted *syncer.UntrustedSpoolError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &untrusted):
		return &exitError{withHint(fmt.Errorf("syncing with %s: %w", *spoolURL, err), untrusted.Hint()), exNoPerm}
	case api.Hint(err) != "":
		return withHint(fmt.Errorf("syncing with %s: %w", *spoolURL, err), api.Hint(err))
	case errors.Is(err, syscall.ECONNREFUSED) || api.IsTemporary(err):
		return withHint(fmt.Errorf("syncing with %s: %w", *spoolURL, err), "check that the spool server is running and --spool-server is right")
	case errors.Is(err, syncer.ErrGap) || errors.Is(err, syncer.ErrIntegrity):
		hint := "the spool's log failed an integrity check (missing, reordered or forged entries): report it to the spool's operator, keep this database, and do not trust this spool until it is explained"
		if errors.Is(err, syncer.ErrIntegrity) {
			hint += "; once it is, cspool sync --clear-alarm lets the checks run again, or, if the spool was restored from a backup, cspool recover puts back what this device holds (docs/OPERATING.md)"
		}
		if errors.Is(err, syncer.ErrIntegrity) && strings.Contains(err.Error(), "rolled back") {
			// What another server's log of the user looks like.
			// Or another name's log on the right server: a user renamed
			// in the users file, the key kept, has a new, empty log.
			hint = "first check that --spool-server (" + *spoolURL + ") is the user's own spool server, and --user (" + dev.user + ") the name this database has always synced: " +
				"another server's log, or another user name's (a user renamed in the users file starts an empty log under the new name), raises this alarm (an empty one says its head is 0); " +
				"if either was wrong, sync with the right one and --clear-alarm, and never cspool recover onto another server or name. Otherwise: " + hint
		}
		return withHint(fmt.Errorf("syncing with %s: %w", *spoolURL, err), hint)
	}
	return fmt.Errorf("syncing with %s: %w", *spoolURL, err)
}

// clearAlarms prints the recorded integrity alarms, one a line, and removes
// them, so that the sync's checks run again.
func clearAlarms(ctx context.Context, w io.Writer, store *mailstore.Store) error {
	alarms, err := store.Alarms(ctx)
	if err != nil {
		return err
	}
	if len(alarms) == 0 {
		fmt.Fprintln(w, "no integrity alarm recorded")
	}
	for _, a := range alarms {
		fmt.Fprintf(w, "clearing integrity alarm at position %d (recorded %s): %s\n",
			a.Pos, a.At.Local().Format("2006-01-02 15:04:05"), oneLine(a.Detail))
	}
	return store.ClearAlarms(ctx)
}

// oneLine joins a text's lines and runs of blanks with single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// countingSource passes reads through and counts the entries and bytes.
type countingSource struct {
	syncer.Source
	entries, bytes atomic.Int64
}

func (c *countingSource) ReadLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) (spool.LogRead, error) {
	lr, err := c.Source.ReadLog(ctx, after, maxCount, maxBytes, wait)
	n := 0
	for _, e := range lr.Entries {
		n += len(e.Data)
	}
	c.entries.Add(int64(len(lr.Entries)))
	c.bytes.Add(int64(n))
	return lr, err
}

// AppendAt passes the conditional append through (syncer.HeadSource), so
// that the changes queued on the device are sent.
func (c *countingSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	hs, ok := c.Source.(syncer.HeadSource)
	if !ok {
		return 0, errors.New("the spool client cannot append on a condition")
	}
	return hs.AppendAt(ctx, user, head, batch)
}

// Health passes the probe through (syncer.Prober).
func (c *countingSource) Health(ctx context.Context) error {
	p, ok := c.Source.(syncer.Prober)
	if !ok {
		return errors.New("the spool client cannot probe the spool")
	}
	return p.Health(ctx)
}

// Budget passes the spool's budget through (syncer.Budgeted), so that the
// loop paces its requests by it.
func (c *countingSource) Budget() (int, time.Duration, int, bool) {
	if b, ok := c.Source.(syncer.Budgeted); ok {
		return b.Budget()
	}
	return 0, 0, 0, false
}

// Quota passes the spool's statement of the user's quota through
// (syncer.QuotaStated), so that a device near it writes a checkpoint once
// mail is deleted.
func (c *countingSource) Quota() (int64, int64, bool) {
	if q, ok := c.Source.(syncer.QuotaStated); ok {
		return q.Quota()
	}
	return 0, 0, false
}

// SpoolKeySuccession passes the spool's statement of the key its spool
// key replaced through (syncer.KeySuccessor), so that a device given only
// the new key trusts the old one's deliveries before the cutover.
func (c *countingSource) SpoolKeySuccession(ctx context.Context) (keys.Succession, bool, error) {
	ks, ok := c.Source.(syncer.KeySuccessor)
	if !ok {
		// Unsupported, not failed: a failed ask holds the entries of keys
		// not trusted until one is answered (syncer's trustVouched).
		return keys.Succession{}, false, fmt.Errorf("the spool client cannot ask for the spool keys: %w", errors.ErrUnsupported)
	}
	return ks.SpoolKeySuccession(ctx)
}

// SpoolKeyChain passes the spool's whole succession through
// (syncer.KeyChainer), so that a device given only the spool key trusts
// each key before it up to that key's cutover.
func (c *countingSource) SpoolKeyChain(ctx context.Context) ([]keys.Succession, error) {
	kc, ok := c.Source.(syncer.KeyChainer)
	if !ok {
		// Unsupported, not failed, as above.
		return nil, fmt.Errorf("the spool client cannot ask for the spool keys: %w", errors.ErrUnsupported)
	}
	return kc.SpoolKeyChain(ctx)
}

// countingCheckpointer is a countingSource over a source with checkpoints:
// the syncer finds the capability with a type assertion, so it must stay
// visible through the wrapper.
type countingCheckpointer struct {
	*countingSource
	cp syncer.Checkpointer
}

func (c countingCheckpointer) Checkpoint(ctx context.Context) (spool.Checkpoint, error) {
	cp, err := c.cp.Checkpoint(ctx)
	c.bytes.Add(int64(len(cp.Data)))
	return cp, err
}

// CheckpointTo forwards the capability when the source has it, and reads
// the checkpoint into memory for w when it does not.
func (c countingCheckpointer) CheckpointTo(ctx context.Context, w io.Writer) (uint64, int64, error) {
	if cw, ok := c.cp.(syncer.CheckpointWriterTo); ok {
		pos, n, err := cw.CheckpointTo(ctx, w)
		c.bytes.Add(n)
		return pos, n, err
	}
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		return 0, 0, err
	}
	n, err := w.Write(cp.Data)
	return cp.Pos, int64(n), err
}

func (c countingCheckpointer) PutCheckpoint(ctx context.Context, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	return c.cp.PutCheckpoint(ctx, cp, keep)
}

func (c countingCheckpointer) PutCheckpointFrom(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error) {
	return c.cp.PutCheckpointFrom(ctx, pos, data, keep)
}

// A Checkpointer it must stay: the syncer finds the capability by its
// methods.
var (
	_ syncer.Checkpointer       = countingCheckpointer{}
	_ syncer.CheckpointWriterTo = countingCheckpointer{}
	_ syncer.KeySuccessor       = countingCheckpointer{}
	_ syncer.KeySuccessor       = (*countingSource)(nil)
)

// counter is what progress reads of the source.
type counter interface {
	counts() (entries, bytes int64)
	syncer.Source
}

func (c *countingSource) counts() (int64, int64) { return c.entries.Load(), c.bytes.Load() }

func newCountingSource(s syncer.Source) counter {
	c := &countingSource{Source: s}
	if cp, ok := s.(syncer.Checkpointer); ok {
		return countingCheckpointer{c, cp}
	}
	return c
}

// progress prints the sync's progress: one line rewritten with \r on a
// terminal, plain lines otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	sy    interface{ Status() syncer.Status }
	src   counter
	start time.Time
	last  string
	width int
}

func newProgress(w io.Writer, tty bool, sy interface{ Status() syncer.Status }, src counter) *progress {
	return &progress{w: w, tty: tty, sy: sy, src: src, start: time.Now()}
}

func (p *progress) line() string {
	st := p.sy.Status()
	entries, bytes := p.src.counts()
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(entries) / secs
	}
	var where string
	switch {
	case spoolBehind(st):
		where = fmt.Sprintf("position %d, %s", st.Position, headText(st))
	case known(st):
		h := max(st.Head, st.Position)
		where = fmt.Sprintf("position %d of %d, %d remaining", st.Position, h, h-st.Position)
	default:
		where = fmt.Sprintf("position %d of ?, ? remaining", st.Position)
	}
	s := fmt.Sprintf("%s; read %d entries (%s) in %.1f s, %.0f entries/s, %s/s",
		where, entries, sizeText(bytes), secs, rate, sizeText(int64(float64(bytes)/max(secs, 0.001))))
	if st.Rejected > 0 {
		s += fmt.Sprintf(", %d rejected", st.Rejected)
	}
	if st.LastError != "" && !st.Connected {
		s += "; retrying: " + st.LastError
	}
	return s
}

func (p *progress) show() {
	s := p.line()
	if p.tty {
		pad := ""
		if n := p.width - len(s); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s", s, pad)
		p.width = len(s)
		return
	}
	// Plain output: a line only when the position or the counts changed.
	if key, _, _ := strings.Cut(s, " in "); key != p.last {
		fmt.Fprintln(p.w, s)
		p.last = key
	}
}

// known reports whether the spool's head is known: the sync has heard from
// the spool at least once.
func known(st syncer.Status) bool { return !st.LastContact.IsZero() || st.Head > 0 }

// spoolBehind reports whether the spool's last answer gave a head below the
// position this device applied: its log was rolled back, and the sync
// stops on it (syncer.Status.Head, never below the position, would show
// the position as the head).
func spoolBehind(st syncer.Status) bool {
	return !st.LastContact.IsZero() && st.SpoolHead < st.Position
}

// headText is the head for the summary line: the spool's own when it is
// behind the position, the furthest seen otherwise, "?" before any.
func headText(st syncer.Status) string {
	switch {
	case spoolBehind(st):
		return fmt.Sprintf("the spool's head %d is behind it", st.SpoolHead)
	case known(st):
		return "head " + strconv.FormatUint(max(st.Head, st.Position), 10)
	}
	return "head ?"
}

// finish prints the summary line; failed says the sync stopped on an error.
func (p *progress) finish(failed bool) {
	st := p.sy.Status()
	entries, bytes := p.src.counts()
	secs := time.Since(p.start).Seconds()
	verb := "synced to"
	if failed {
		verb = "stopped at"
	}
	s := fmt.Sprintf("%s position %d (%s): read %d entries (%s) in %.1f s, %.0f entries/s, %d applied, %d rejected",
		verb, st.Position, headText(st), entries, sizeText(bytes), secs, float64(entries)/max(secs, 0.001), st.Applied, st.Rejected)
	if p.tty {
		pad := ""
		if n := p.width - len(s); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s\n", s, pad)
		return
	}
	fmt.Fprintln(p.w, s)
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// isTerminal reports whether w is a character device (a terminal, in
// practice), for the \r progress line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
