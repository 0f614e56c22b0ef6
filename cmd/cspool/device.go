package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/imapd"
	"cspool/internal/keys"
	"cspool/internal/loginguard"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/statuspage"
	"cspool/internal/syncer"
)

// The device's mail store is what the syncer asks of a device's store
// (internal/syncer/store.go). mailstore, a floor below the syncer, cannot
// name the syncer's interfaces, so the device, where the two meet, checks
// it here.
var (
	_ syncer.Replica = (*mailstore.Store)(nil)
	_ syncer.Queue   = (*mailstore.Store)(nil)
	_ syncer.Journal = (*mailstore.Store)(nil)
	// Changes are refused on a full disk before they are sent.
	_ syncer.RoomChecker = (*mailstore.Store)(nil)
	// The quota the spool stated is kept for the next start.
	_ syncer.QuotaKept = (*mailstore.Store)(nil)
	// A restore that keeps a delivery signed by the spool key records the
	// cutover (--previous-spool-key).
	_ syncer.CutoverKept = (*mailstore.Store)(nil)

	_ mailstore.Parser      = mimeform.Parser{}
	_ mailstore.FormsParser = mimeform.Parser{}
	// Bodies stored by an earlier parser are parsed again (indexer.upgradeForms),
	// and those indexed by one indexed again (indexer.upgradeTexts).
	_ mailstore.Versioned      = mimeform.Parser{}
	_ mailstore.TextsVersioned = mimeform.Parser{}

	_ syncer.IntoSource   = (*api.Client)(nil)
	_ syncer.EachSource   = (*api.Client)(nil)
	_ syncer.Checkpointer = (*api.Client)(nil)
	_ syncer.Budgeted     = (*api.Client)(nil) // the loop paces its requests to the spool's budget
)

// device is the device role, assembled here once: the database's lock and
// its mail store, the spool client and the sync loop; a daemon adds the
// search indexer, the IMAP server and what the status page and the control
// socket show. cspool imap-server, sync and recover and the quickstart
// compose it: openDevice, then dial or startSync, then for a daemon
// newIMAP, collector, serve and stop.
type device struct {
	user     string
	userKey  *keys.SecretKey
	spoolPub keys.PublicKey
	// previousSpoolPub is the key spoolPub replaced (--previous-spool-key;
	// zero: none given), trusted for deliveries up to the cutover
	// (syncer.Config.PreviousSpoolKey).
	previousSpoolPub keys.PublicKey
	spoolURL         string
	dbPath           string
	log              *slog.Logger
	// maxMessage is the largest delivery the device takes (its
	// --max-message-size); 0: command.DefaultMaxMessageBytes.
	maxMessage int64

	store      *mailstore.Store
	closeStore func()
	client     *api.Client
	sync       *syncer.Syncer
	ix         *indexer      // a daemon's search indexer; nil otherwise
	imap       *imapd.Server // a daemon's IMAP server; nil otherwise
	// imapHook is d.imap for the sync loop's notices: nil until newIMAP
	// made the server. A change queued before then (the syncer queues
	// what a Submit could not send) is in the store, where the new
	// server reads it; it has no sessions to tell yet.
	imapHook *atomic.Pointer[imapd.Server]
	// logins counts the failed logins of every listener that takes the
	// daemon's password (IMAP, submission, the status page) together, so
	// that a guesser gets one rate for all three (docs/IMAP.md, "Login");
	// made by loginTally.
	logins   *loginguard.Tally
	syncDone chan error // Run's end, once serve started it

	// created: the database did not exist before this run, or was left
	// by a first run that the spool never answered (firstrun.go).
	created bool
	// dropUnread, set by cspool sync and imap-server before openDevice: a
	// database this run created is removed at close when the spool
	// answered no read in this run and nothing was applied or queued
	// (unread), and marked as this run's until then (firstrun.go).
	dropUnread bool
	// firstRun: the mark DB.firstrun of the database this run made; nil
	// when it did not make it, or without dropUnread.
	firstRun *firstRun
	// with are files this run made beside the database, removed with it
	// (dropWith).
	with []string
	w    io.Writer
}

// openDevice takes the lock of d.dbPath (one process syncs a database at a
// time; busy says what to do when another holds it) and opens its mail
// store (openDeviceStore); with d.dropUnread, a database it makes is
// marked as this run's first (prepareFirstRun). close releases both.
func openDevice(w io.Writer, d device, busy string) (*device, error) {
	prepare := func() (func(), error) {
		_, err := os.Lstat(d.dbPath)
		d.created = errors.Is(err, fs.ErrNotExist)
		return nil, nil
	}
	if d.dropUnread {
		prepare = func() (func(), error) {
			// A store that did not open, made by this run, holds
			// nothing: it goes with its mark.
			return func() {
				if d.firstRun != nil {
					d.w = io.Discard
					d.drop()
				}
			}, d.prepareFirstRun(w)
		}
	}
	store, closeStore, err := openDeviceStore(w, d.dbPath, busy, d.userKey, prepare)
	if err != nil {
		return nil, err
	}
	d.store, d.closeStore, d.w = store, closeStore, w
	return &d, nil
}

