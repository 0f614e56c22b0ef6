package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"cspool/internal/mailstore"
)

// indexBatch is how many bodies one indexing transaction of cspool
// reindex takes. The daemon's take up to indexBatchLive, and stop taking
// more once indexBudget has passed, so that the write lock they hold
// never keeps an apply or an IMAP change waiting long (a body costs about
// 0.5 ms of CPU at 2 KB, 10 ms and more at 10 KB on a loaded 2-core
// machine) while as many bodies as fit share a commit: each commit writes
// and merges segments of the FTS5 indexes and counts the bodies left
// (docs/MAILSTORE.md, "Search index").
const (
	indexBatch     = 1000
	indexBatchLive = 1000
	indexBudget    = 150 * time.Millisecond
	// indexMergeAfter is how many bodies a build must have indexed for
	// the index to be merged into one segment when it is done, and
	// indexMergePages how many leaf pages of merging a transaction does
	// (about 70 ms at 100,000 messages of 2 KB; docs/MAILSTORE.md, "Search
	// index").
	indexMergeAfter = 10000
	indexMergePages = 500
	// relocateAfter is how many bodies stored since the store's last
	// Relocate (and at least what share of all, 1/relocateShare) make the
	// daemon relocate the forms again once applying and indexing are
	// quiet: a FETCH that finds them in no cache reads the rows placed
	// in the order of the file and the others one by one
	// (docs/MAILSTORE.md, "Placement").
	relocateAfter = 2000
	relocateShare = 8
	// formsBatch is how many bodies whose stored forms an earlier cspool
	// made one step of the daemon's upgrade parses again (outside the
	// write lock) and stores (in one short transaction; docs/MAILSTORE.md,
	// "Forms made by an earlier cspool").
	formsBatch = 500
	// textsBatch is how many bodies whose search texts an earlier cspool
	// made one step of the daemon's upgrade lists for the indexer again
	// (in one short transaction), which the indexer then indexes as it
	// indexes mail just applied, a batch a transaction within
	// indexBudget; until it has, searches read them (docs/MAILSTORE.md,
	// "Search texts made by an earlier cspool").
	textsBatch = 500
)

func runReindex(e *env, args []string) error {
	fs := newFlagSet(e, "reindex", "", `
Rebuild the search index of a device's database: drop it, then index every
message again (decoded text parts and headers, docs/IMAP.md "Search").

The daemon indexes mail in the background as it arrives, and what a
database made by an earlier cspool lacks; searches stay exact meanwhile
(they read the messages not indexed yet). Use this command when
the index is damaged or was lost. Stop the daemon first: this command
refuses to run beside it.`, `
cspool reindex --db ~/.local/state/cspool/alice/mail.db --user-key ~/.config/cspool/user.sec`)
	db := fs.String("db", "test.db", "local mail database `file`")
	userKey := fs.String("user-key", "user.sec", "the user's secret key `file` (the database is encrypted with it)")
	pass := addPassphraseFlag(fs, e)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if _, err := os.Stat(*db); err != nil {
		return withHint(fmt.Errorf("opening %s: %w", *db, unwrapPath(err)), "pass the device's database with --db (the --db of cspool imap-server)")
	}
	k, err := deviceUserKey.loadSecret(pass, *userKey, "")
	if err != nil {
		return err
	}
	store, closeStore, err := openDeviceStore(e.stderr, *db, "stop the daemon (cspool imap-server) for this database first, then run cspool reindex again", k, nil)
	if err != nil {
		return err
	}
	defer closeStore()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := store.Reindex(ctx); err != nil {
		return err
	}
	n, err := buildIndex(ctx, store, e.stdout)
	if err != nil {
		return withHint(err, "run cspool reindex again; until then searches read every message")
	}
	for {
		merged, err := store.MergeIndex(ctx, indexMergePages)
		if err != nil {
			return withHint(err, "the index is complete; searches use it as it is")
		}
		if !merged {
			break
		}
	}
	st, err := store.IndexSize(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "indexed %d messages: the index holds %s for %s of mail (%.0f%%)\n",
		n, sizeText(st.IndexBytes), sizeText(st.BodyBytes), 100*float64(st.IndexBytes)/float64(max(st.BodyBytes, 1)))
	return nil
}

// buildIndex indexes every body the index lacks, a batch per transaction,
// with a progress line on w for each tenth of the work.
func buildIndex(ctx context.Context, store *mailstore.Store, w io.Writer) (int, error) {
	_, left, err := store.IndexPending(ctx, 0)
	if err != nil {
		return 0, err
	}
	total, n, shown := left, 0, 0
	for left > 0 {
		done, l, err := store.IndexPending(ctx, indexBatch)
		if err != nil {
			return n, err
		}
		n, left = n+done, l
		if done == 0 {
			break
		}
		if w != nil && n*10/total > shown {
			shown = n * 10 / total
			fmt.Fprintf(w, "indexed %d of %d messages\n", n, total)
		}
	}
	return n, nil
}