// close closes the store, then releases the lock; a database this run
// created and never used is removed (unread, drop), one it keeps loses
// its first run's mark (keep).
func (d *device) close() {
	drop := d.dropUnread && d.created && d.unread()
	if !drop {
		d.keep()
	}
	d.closeStore()
	if drop {
		d.drop()
	}
}

// unread reports whether the spool answered no read of the log in this
// run, and nothing was applied to the database, queued in it or alarmed
// about: a database made with another user's keys (the spool refuses
// them, 403), against an http:// URL of an https:// spool, or while the
// spool was down. Kept, such a database stood in the way of the next
// start: made with the wrong key, it was "encrypted with another key".
func (d *device) unread() bool {
	if d.sync != nil && !d.sync.Status().LastContact.IsZero() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return !holdsSomething(ctx, d.store)
}

// dropWith has path, a database this run made beside the device's and
// did not use (the outbox, DB.outbox, encrypted with the same user's
// key), removed with the device's database if that goes.
func (d *device) dropWith(path string) { d.with = append(d.with, path) }

// drop removes the database this run made and did not use, with its
// journal files and those of dropWith, once the store is closed, and says
// so; then the first run's mark.
func (d *device) drop() {
	for _, db := range append([]string{d.dbPath}, d.with...) {
		for _, p := range []string{db, db + "-wal", db + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(d.w, "cspool: warning: removing %s, made by this run and never synced: %v\n", p, err)
				return
			}
		}
	}
	d.removeMark()
	fmt.Fprintf(d.w, "cspool: %s removed: this run made it, and the spool answered no read of the log, so it held nothing; the next start makes it again\n", d.dbPath)
}

// dial makes the client of the spool at d.spoolURL.
func (d *device) dial() error {
	if d.client != nil {
		return nil
	}
	c, err := api.NewClient(d.spoolURL, d.user, d.userKey, nil)
	if err != nil {
		return usagef("--spool-server: %v", err)
	}
	if err := d.trustSpoolKey(c); err != nil {
		return err
	}
	if plainBeyondLocalhost(d.spoolURL) {
		warnPlainSpool(nil, d.log, d.spoolURL, "a device raises an integrity alarm at those its checks see, and takes a forged quota, "+
			"request budget or readers' format as the spool's, docs/SECURITY.md section 2")
	}
	// An entry is at most the largest message sealed and framed, as the
	// server bounds an append: a spool that sends more stops the sync
	// before it instead of filling this machine's memory and disk.
	c.SetMaxEntry(serverMaxBody(cmp.Or(d.maxMessage, command.DefaultMaxMessageBytes)))
	d.client = c
	return nil
}

// trustSpoolKey holds the database to the spool key it was first synced
// with, once an entry signed by it was applied (mailstore's
// TrustSpoolKey): with another key every delivery from then on would be
// rejected and passed by, so the device refuses to talk to the spool with
// it. Before that the key given replaces the one recorded, and the sync
// loop stops rather than pass deliveries by (syncer's
// UntrustedSpoolError).
//
// With --previous-spool-key, a database that records the previous key
// moves its record to the new one (mailstore's ReplaceSpoolKey), logged
// once: the next start finds the new key recorded. Without it, a database
// that records another key asks the spool at c for its succession
// statement (vouchedRecorded): one verified under --spool-key naming the
// key recorded as replaced moves the record as --previous-spool-key
// would; anything else (the spool not answering within
// vouchedStartTimeout included) is refused as before.
func (d *device) trustSpoolKey(c *api.Client) error {
	if d.previousSpoolPub.Ed25519 != nil {
		return d.replaceSpoolKey()
	}
	err := d.store.TrustSpoolKey(context.Background(), d.spoolPub.Bytes())
	var other *mailstore.OtherSpoolKeyError
	if !errors.As(err, &other) {
		return err
	}
	chain, why := d.vouchedRecorded(c, other.Recorded)
	if len(chain) > 0 {
		d.previousSpoolPub = chain[0]
		d.log.Info("the spool key given replaced the one this database recorded, as the spool states under its signature: it is taken as --previous-spool-key",
			"db", d.dbPath, "spool_key_id", fmt.Sprintf("%x", d.spoolPub.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", chain[0].KeyID()),
			"replacements", len(chain))
		if len(chain) == 1 {
			return d.replaceSpoolKey()
		}
		return d.replaceSpoolKeyChain(chain)
	}
	return withHint(&otherSpoolKeyError{fmt.Sprintf("--spool-key: %s trusts the spool key %s for deliveries (recorded when it was first synced), not %s; %s",
		d.dbPath, recordedKey(other.Recorded), d.spoolPub, why), other},
		"pass the spool's public key this device has always used (the spool.pub of its first sync, which signed the deliveries it applied); with another key every delivery would be rejected. "+
			"If the spool's key was replaced, pass the new spool.pub as --spool-key and the one recorded as --previous-spool-key: the database moves to the new key and keeps its mail (docs/OPERATING.md, \"Replacing the spool key\"). "+
			"If the key recorded was a wrong one taken by a cspool from before schema 26 (cspool status then lists deliveries rejected as \"entry author not trusted\"), move the database away: a new one syncs everything from the spool")
}

// vouchedStartTimeout bounds the ask for the spool's succession statement
// at a device's start.
const vouchedStartTimeout = 10 * time.Second

// vouchedRecorded asks the spool at c for its succession (docs/API.md,
// "Spool keys") and returns the keys the spool key replaced, newest first,
// down to recorded, the key the database trusts, when the statements
// verify link by link from --spool-key and one names recorded; otherwise
// nil and why not, for the refusal's text.
func (d *device) vouchedRecorded(c *api.Client, recorded []byte) ([]keys.PublicKey, string) {
	ctx, cancel := context.WithTimeout(context.Background(), vouchedStartTimeout)
	defer cancel()
	stated, err := c.SpoolKeyChain(ctx)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return nil, "the spool states no key its spool key replaced (its release does not serve the statement)"
	case err != nil:
		return nil, fmt.Sprintf("the spool could not be asked which key its spool key replaced (%v)", err)
	case len(stated) == 0:
		return nil, "the spool states no key its spool key replaced"
	}
	prev, err := keys.VerifyChain(d.spoolPub, stated)
	if err != nil {
		d.log.Warn("the spool's statements of the keys its spool key replaced do not verify from the spool key given: ignored",
			"err", err, "spool_key_id", fmt.Sprintf("%x", d.spoolPub.KeyID()))
		return nil, fmt.Sprintf("the spool's statement of the key its spool key replaced does not verify under it (%v)", err)
	}
	i := slices.IndexFunc(prev, func(k keys.PublicKey) bool { return bytes.Equal(k.Bytes(), recorded) })
	if i < 0 {
		names := make([]string, len(prev))
		for j, k := range prev {
			names[j] = k.String()
		}
		return nil, fmt.Sprintf("the spool states that its spool key replaced %s, not the key recorded", strings.Join(names, ", then "))
	}
	return prev[:i+1], ""
}