// indexer keeps the search index up with the store while a daemon runs:
// it indexes what the index lacks (the mail just applied, a database from
// before the index, bodies an undo put back), a batch per transaction,
// and gives way to the sync: while batches are being applied it waits
// until applying has been quiet for a moment, so a first sync is not
// slowed by the indexing it makes necessary.
type indexer struct {
	store *mailstore.Store
	log   *slog.Logger
	wake  chan struct{}
	last  atomic.Int64 // unix ns of the last apply
	// busy, when set, reports work that the indexer must not compete
	// with although nothing was applied: a restore from a checkpoint,
	// whose bodies it would otherwise index while they are stored.
	busy func() bool
	// relocateAfter, when not zero, replaces the constant (tests).
	relocateAfter int64
}

// indexQuiet is how long applying must have been quiet before a batch.
const indexQuiet = time.Second

func newIndexer(store *mailstore.Store, log *slog.Logger) *indexer {
	return &indexer{store: store, log: log, wake: make(chan struct{}, 1)}
}

// applied tells the indexer that a batch was applied.
func (x *indexer) applied() {
	x.last.Store(time.Now().UnixNano())
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// quiet reports whether applying has been quiet for indexQuiet and
// nothing keeps the indexer busy; if not, it waits until it may be (or
// ctx ends) and reports false, for the caller to ask again.
func (x *indexer) quiet(ctx context.Context) bool {
	wait := time.Until(time.Unix(0, x.last.Load()).Add(indexQuiet))
	if x.busy != nil && x.busy() {
		wait = indexQuiet
	} else if wait <= 0 {
		return true
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
	return false
}

// run indexes until ctx ends.
func (x *indexer) run(ctx context.Context) {
	if _, left, err := x.store.IndexPending(ctx, 0); err == nil && left > 0 {
		x.log.Info("building the search index in the background; searches read the messages not indexed yet", "messages", left)
	}
	for {
		indexed := x.index(ctx)
		if ctx.Err() != nil {
			return
		}
		if indexed >= 100 {
			x.log.Info("search index complete", "indexed", indexed)
		}
		if indexed >= indexMergeAfter {
			x.merge(ctx)
		} else if indexed > 0 {
			x.reclaim(ctx)
		}
		x.upgradeForms(ctx)
		x.upgradeTexts(ctx)
		x.relocate(ctx)
		select {
		case <-ctx.Done():
			return
		case <-x.wake:
		}
	}
}

// index indexes what the index lacks, a transaction at a time
// (Store.IndexPendingWithin), each once applying has been quiet for
// indexQuiet, until nothing is left or ctx ends, and returns how many
// bodies it did.
func (x *indexer) index(ctx context.Context) int {
	indexed := 0
	for {
		if !x.quiet(ctx) {
			if ctx.Err() != nil {
				return indexed
			}
			continue
		}
		done, more, err := x.store.IndexPendingWithin(ctx, indexBatchLive, indexBudget)
		if err != nil {
			if ctx.Err() == nil {
				x.log.Warn("building the search index failed; trying again at the next change", "err", err)
			}
			return indexed
		}
		indexed += done
		if !more || done == 0 {
			return indexed
		}
	}
}

// reclaim rewrites the levels of the search index whose deleted rows
// passed a tenth of their rows (Store.ReclaimIndex), indexMergePages
// leaf pages a transaction, each once applying has been quiet for
// indexQuiet: the rows of deleted bodies the indexer took out are only
// tombstones until then (schema version 25).
func (x *indexer) reclaim(ctx context.Context) {
	for {
		if !x.quiet(ctx) {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		merged, err := x.store.ReclaimIndex(ctx, indexMergePages)
		if err != nil {
			if ctx.Err() == nil {
				x.log.Warn("reclaiming the search index's deleted rows failed; trying again after the next change", "err", err)
			}
			return
		}
		if !merged {
			return
		}
	}
}

// relocate places the forms together on disk again (Store.Relocate) once
// relocateAfter bodies, and an eighth of all, were stored since the last
// time, when applying has been quiet for indexQuiet.
func (x *indexer) relocate(ctx context.Context) {
	for !x.quiet(ctx) {
		if ctx.Err() != nil {
			return
		}
	}
	after := int64(relocateAfter)
	if x.relocateAfter != 0 {
		after = x.relocateAfter
	}
	unplaced, bodies, err := x.store.Placement(ctx)
	if err != nil || unplaced < after || unplaced*relocateShare < bodies {
		return
	}
	r, err := x.store.Relocate(ctx)
	if err != nil {
		if ctx.Err() == nil {
			x.log.Warn("placing the messages' forms together on disk failed; trying again at the next change", "err", err)
		}
		return
	}
	x.log.Info("placed the messages' forms together on disk", "bodies", bodies, "transactions", r.Transactions,
		"read", r.Read.Round(time.Millisecond), "writes_waited", r.Locked.Round(time.Millisecond),
		"longest_wait", r.LockedOnce.Round(time.Millisecond))
}

// upgradeForms parses again the bodies whose stored forms (ENVELOPE,
// BODYSTRUCTURE and their IMAP forms) an earlier cspool made, formsBatch
// a step, each once applying has been quiet for indexQuiet, until none is
// left (Store.UpgradeForms). A step stopped by the daemon's end is done
// again at its next start; the steps before it stay done.
func (x *indexer) upgradeForms(ctx context.Context) {
	left, err := x.store.FormsPending(ctx)
	if err != nil || left == 0 {
		return
	}
	x.log.Info("bringing the stored forms of messages applied by an earlier cspool up to date in the background; until then FETCH serves those messages as before", "messages", left)
	begin := time.Now()
	upgraded, finished, err := x.upgrade(ctx, func(ctx context.Context) (int, bool, error) {
		return x.store.UpgradeForms(ctx, formsBatch)
	})
	switch {
	case err != nil:
		if ctx.Err() == nil {
			x.log.Warn("bringing the stored forms up to date failed; trying again at the next change", "err", err)
		}
	case finished:
		x.log.Info("stored forms up to date", "messages", upgraded, "took", time.Since(begin).Round(time.Millisecond))
	}
}

// upgradeTexts has the bodies whose search texts an earlier cspool made
// indexed again: textsBatch a step, each once applying has been quiet
// for indexQuiet, listed for the indexer (Store.UpgradeTexts) and then
// indexed as mail just applied is, the index's deleted rows reclaimed
// after each (Store.ReclaimIndex), until none is left; the index merged
// after as many as a build merges it after. Searches read
// the bodies listed and not indexed yet, so they find what the texts of
// now hold at once. A step stopped by the daemon's end leaves its bodies
// listed, which the indexer takes at its next start.
func (x *indexer) upgradeTexts(ctx context.Context) {
	left, err := x.store.TextsPending(ctx)
	if err != nil || left == 0 {
		return
	}
	x.log.Info("indexing the messages indexed by an earlier cspool again in the background; until then SEARCH finds in them what it found before", "messages", left)
	begin := time.Now()
	upgraded, finished, err := x.upgrade(ctx, func(ctx context.Context) (int, bool, error) {
		listed, more, err := x.store.UpgradeTexts(ctx, textsBatch)
		if err == nil && listed > 0 {
			x.index(ctx)
			// The rows the step took out are tombstones until a merge
			// drops them; left to the end, the tombstones of one
			// segment grew until writing them took a step 0.2 to 0.5 s
			// (at 3,500 of 5,000 bodies), where with this none took more
			// than 60 ms (docs/MAILSTORE.md).
			x.reclaim(ctx)
		}
		return listed, more, err
	})
	switch {
	case err != nil:
		if ctx.Err() == nil {
			x.log.Warn("indexing the messages of earlier search texts failed; trying again at the next change", "err", err)
		}
		return
	case finished:
		x.log.Info("search texts up to date", "messages", upgraded, "took", time.Since(begin).Round(time.Millisecond))
	}
	if upgraded >= indexMergeAfter {
		x.merge(ctx)
	}
}

// upgrade runs step, each time once applying has been quiet for
// indexQuiet, until it says nothing is left (finished), it did nothing
// (every body of the step changed meanwhile), mail was applied (the round
// after this one takes it first and comes back), it fails or ctx ends,
// and returns how many bodies its steps did. A step is one of the
// background upgrades of what an earlier cspool stored
// (Store.UpgradeForms, Store.UpgradeTexts): bounded, resumable, each in
// a short write transaction.
func (x *indexer) upgrade(ctx context.Context, step func(context.Context) (int, bool, error)) (upgraded int, finished bool, err error) {
	for {
		if !x.quiet(ctx) {
			if ctx.Err() != nil {
				return upgraded, false, nil
			}
			continue
		}
		done, more, err := step(ctx)
		if err != nil {
			return upgraded, false, err
		}
		upgraded += done
		if !more {
			return upgraded, true, nil
		}
		if done == 0 || len(x.wake) > 0 || ctx.Err() != nil {
			return upgraded, false, nil
		}
	}
}

// merge merges the search index into one segment after a large build
// (its FTS5 tables leave up to 15 segments a level, schema version 20),
// indexMergePages leaf pages a transaction, each once applying has been
// quiet for indexQuiet, like the indexing.
func (x *indexer) merge(ctx context.Context) {
	for {
		if !x.quiet(ctx) {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		merged, err := x.store.MergeIndex(ctx, indexMergePages)
		if err != nil {
			if ctx.Err() == nil {
				x.log.Warn("merging the search index failed; searches use it as it is", "err", err)
			}
			return
		}
		if !merged {
			return
		}
	}
}