// replaceSpoolKeyChain records --spool-key with chain, the keys it
// replaced newest first down to the one the database recorded, as the
// spool vouched for them: the record moves to the new key, chain[0] as the
// previous key, and the others trusted each up to its cutover
// (mailstore's ReplaceSpoolKeyChain).
func (d *device) replaceSpoolKeyChain(chain []keys.PublicKey) error {
	bs := make([][]byte, len(chain))
	for i, k := range chain {
		bs[i] = k.Bytes()
	}
	moved, err := d.store.ReplaceSpoolKeyChain(context.Background(), d.spoolPub.Bytes(), bs)
	if moved {
		d.log.Info("the spool key was replaced: this database trusted an earlier spool key and now trusts the new one; deliveries signed by each earlier key are taken up to the first entry signed by a later one, and refused after it",
			"db", d.dbPath, "spool_key_id", fmt.Sprintf("%x", d.spoolPub.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", chain[0].KeyID()),
			"replacements", len(chain))
	}
	return err
}

// replaceSpoolKey records --spool-key with --previous-spool-key as the key
// it replaced, moving a record of the previous key to the new one.
func (d *device) replaceSpoolKey() error {
	moved, err := d.store.ReplaceSpoolKey(context.Background(), d.spoolPub.Bytes(), d.previousSpoolPub.Bytes())
	if moved {
		d.log.Info("the spool key was replaced: this database trusted the previous spool key and now trusts the new one; deliveries signed by the previous key are taken up to the first entry signed by the new one, and refused after it",
			"db", d.dbPath, "spool_key_id", fmt.Sprintf("%x", d.spoolPub.KeyID()), "previous_spool_key_id", fmt.Sprintf("%x", d.previousSpoolPub.KeyID()))
	}
	var other *mailstore.OtherSpoolKeyError
	if !errors.As(err, &other) {
		return err
	}
	if other.Replaced != nil && bytes.Equal(other.Recorded, d.spoolPub.Bytes()) {
		return withHint(&otherSpoolKeyError{fmt.Sprintf("--previous-spool-key: %s trusts the spool key %s, which replaced %s, not %s",
			d.dbPath, d.spoolPub, recordedKey(other.Replaced), d.previousSpoolPub), other},
			"pass as --previous-spool-key the spool.pub the spool server ran with before its key was replaced, or leave it out: this database has moved to the new key already")
	}
	return withHint(&otherSpoolKeyError{fmt.Sprintf("--previous-spool-key: %s trusts the spool key %s for deliveries (recorded when it was first synced), which is neither --spool-key %s nor --previous-spool-key %s",
		d.dbPath, recordedKey(other.Recorded), d.spoolPub, d.previousSpoolPub), other},
		"pass as --previous-spool-key the spool.pub this device synced with before the spool's key was replaced (the key recorded above), and as --spool-key the new one (docs/OPERATING.md, \"Replacing the spool key\")")
}

// recordedKey formats a key a database records.
func recordedKey(b []byte) string {
	if k, err := keys.PublicKeyFromBytes(b); err == nil {
		return k.String()
	}
	return hex.EncodeToString(b)
}

// otherSpoolKeyError is trustSpoolKey's refusal: its text for the user,
// and mailstore's error beneath, by which cspool sync gives it its exit
// status (a wrong spool.pub, 77).
type otherSpoolKeyError struct {
	msg   string
	cause *mailstore.OtherSpoolKeyError
}

func (e *otherSpoolKeyError) Error() string { return e.msg }
func (e *otherSpoolKeyError) Unwrap() error { return e.cause }

// syncOptions are what the commands choose of a device's sync loop.
type syncOptions struct {
	// daemon: the device serves IMAP. The search indexer and the IMAP
	// server (newIMAP) hear of every applied batch. (Every sync loop names
	// an error a person must fix, api.Hint, and tries it again only now
	// and then.)
	daemon bool
	// wrap, if set, stands between the client and the loop (cspool sync
	// counts what it reads).
	wrap func(syncer.Source) syncer.Source
	// checkpointMin is syncer.Config.CheckpointMin (0: its default).
	checkpointMin int
}

// startSync makes the sync loop over the spool client (dialled if need be);
// serve runs it, or the command calls SyncOnce.
func (d *device) startSync(o syncOptions) error {
	if err := d.dial(); err != nil {
		return err
	}
	var src syncer.Source = d.client
	if o.wrap != nil {
		src = o.wrap(src)
	}
	cfg := syncer.Config{User: d.user, UserKey: d.userKey, SpoolKey: d.spoolPub, PreviousSpoolKey: d.previousSpoolPub, Source: src, Store: d.store,
		Logger: d.log, Unreachable: spoolUnreachable, Permanent: api.Hint, StoreProblem: d.storeProblem,
		OnContact:     d.keep,
		CheckpointMin: o.checkpointMin, KeepDir: keptDir(d.dbPath),
		TempDir: filepath.Dir(d.dbPath),
		// The sealed bytes of a large message, let go before its apply,
		// go back to the system before the apply's SQLite memory grows
		// (memreturn.go).
		OnLargeOpened: debug.FreeOSMemory}
	if o.daemon {
		// Submit may queue a change and tell OnApplied before newIMAP
		// made the server (the spool down, a caller started early):
		// the notice goes to the server only once there is one.
		d.ix = newIndexer(d.store, d.log)
		d.imapHook = new(atomic.Pointer[imapd.Server])
		cfg.OnApplied = func(r *mailstore.Result) {
			if srv := d.imapHook.Load(); srv != nil {
				srv.Applied(r)
			}
			d.ix.applied()
		}
	}
	sy, err := syncer.New(cfg)
	if err != nil {
		return err
	}
	d.sync = sy
	if d.ix != nil {
		// A restore applies nothing until its end: without this, the
		// indexer took the bodies it stores as quiet time and indexed
		// them while they were stored, on the cores and the write lock
		// the restore needs (docs/BENCHMARKS.md, "A new device's restore
		// on all cores").
		d.ix.busy = sy.Restoring
	}
	return nil
}

// storeProblem is the hint for a failure of the device's database that
// retrying cannot heal (syncer.Config.StoreProblem): a damaged file.
func (d *device) storeProblem(err error) string {
	if errors.Is(devicedb.Explain(d.dbPath, err), devicedb.ErrDamaged) {
		return damagedHint(d.dbPath)
	}
	return ""
}

// newIMAP makes the daemon's IMAP server on the store, logging in as the
// device's user; cfg gives the rest (password, TLS, how changes are
// submitted).
func (d *device) newIMAP(cfg imapd.Config) error {
	cfg.Store, cfg.User, cfg.Logger = d.store, d.user, d.log
	cfg.Login.Tally = d.loginTally()
	cfg.Alert = func() string { return d.sync.Status().Alert() }
	cfg.StoreProblem = d.storeProblem
	srv, err := imapd.New(cfg)
	if err != nil {
		if hint := d.storeProblem(err); hint != "" {
			return withHint(devicedb.Explain(d.dbPath, err), hint)
		}
		return err
	}
	d.imap = srv
	if d.imapHook != nil {
		d.imapHook.Store(srv)
	}
	return nil
}

// loginTally is the failed-login count the daemon's listeners share.
func (d *device) loginTally() *loginguard.Tally {
	if d.logins == nil {
		d.logins = loginguard.NewTally()
	}
	return d.logins
}

// collector is what the status page and the control socket show of the
// daemon, whose IMAP listens on imapAddr with the password pw: its sync
// loop, mailboxes, search index and outbox (snd; nil when sending is off).
func (d *device) collector(imapAddr net.Addr, pw imapPassword, snd *sending) *statuspage.Collector {
	c := newStatusCollector(d.sync, d.store, imapAddr, d.user, pw, d.spoolURL)
	c.Outbox = snd.report()
	c.Search = func(ctx context.Context) (*statuspage.SearchIndex, error) {
		n, err := d.store.UnindexedCount(ctx)
		if err != nil {
			return nil, err
		}
		old, err := d.store.TextsPending(ctx)
		if err != nil {
			return nil, err
		}
		return &statuspage.SearchIndex{Unindexed: n, Outdated: old}, nil
	}
	return c
}

// serve runs the search indexer, the sync loop and the IMAP server on ln,
// and on tlsLn (IMAPS, TLS from the first byte) if not nil, until ctx
// ends. The channel it returns gets the first failure: the loop stopping
// on its own (nil if it stopped without an error), or a listener failing.
func (d *device) serve(ctx context.Context, ln, tlsLn net.Listener) <-chan error {
	failed := make(chan error, 3)
	go d.ix.run(ctx)
	d.syncDone = make(chan error, 1)
	go func() {
		err := d.sync.Run(ctx)
		d.syncDone <- err
		if ctx.Err() == nil {
			var failure error
			if err != nil && !errors.Is(err, context.Canceled) {
				failure = fmt.Errorf("sync stopped: %w", err)
			}
			failed <- failure
		}
	}()
	imapFailed := func(err error) {
		if ctx.Err() == nil {
			failed <- fmt.Errorf("IMAP server stopped: %w", err)
		}
	}
	go func() { imapFailed(d.imap.Serve(ln)) }()
	if tlsLn != nil {
		go func() { imapFailed(d.imap.ServeTLS(tlsLn)) }()
	}
	return failed
}

// stop closes the IMAP server and waits (a while) for the sync loop, whose
// context the caller has cancelled, to end.
func (d *device) stop() {
	d.imap.Close()
	if d.syncDone == nil {
		return
	}
	select {
	case <-d.syncDone:
	case <-time.After(5 * time.Second):
		d.log.Warn("sync loop did not stop within 5s")
	}
}

// defaultUser is the login name, found as the prototype found it: the
// LOGNAME, USER, LNAME and USERNAME environment variables, then the
// account database.
func defaultUser(e *env) string {
	for _, v := range []string{"LOGNAME", "USER", "LNAME", "USERNAME"} {
		if u := e.getenv(v); u != "" {
			return u
		}
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "user"
}

// deviceFlags are the flags of the commands that sync a device's database
// (imap-server, sync, recover).
type deviceFlags struct {
	userKey, userPub, spoolPub, user, db, spoolURL *string
	previousSpoolPub                               *string
	maxMessage                                     *int64
	pass                                           *passphraseSource
	fs                                             *flagSet
}

func addDeviceFlags(fs *flagSet, e *env, userHelp string) *deviceFlags {
	return &deviceFlags{
		userKey:  fs.String("user-key", "user.sec", "the user's secret key `file`"),
		userPub:  fs.String("user-public-key", "user.pub", "the user's public key `file` (must match --user-key); unset, the .pub next to --user-key (X.sec: X.pub) when there is one"),
		spoolPub: fs.String("spool-key", "spool.pub", "the spool's public key `file` (trusted for deliveries only)"),
		previousSpoolPub: fs.String("previous-spool-key", "", "the spool's public key `file` that --spool-key replaced: its deliveries are trusted up to the first signed by --spool-key, "+
			"and a database that recorded it moves to --spool-key (docs/OPERATING.md, \"Replacing the spool key\"); empty: none"),
		user:     fs.String("user", defaultUser(e), userHelp),
		db:       fs.String("db", "test.db", "local mail database `file`"),
		spoolURL: fs.String("spool-server", "http://localhost:3999", "spool server `URL`"),
		maxMessage: fs.Int64("max-message-size", command.DefaultMaxMessageBytes, "largest message taken, in bytes: a delivery in the log larger than this (sealed) stops the sync before it, with an error, until this is raised; "+
			"give at least the spool's own --max-message-size. cspool imap-server's APPEND takes up to this too"),
		pass: addPassphraseFlag(fs, e),
		fs:   fs,
	}
}

// userPubPath is --user-public-key when it was given (on the command line
// or by --config); otherwise the public file next to --user-key, X.pub for
// X.sec, when it exists, as gen-keys and the quickstart write them; else
// the flag's default, user.pub.
func (d *deviceFlags) userPubPath() string {
	given := false
	d.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "user-public-key" })
	if given {
		return *d.userPub
	}
	if base, ok := strings.CutSuffix(*d.userKey, ".sec"); ok {
		if _, err := os.Stat(base + ".pub"); err == nil {
			return base + ".pub"
		}
	}
	return *d.userPub
}

// loadKeys checks the user name and loads the device's keys: the user's
// secret key, the spool's public key and the one it replaced (zero: no
// --previous-spool-key).
func (d *deviceFlags) loadKeys() (*keys.SecretKey, keys.PublicKey, keys.PublicKey, error) {
	if err := keys.CheckUserName(*d.user); err != nil {
		return nil, keys.PublicKey{}, keys.PublicKey{}, usagef("%v", err)
	}
	userKey, spoolPub, err := loadDeviceKeys(d.pass, *d.userKey, d.userPubPath(), *d.spoolPub)
	if err != nil || *d.previousSpoolPub == "" {
		return userKey, spoolPub, keys.PublicKey{}, err
	}
	prev, err := devicePreviousSpoolPub.loadPublic(*d.previousSpoolPub, "")
	if err != nil {
		return nil, keys.PublicKey{}, keys.PublicKey{}, err
	}
	switch {
	case prev.Equal(spoolPub):
		return nil, keys.PublicKey{}, keys.PublicKey{}, &exitError{withHint(fmt.Errorf("--previous-spool-key: %s holds the same key as --spool-key %s (key id %x)", *d.previousSpoolPub, *d.spoolPub, spoolPub.KeyID()),
			"--spool-key takes the spool's new public key, --previous-spool-key the one it replaced; without a replacement leave --previous-spool-key out"), exNoPerm}
	case prev.Equal(userKey.Public()):
		return nil, keys.PublicKey{}, keys.PublicKey{}, &exitError{withHint(fmt.Errorf("--previous-spool-key: %s holds the user's own public key, not a spool key: %w", *d.previousSpoolPub, errUserKeyAsSpoolKey),
			"--previous-spool-key takes the spool.pub the spool server ran with before its key was replaced"), exNoPerm}
	}
	return userKey, spoolPub, prev, nil
}

// open loads the device's keys and opens its database (openDevice), for
// the commands that work on a device without serving it; busy is the
// hint when another process holds the database; dropUnread is
// device.dropUnread.
func (d *deviceFlags) open(w io.Writer, log *slog.Logger, busy string, dropUnread bool) (*device, error) {
	userKey, spoolPub, prevPub, err := d.loadKeys()
	if err != nil {
		return nil, err
	}
	if *d.maxMessage <= 0 {
		return nil, usagef("--max-message-size must be positive")
	}
	return openDevice(w, device{user: *d.user, userKey: userKey, spoolPub: spoolPub, previousSpoolPub: prevPub, spoolURL: *d.spoolURL, dbPath: *d.db, log: log,
		dropUnread: dropUnread, maxMessage: *d.maxMessage}, busy)
}

// loadDeviceKeys loads what a device needs: the user's secret key (checked
// against the public file given with it) and the spool's public key.
func loadDeviceKeys(src *passphraseSource, userKeyPath, userPubPath, spoolPubPath string) (*keys.SecretKey, keys.PublicKey, error) {
	userKey, err := deviceUserKey.loadSecret(src, userKeyPath, userPubPath)
	if err != nil {
		return nil, keys.PublicKey{}, err
	}
	userPub, err := deviceUserPub.loadPublic(userPubPath, userKeyPath)
	if err != nil {
		return nil, keys.PublicKey{}, err
	}
	if !userPub.Equal(userKey.Public()) {
		return nil, keys.PublicKey{}, &exitError{withHint(fmt.Errorf("%s is not the public half of %s", userPubPath, userKeyPath),
			"pass the .pub file that gen-keys wrote together with the .sec file"), exNoPerm}
	}
	spoolPub, err := deviceSpoolPub.loadPublic(spoolPubPath, "")
	if err != nil {
		return nil, keys.PublicKey{}, err
	}
	if spoolPub.Equal(userPub) {
		// Trusted as the spool's, the user's own key would make every
		// delivery (signed by the spool's key) rejected.
		// Either flag may name the wrong file: the spool's key pair given
		// as the user's (--user-key spool.sec) reads the same.
		return nil, keys.PublicKey{}, &exitError{withHint(fmt.Errorf("--spool-key: %s holds the user's own public key (the one in %s), not the spool's: --user-key %s and --spool-key %s are one key pair: %w",
			spoolPubPath, userPubPath, userKeyPath, spoolPubPath, errUserKeyAsSpoolKey),
			"--user-key takes the user's secret key (USER.sec, from gen-keys) and --spool-key the spool's public key (spool.pub, from the spool server's operator): one of the two names the other's file"), exNoPerm}
	}
	return userKey, spoolPub, nil
}

// openDeviceStore takes the database's lock (one process syncs a database
// at a time; busy explains who holds it), runs prepare (if not nil) under
// it, and opens the mail store (when that fails, it runs the function
// prepare returned, if not nil, before it lets the lock go), encrypted at rest with a key derived from
// userKey: a plaintext database (an earlier cspool's) is encrypted in
// place first, with a line on w. closeStore closes the store, then
// releases the lock.
func openDeviceStore(w io.Writer, dbPath, busy string, userKey *keys.SecretKey, prepare func() (undo func(), err error)) (store *mailstore.Store, closeStore func(), err error) {
	if err := checkDBFolder(dbPath); err != nil {
		return nil, nil, err
	}
	if err := refuseForeign(dbPath); err != nil {
		return nil, nil, err
	}
	unlock, err := lockDatabase(dbPath, busy)
	if err != nil {
		return nil, nil, err
	}
	var undo func()
	if prepare != nil {
		if undo, err = prepare(); err != nil {
			unlock()
			return nil, nil, err
		}
	}
	store, err = openMailStore(w, dbPath, userKey, false)
	if err != nil {
		if undo != nil {
			undo()
		}
		unlock()
		return nil, nil, err
	}
	return store, func() { store.Close(); unlock() }, nil
}

// refuseForeign refuses a --db that names another program's SQLite
// database (the spool server's spool.db, anyone's) before the device puts
// anything beside it: the lock file DB.lock was left there by a refusal
// that came only once the store was opened under the lock.
func refuseForeign(dbPath string) error {
	if benchPlaintext {
		return nil
	}
	if st, err := devicedb.Inspect(dbPath, nil); err != nil || st != devicedb.Plaintext ||
		!devicedb.Foreign(dbPath, mailstore.ApplicationID) {
		return nil
	}
	err := fmt.Errorf("opening mail store: %s: %w", dbPath, devicedb.ErrForeign)
	return withHint(err, storeHint(dbPath, err))
}

// openMailStore opens the device's mail store encrypted with userKey's
// database key; readOnly leaves a plaintext database unencrypted (the
// caller holds no lock on it).
func openMailStore(w io.Writer, dbPath string, userKey *keys.SecretKey, readOnly bool) (*mailstore.Store, error) {
	if benchPlaintext {
		fmt.Fprintf(w, "cspool: this build (cspool_bench_plaintext) keeps %s in plaintext, for benchmarks only\n", dbPath)
		return mailstore.OpenWith(dbPath, mailstore.Options{Parser: mimeform.Parser{}, NoMigrate: readOnly})
	}
	key := devicedb.Key(userKey.DatabaseKey("mailstore"))
	migrating := false
	if st, err := devicedb.Inspect(dbPath, &key); err == nil && st == devicedb.Plaintext && !readOnly &&
		!devicedb.Foreign(dbPath, mailstore.ApplicationID) {
		migrating = true
		size := int64(0)
		if info, err := os.Stat(dbPath); err == nil {
			size = info.Size()
		}
		fmt.Fprintf(w, "cspool: encrypting %s in place (%s; once, and safe to interrupt)\n", dbPath, sizeText(size))
	}
	store, err := mailstore.OpenWith(dbPath, mailstore.Options{Parser: mimeform.Parser{}, Key: &key, NoMigrate: readOnly})
	if err != nil {
		err = devicedb.Explain(dbPath, err)
		return nil, withHint(err, storeHint(dbPath, err))
	}
	if migrating {
		fmt.Fprintf(w, "cspool: %s is encrypted now\n", dbPath)
	}
	return store, nil
}

// storeHint says what to do about a device database that did not open.
func storeHint(dbPath string, err error) string {
	switch {
	case errors.Is(err, devicedb.ErrWrongKey):
		return fmt.Sprintf("%s was encrypted with another secret key: pass the --user-key this device has always used; a database made with a different key cannot be read, but it is only a copy: move it away and a new one syncs from the spool (and %s.outbox with it, if there is one: made with the same key, it may hold mail not sent yet)", dbPath, dbPath)
	case errors.Is(err, devicedb.ErrEncrypted):
		return "the database is encrypted with the user's key: pass --user-key (and its passphrase)"
	case errors.Is(err, devicedb.ErrDiskFull):
		return freeSpaceHint(filepath.Dir(dbPath), "nothing was lost, and the mail waits in the spool")
	case errors.Is(err, devicedb.ErrDamaged):
		return damagedHint(dbPath)
	case errors.Is(err, devicedb.ErrForeign), errors.Is(err, mailstore.ErrNotMailstore):
		return fmt.Sprintf("--db %s names a database of another program (the spool server's, or another's), which was left as it is: give this device a file of its own, a new name in a folder this user can write", dbPath)
	}
	return orNewerSchema(err, "check that the directory of --db exists and is writable")
}

// damagedHint says what to do about a device database SQLite found
// damaged: it is a copy of the spool's log, but for the changes made on
// the device and not sent yet.
func damagedHint(dbPath string) string {
	return fmt.Sprintf("%s is damaged (a failing disk, or a copy taken while it was written). Its mail is all in the spool: "+
		"stop the daemon, move %s and %s-wal aside (keep them), and start it again: a new database syncs from the spool. "+
		"Changes made on this device that were not sent yet (Queued in cspool status) are in the old file only", dbPath, dbPath, dbPath)
}

// errDatabaseBusy: another process holds the database's lock.
var errDatabaseBusy = errors.New("database in use by another cspool process")

// errUserKeyAsSpoolKey: a spool key flag names the user's own public key,
// a wrong spool.pub (or a wrong --user-key): `cspool sync` exits 77 for it,
// as for any spool key the deliveries or the database refuse.
var errUserKeyAsSpoolKey = errors.New("a spool key cannot be the user's own key")

// errDatabaseLinked: the database file has more than one name.
var errDatabaseLinked = errors.New("database has other names")

// lockDatabase takes the exclusive lock DB.lock (flock(2), released when
// the process ends, however it ends) and writes the process id into it.
// Only one process syncs a database at a time: two would both apply the
// log, and the second apply of a batch fails on the position.
func lockDatabase(dbPath, hint string) (unlock func(), err error) {
	// The lock is named after the database file, not the name it was
	// given: through a symlink a second daemon took a lock of its own and
	// ran on the same database. A hard link cannot be followed back, and
	// SQLite would give it a journal of its own (DB-wal by the link's
	// name: two WALs for one file corrupt it), so it is refused.
	if real, err := filepath.EvalSymlinks(dbPath); err == nil {
		dbPath = real
	}
	if info, err := os.Stat(dbPath); err == nil {
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			return nil, withHint(fmt.Errorf("%s: %w: the file has %d names (hard links)", dbPath, errDatabaseLinked, st.Nlink),
				"give the database one name: remove the other links (find / -samefile "+dbPath+"), or pass a copy (cp) to --db; two names let two daemons use it at once, each with a journal of its own, which corrupts it")
		}
	}
	path := dbPath + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		// No cspool command makes the folder (a mistyped path would
		// start an empty database); the systemd unit's ExecStartPre does,
		// so a first sync before the daemon's first start met this.
		dir := filepath.Dir(dbPath)
		return nil, &exitError{withHint(fmt.Errorf("the folder %s of --db does not exist", dir),
			"make it: mkdir -p -m 0700 "+shellQuote(dir)+" (no cspool command makes it, so that a mistyped path does not start an empty database)"), exConfig}
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("opening lock file: %w", err), "check that the directory of --db exists and is writable")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(b))
			if pid == "" {
				pid = "unknown"
			}
			return nil, withHint(fmt.Errorf("%s: %w (pid %s holds %s)", dbPath, errDatabaseBusy, pid, path), hint)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
