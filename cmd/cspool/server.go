package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// shutdownGrace bounds how long in-flight requests and deliveries may take
// to finish after SIGTERM or SIGINT.
const shutdownGrace = 30 * time.Second

func runServer(e *env, args []string) error {
	fs := newFlagSet(e, "server", "", `
Run the spool server: the HTTP API v1 (docs/API.md) through which devices
read and append their users' encrypted logs, and optionally an LMTP listener
(RFC 2033) through which a mail transfer agent delivers mail.

The logs are kept in SQLite in --spool-dir (the default, zero setup), or
with --store postgres in the PostgreSQL database named by --dsn (or the
CSPOOL_DSN environment variable, which keeps a password out of the process
list); several servers may share one PostgreSQL database (docs/POSTGRES.md).

Users are listed in a users file (--users; lines "NAME PUBLIC-KEY", as
printed by 'cspool gen-keys'); send SIGHUP to reload it. With --store
postgres, --users-table reads them from the table cspool_users(name,
public_key) of the same database instead, on every lookup. --users wins over
--users-table. With neither the server runs in TEST MODE: the first key that
authenticates as a name is registered to it (kept in SPOOL_DIR/test-users).
Never expose a test mode server to people you do not trust.

The spool key (--spool-key, a secret key file) signs LMTP deliveries, and its
public half may append to any user's log over HTTP ('cspool deliver
--spool-server'). It cannot decrypt anything. Given a new --spool-key with
--previous-spool-key (the old key's public file), the server replaces the
store's spool key, every log kept, once nothing runs with the old one
(docs/OPERATING.md, "Replacing the spool key").

A request signed with a key the server does not know is refused before
anything is stored. Each caller has a share of its own, and a caller over it
gets 429 while everyone else goes on: each user key's replay budget
(--nonces-per-key; --spool-key-nonces for the spool key), each user's
waiting reads (--max-long-polls; each waits up to --max-wait, 5 minutes,
which behind a reverse proxy must stay below its read timeout), each client
address's connections (--max-conns-per-addr; behind a reverse proxy raise
it, or 0 for none), and
an address whose requests keep being refused gets its answers slowly
(--refusal-rate).

Prometheus metrics (docs/METRICS.md) are served at /metrics on a listener of
their own with --metrics-addr; they are off by default and carry no user
names.

Listeners default to localhost. SIGTERM or SIGINT stops accepting, lets
requests and deliveries in flight finish (up to 30 s), and closes the store.`, `
cspool server --users /etc/cspool/users --spool-dir /var/lib/cspool \
    --spool-key /etc/cspool/spool.sec --lmtp 127.0.0.1:2424 --lmtp-domains example.org
cspool server --store postgres --dsn 'postgres://cspool@db.example.org/cspool' \
    --users-table --spool-key /etc/cspool/spool.sec --lmtp 127.0.0.1:2424
cspool server --spool-dir ./spool    # test mode, http://127.0.0.1:3999`)
	port := fs.Int("port", 3999, "HTTP API port")
	addr := fs.String("addr", "127.0.0.1", "HTTP API address to listen on")
	spoolDir := fs.String("spool-dir", "./spool", "spool directory (SQLite store; test mode registrations)")
	storeKind := fs.String("store", "sqlite", "where the logs are kept: sqlite (in --spool-dir) or postgres (at --dsn)")
	dsn := fs.String("dsn", "", "PostgreSQL connection URL for --store postgres (default: $CSPOOL_DSN)")
	usersTable := fs.Bool("users-table", false, "read users from the PostgreSQL table cspool_users (with --store postgres)")
	debug := fs.Bool("debug", false, "log at debug level")
	usersFile := fs.String("users", "", "users file; empty runs the server in TEST MODE")
	spoolKeyFile := fs.String("spool-key", "", "the spool's secret key file (required with --lmtp)")
	previousKeyFile := fs.String("previous-spool-key", "", "the public key `file` of the spool key the store runs with now (spool.pub), to replace it by --spool-key's, logs and all (docs/OPERATING.md, \"Replacing the spool key\")")
	pass := addPassphraseFlag(fs, e)
	lmtpAddr := fs.String("lmtp", "", "LMTP listen address, e.g. 127.0.0.1:2424; empty: no LMTP")
	lmtpDomains := fs.String("lmtp-domains", "", "comma-separated recipient domains accepted over LMTP; empty: any")
	lmtpDelimiter := fs.String("lmtp-recipient-delimiter", "+", "over LMTP, a local part with one of these characters names the user before the first of them when no user has the whole local part (alice+lists reaches alice; +- as Postfix's recipient_delimiter: alice-lists too); empty: off")
	var lmtpLim lmtpLimits
	lmtpLim.register(fs.FlagSet)
	maxMsg := fs.Int64("max-message-size", deliver.DefaultMaxMessageBytes, "largest message accepted over LMTP, in bytes; over HTTP the server sees sealed entries only, and takes them up to this plus an eighth and 1 MiB (cspool deliver's --max-size bounds the message)")
	entryFormat := fs.String("entry-format", "auto", "the entry format LMTP deliveries are sealed in: 2, one key agreement an entry, read by every device; 3, a chain of keys for each user's run of deliveries (docs/FORMAT.md), read only by devices of this release or later; auto, 3 for a user once every read of the user's log has said it reads format 3 for --entry-format-after, else 2")
	entryFormatAfter := fs.Duration("entry-format-after", defaultEntryFormatAfter, "with --entry-format auto, how long every read of a user's log must have said it reads entry format 3 before the user's deliveries are sealed in it: longer than the user's least used device stays off")
	maxCheckpoint := fs.Int64("max-checkpoint-size", api.DefaultMaxCheckpointBody, fmt.Sprintf("largest checkpoint upload accepted, in bytes (413 beyond; a checkpoint takes about 102 bytes a message); at most %d", api.MaxCheckpointBodyLimit))
	checkpointMemory := fs.Int64("checkpoint-memory", api.DefaultCheckpointMemory, "most bytes of checkpoints held at once, uploads and downloads, all users together (one beyond waits up to 10 s, then gets 503); raised to fit the largest upload and its keep list if below")
	appendMemory := fs.Int64("append-memory", 0, "most bytes of append bodies held at once, all keys together (an append beyond waits up to 10 s, then gets 503; a user's key holds at most a quarter, at least the largest append, and gets 429 beyond); 0: 4 times the largest append (--max-message-size plus 1/8 and 1 MiB, at least 64 MiB); else at least the largest append")
	readMemory := fs.Int64("read-memory", 0, "most bytes of entries the reads hold at once, all keys together, until their answers are written (a read beyond waits up to 10 s, then gets 503; a user's key holds at most a quarter, at least the largest append, and gets 429 beyond); 0: 4 times the largest append; else at least the largest append")
	quota := fs.Int64("quota", 0, "most bytes a user's log may hold for a delivery to be taken (LMTP 452 4.2.2, HTTP 507 beyond); 0: no quota")
	quotaMargin := fs.Int64("quota-margin", 0, "with --quota: how many bytes past it a user's own appends (IMAP APPEND, flags, deletes) may take the user's log (HTTP 507 beyond); left unset, 4 MiB and twice the largest message sealed (118.5 MiB with the default --max-message-size); 0: they are never refused")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (PEM) for the HTTP API")
	tlsKey := fs.String("tls-key", "", "TLS private key file (PEM) for the HTTP API")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9399; empty: off")
	pprofAddr := fs.String("pprof-addr", "", "serve the Go runtime's profiles at http://ADDR/debug/pprof/ (a loopback address only, served to this process's user alone: they have no login); empty: off")
	gcPercent := fs.Int("gc-percent", defaultServerGCPercent, "the garbage collector's goal, in percent of the live heap it may grow by between collections (debug.SetGCPercent, Go's GOGC), while the byte limits hold under 32 MiB; 50 from there until they hold under 16 MiB; left unset, a GOGC in the environment wins")
	maxConns := fs.Int("max-conns-per-addr", 64, "connections one client address (IPv4, or IPv6 /64) may hold open to the HTTP API; 0: no limit")
	refusalRate := fs.Int("refusal-rate", 20, "refusals a second one client address gets answered at once; beyond, answers are held up to 2 s; 0: never held")
	maxPolls := fs.Int("max-long-polls", 16, "reads of one user that may wait for new entries at once")
	maxWait := fs.Duration("max-wait", 5*time.Minute, "longest wait granted to a long-poll (a waiting device renews its read this often); behind a reverse proxy keep it below the proxy's read timeout")
	userNonces := fs.Int("nonces-per-key", 1<<14, "requests of one user's key remembered at once against replays (its budget in any 61 s)")
	spoolNonces := fs.Int("spool-key-nonces", 1<<18, "requests of the spool key remembered at once (deliveries over HTTP in any 61 s)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dsn == "" {
		*dsn = e.getenv("CSPOOL_DSN")
	}
	if fs.NArg() != 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *pprofAddr != "" {
		if err := checkPprofAddr(*pprofAddr); err != nil {
			return err
		}
	}
	if *port < 0 || *port > 65535 {
		return usagef("--port %d out of range", *port)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if *lmtpAddr != "" && *spoolKeyFile == "" {
		return usagef("--lmtp needs --spool-key: deliveries are signed with the spool key")
	}
	if *previousKeyFile != "" && *spoolKeyFile == "" {
		return usagef("--previous-spool-key needs --spool-key: the new key that replaces it")
	}
	if *entryFormat != "2" && *entryFormat != "3" && *entryFormat != "auto" {
		return usagef("--entry-format %s: want 2, 3 or auto", *entryFormat)
	}
	if *entryFormatAfter < 0 {
		return usagef("--entry-format-after must not be negative")
	}
	if *maxMsg <= 0 {
		return usagef("--max-message-size must be positive")
	}
	if *quota < 0 {
		return usagef("--quota must be 0 (no quota) or more")
	}
	if *quotaMargin < 0 || (*quotaMargin > 0 && *quota == 0) {
		return usagef("--quota-margin must be 0 (none) or more, and needs --quota")
	}
	if *quota > 0 && !flagGiven(fs, "quota-margin") {
		*quotaMargin = defaultQuotaMargin(*maxMsg)
	}
	if *maxCheckpoint <= 0 || *maxCheckpoint > api.MaxCheckpointBodyLimit {
		return usagef("--max-checkpoint-size %d: want 1 to %d", *maxCheckpoint, api.MaxCheckpointBodyLimit)
	}
	if *checkpointMemory <= 0 {
		return usagef("--checkpoint-memory must be positive")
	}
	if mb := serverMaxBody(*maxMsg); *appendMemory < 0 || *appendMemory > 0 && *appendMemory < mb {
		return usagef("--append-memory %d: want 0 (4 times the largest append, %d) or at least the largest append (%d with --max-message-size %d)", *appendMemory, 4*mb, mb, *maxMsg)
	}
	if mb := serverMaxBody(*maxMsg); *readMemory < 0 || *readMemory > 0 && *readMemory < mb {
		return usagef("--read-memory %d: want 0 (4 times the largest append, %d) or at least the largest append (%d with --max-message-size %d)", *readMemory, 4*mb, mb, *maxMsg)
	}
	if err := lmtpLim.check(); err != nil {
		return err
	}
	switch {
	case *maxConns < 0 || *refusalRate < 0:
		return usagef("--max-conns-per-addr and --refusal-rate must be 0 (no limit) or more")
	case *maxPolls <= 0 || *userNonces <= 0 || *spoolNonces <= 0:
		return usagef("--max-long-polls, --nonces-per-key and --spool-key-nonces must be positive")
	case *maxWait < time.Second:
		return usagef("--max-wait %s: want at least 1s", *maxWait)
	}
	// api.Config: negative is no limit.
	if *maxConns == 0 {
		*maxConns = -1
	}
	if *refusalRate == 0 {
		*refusalRate = -1
	}
	switch {
	case *storeKind != "sqlite" && *storeKind != "postgres":
		return usagef("--store %q: want sqlite or postgres", *storeKind)
	case *storeKind == "postgres" && *dsn == "":
		return usagef("--store postgres needs --dsn (or CSPOOL_DSN)")
	case *usersTable && *storeKind != "postgres":
		return usagef("--users-table needs --store postgres")
	}
	percent, gcSetting, err := applyServerGCPercent(*gcPercent, flagGiven(fs, "gc-percent"))
	if err != nil {
		return err
	}
	gov := newGCGovernor(percent)
	gov.start()
	defer gov.stop()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	s := &serverRun{e: e, log: log}
	defer s.close()
	return s.run(serverFlags{
		httpAddr: net.JoinHostPort(*addr, strconv.Itoa(*port)), spoolDir: *spoolDir, usersFile: *usersFile,
		pass: pass, spoolKeyFile: *spoolKeyFile, previousKeyFile: *previousKeyFile, lmtpAddr: *lmtpAddr, lmtpDomains: *lmtpDomains, lmtpDelimiter: *lmtpDelimiter, maxMsg: *maxMsg, quota: *quota, quotaMargin: *quotaMargin, entryFormat: *entryFormat, entryFormatAfter: *entryFormatAfter,
		tlsCert: *tlsCert, tlsKey: *tlsKey, storeKind: *storeKind, dsn: *dsn, usersTable: *usersTable,
		metricsAddr: *metricsAddr, pprofAddr: *pprofAddr, lmtpLimits: lmtpLim, gcPercent: gcText(gcSetting, gov), memoryHeld: gov.hook(),
		limits: serverLimits{conns: *maxConns, refusals: *refusalRate, polls: *maxPolls,
			userNonces: *userNonces, spoolNonces: *spoolNonces, maxWait: *maxWait,
			maxCheckpoint: *maxCheckpoint, checkpointMemory: *checkpointMemory, appendMemory: *appendMemory, readMemory: *readMemory},
	})
}

// serverLimits are the shares of the HTTP API (docs/API.md §2, §3, §7).
type serverLimits struct {
	conns, refusals, polls, userNonces, spoolNonces int
	maxWait                                         time.Duration
	maxCheckpoint, checkpointMemory, appendMemory   int64
	readMemory                                      int64
}

// defaultEntryFormatAfter is --entry-format-after's default: a device
// left off for a month, built before entry format 3 and never seen in
// that time, stops before the first delivery in it until upgraded (it
// loses nothing: docs/OPERATING.md, "Running it").
const defaultEntryFormatAfter = 30 * 24 * time.Hour

// serverMaxBody is the largest append body the server takes (api.Config.MaxBody)
// with --max-message-size maxMsg: the message sealed and framed.
func serverMaxBody(maxMsg int64) int64 { return max(64<<20, maxMsg+maxMsg/8+1<<20) }

// defaultQuotaMargin is --quota-margin left unset with --quota: room past
// the quota for a user's own appends of 4 MiB (the changes that delete
// mail, and the small entries a checkpoint keeps, until the next
// checkpoint gives the room back) and two of the largest messages sealed
// (APPENDs two devices queued at once by a usage stated before). Without
// a margin whoever holds a user's key could fill the disk all users share
// past any quota (docs/SECURITY.md).
func defaultQuotaMargin(maxMsg int64) int64 { return 4<<20 + 2*(maxMsg+maxMsg/8+1<<20) }

type serverFlags struct {
	pass                                                                                               *passphraseSource
	httpAddr, spoolDir, usersFile, spoolKeyFile, lmtpAddr, lmtpDomains, lmtpDelimiter, tlsCert, tlsKey string
	previousKeyFile                                                                                    string // --previous-spool-key
	storeKind, dsn, metricsAddr, pprofAddr                                                             string
	gcPercent                                                                                          string      // the collector's setting, for the log
	memoryHeld                                                                                         func(int64) // told what the byte budgets hold (gcGovernor)
	usersTable                                                                                         bool
	entryFormat                                                                                        string        // "2", "3" or "auto": the format LMTP seals in
	entryFormatAfter                                                                                   time.Duration // with "auto" (api.Config.NewFormatsAfter)
	maxMsg, quota, quotaMargin                                                                         int64
	limits                                                                                             serverLimits
	lmtpLimits                                                                                         lmtpLimits
}

// users is what the server needs of a user database: the users file or
// test mode (userdb.DB), or the PostgreSQL table (userdb.PG).
type users interface {
	api.Users
	Lookup(ctx context.Context, user string) (keys.PublicKey, error)
	Reload() error
	TestMode() bool
	Path() string
	Len() int
}

var (
	_ users = (*userdb.DB)(nil)
	_ users = (*userdb.PG)(nil)
)

// serverRun holds what a running server must release.
type serverRun struct {
	e      *env
	log    *slog.Logger
	store  spool.Store
	pgUser *userdb.PG
	httpLn net.Listener
	lmtpLn net.Listener
	mon    *metricsRun  // nil: metrics off
	pprof  *http.Server // nil: profiles off
}

func (s *serverRun) close() {
	s.mon.close()
	if s.pprof != nil {
		s.pprof.Close()
	}
	for _, ln := range []net.Listener{s.httpLn, s.lmtpLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Error("closing the store", "err", err)
		}
	}
	if s.pgUser != nil {
		s.pgUser.Close()
	}
}

func (s *serverRun) run(f serverFlags) error {
	var spoolKey *keys.SecretKey
	if f.spoolKeyFile != "" {
		k, err := serverSpoolKey.loadSecret(f.pass, f.spoolKeyFile, "")
		if err != nil {
			return err
		}
		spoolKey = k
	}
	var previous keys.PublicKey
	if f.previousKeyFile != "" {
		p, err := loadPreviousSpoolKey(serverPreviousSpoolKey, f.previousKeyFile, f.spoolKeyFile, spoolKey.Public())
		if err != nil {
			return err
		}
		previous = p
	}
	tlsConfig, err := loadServerTLS(f.tlsCert, f.tlsKey)
	if err != nil {
		return err
	}
	// The users file before the store: a start refused for it must leave
	// no spool behind. A --spool-dir mistyped as well got a new, empty
	// spool with the spool key recorded, so the next start, the users file
	// fixed, ran on it without the warning that a new spool was made.
	var users users
	if f.usersFile != "" {
		if users, err = s.openUsers(f); err != nil {
			return err
		}
	}
	store, err := s.openStore(f)
	if err != nil {
		return err
	}
	s.store = store
	if spoolKey != nil {
		where := f.spoolDir
		if f.storeKind == "postgres" {
			where = "the PostgreSQL store " + pgstore.Redact(f.dsn)
		}
		var err error
		if f.previousKeyFile != "" {
			err = s.replaceSpoolKey(store, previous, spoolKey.Public(), f.previousKeyFile, f.spoolKeyFile, where)
		} else {
			err = keepSpoolKey(store, spoolKey.Public(), f.spoolKeyFile, where, "")
		}
		if err != nil {
			if f.storeKind != "postgres" {
				if damaged := damagedSpool(err, f.spoolDir); damaged != nil {
					return damaged
				}
			}
			return err
		}
	}
	if users == nil {
		if users, err = s.openUsers(f); err != nil {
			return err
		}
	}
	if db, ok := users.(*userdb.DB); ok && f.storeKind == "postgres" && !db.TestMode() {
		if err := s.keepKeysIn(f, db); err != nil {
			return err
		}
	}
	if r, ok := users.(interface {
		Refuse(keys.PublicKey, string) error
	}); ok && spoolKey != nil {
		if err := r.Refuse(spoolKey.Public(), "the public key of --spool-key "+f.spoolKeyFile); err != nil {
			who := "that user"
			if rk := (*userdb.RefusedKeyError)(nil); errors.As(err, &rk) {
				who = rk.User
			}
			return &exitError{withHint(err, spoolKeyClashHint(who, f.spoolKeyFile, false)), exNoPerm}
		}
	}
	errc := make(chan error, 4)
	cfg := api.Config{Store: store, Users: users, Logger: s.log, MaxBody: serverMaxBody(f.maxMsg), AppendMemory: f.limits.appendMemory, ReadMemory: f.limits.readMemory,
		MaxConnsPerAddr: f.limits.conns, RefusalRate: f.limits.refusals, MaxLongPolls: f.limits.polls,
		MaxNonces: f.limits.userNonces, SpoolKeyNonces: f.limits.spoolNonces, MaxWait: f.limits.maxWait,
		MaxCheckpointBody: f.limits.maxCheckpoint, CheckpointMemory: f.limits.checkpointMemory,
		MemoryHeld: f.memoryHeld}
	if spoolKey != nil {
		cfg.SpoolKey = spoolKey.Public()
		if cfg.SpoolKeySuccession, cfg.SpoolKeyEarlier, err = spoolKeySuccession(store, spoolKey); err != nil {
			return err
		}
	}
	// Both stores keep the logs' usage; deliveries, over HTTP and LMTP,
	// are appended within the quota.
	quotas, ok := store.(spool.Quotas)
	if !ok {
		return fmt.Errorf("the %s store does not keep the logs' usage", f.storeKind)
	}
	cfg.Quota = f.quota
	cfg.OwnMargin = f.quotaMargin
	cfg.NewFormatsAfter = f.entryFormatAfter
	var deliveryLog deliver.Appender = store
	if f.quota > 0 {
		deliveryLog = spool.WithinQuota(quotas, f.quota)
	}
	lmtpOpts := deliver.LMTPOptions{Domains: splitList(f.lmtpDomains), RecipientDelimiter: f.lmtpDelimiter, MaxMessageBytes: f.maxMsg, Logger: s.log}
	f.lmtpLimits.apply(&lmtpOpts)
	lmtpOpts.MemoryHeld = f.memoryHeld
	if f.metricsAddr != "" {
		if s.mon, err = s.startMetrics(f.metricsAddr, store, quotas, f.quota, errc); err != nil {
			return err
		}
		cfg.Metrics = s.mon.spool.HTTP()
		lmtpOpts.Metrics = s.mon.spool.LMTP()
		deliveryLog = s.mon.spool.TimeAppends(deliveryLog)
	}
	if f.pprofAddr != "" {
		if s.pprof, err = startPprof(f.pprofAddr, errc); err != nil {
			return err
		}
	}
	defer startGiveBack()() // memreturn.go
	var d *deliver.Deliverer
	if f.lmtpAddr != "" {
		lmtpOpts.Hostname, _ = os.Hostname()
		d = &deliver.Deliverer{Log: deliveryLog, SpoolKey: spoolKey, Users: users, MaxMessageBytes: f.maxMsg}
		if f.entryFormat != "2" {
			d.Chains = entry.NewChains(0)
		}
	}
	srv := newSpoolServer(cfg, d, lmtpOpts, s.log)
	if d != nil && f.entryFormat == "auto" {
		d.Chained = srv.api.SealsVersion3
	}
	srv.http.ReadTimeout, srv.http.IdleTimeout = 10*time.Minute, 2*time.Minute
	if s.httpLn, err = net.Listen("tcp", f.httpAddr); err != nil {
		return withHint(fmt.Errorf("listening on %s: %w", f.httpAddr, err), "pick another --port or --addr")
	}
	if tlsConfig != nil {
		s.httpLn = srv.api.ListenerTLS(s.httpLn, tlsConfig)
	} else {
		s.httpLn = srv.api.Listener(s.httpLn)
	}
	if f.lmtpAddr != "" {
		if s.lmtpLn, err = net.Listen("tcp", f.lmtpAddr); err != nil {
			hint := "pick another --lmtp address"
			var ae *net.AddrError
			if errors.As(err, &ae) {
				hint = "--lmtp takes HOST:PORT, such as 127.0.0.1:24 (localhost only) or :24 (every interface)"
			}
			return withHint(fmt.Errorf("listening for LMTP on %s: %w", f.lmtpAddr, err), hint)
		}
	}
	srv.serve(s.httpLn, s.lmtpLn, tlsConfig, errc)
	s.logStart(f, users, spoolKey)
	notifyReady(s.e, s.log)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	failure := s.waitForStop(sigs, errc, users)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = srv.shutdown(ctx)
	s.httpLn, s.lmtpLn = nil, nil
	s.mon.close()
	s.mon = nil
	if err != nil {
		s.log.Warn("requests still in flight at the end of the grace period were cut", "err", err)
	}
	cerr := s.store.Close()
	s.store = nil
	if cerr != nil {
		return fmt.Errorf("closing the store: %w", cerr)
	}
	s.log.Info("stopped")
	return failure
}

// waitForStop reloads users on SIGHUP until SIGTERM, SIGINT or a listener
// failure (returned).
func (s *serverRun) waitForStop(sigs <-chan os.Signal, errc <-chan error, users users) error {
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				users.Reload() // logs its outcome; a failure keeps the old table
				continue
			}
			s.log.Info("shutting down", "signal", sig.String(), "grace", shutdownGrace)
			return nil
		case err := <-errc:
			s.log.Error("listener failed; shutting down", "err", err)
			return err
		}
	}
}

// replaceSpoolKey is replaceSpoolKey for the server: the replacement is
// logged once, at INFO, with both key ids; a store that records the new
// key already is told to need the flag no longer.
func (s *serverRun) replaceSpoolKey(st spool.Store, previous, pub keys.PublicKey, prevFile, file, where string) error {
	replaced, err := replaceSpoolKey(st, previous, pub, prevFile, file, where)
	switch {
	case err != nil:
		return err
	case replaced:
		s.log.Info("the spool key was replaced: the store's deliveries are signed by --spool-key's from now on; its logs are as they were",
			"spool_key_id", fmt.Sprintf("%x", pub.KeyID()), "previous_key_id", fmt.Sprintf("%x", previous.KeyID()), "store", where,
			"hint", "give the users the new spool.pub, and the old one for their devices' previous-spool-key (docs/OPERATING.md, \"Replacing the spool key\")")
	default:
		s.log.Info("the store runs with --spool-key's key already: --previous-spool-key may go (the store keeps the key it replaced)",
			"spool_key_id", fmt.Sprintf("%x", pub.KeyID()), "previous_key_id", fmt.Sprintf("%x", previous.KeyID()))
	}
	return nil
}

func (s *serverRun) logStart(f serverFlags, users users, spoolKey *keys.SecretKey) {
	scheme := "http"
	if f.tlsCert != "" {
		scheme = "https"
	}
	lmtp := "off"
	if s.lmtpLn != nil {
		lmtp = s.lmtpLn.Addr().String()
	}
	store := "sqlite:" + f.spoolDir
	if f.storeKind == "postgres" {
		store = "postgres:" + pgstore.Redact(f.dsn)
	}
	attrs := []any{"http", scheme + "://" + s.httpLn.Addr().String(), "lmtp", lmtp}
	if s.lmtpLn != nil { // else the server seals nothing
		attrs = append(attrs, "entry_format", f.entryFormat)
		if f.entryFormat == "auto" {
			attrs = append(attrs, "entry_format_after", f.entryFormatAfter)
		}
	}
	attrs = append(attrs, "version", shortVersion(), "store", store, "max_message_size", f.maxMsg, "quota", f.quota, "quota_margin", f.quotaMargin, "gc_percent", f.gcPercent)
	if s.mon != nil {
		attrs = append(attrs, "metrics", "http://"+s.mon.ln.Addr().String()+"/metrics")
	} else {
		attrs = append(attrs, "metrics", "off")
	}
	if users.TestMode() {
		attrs = append(attrs, "users", "TEST MODE ("+users.Path()+")")
	} else {
		attrs = append(attrs, "users", users.Path())
	}
	attrs = append(attrs, "user_count", users.Len())
	if spoolKey != nil {
		attrs = append(attrs, "spool_key_id", fmt.Sprintf("%x", spoolKey.Public().KeyID()))
	}
	s.log.Info("cspool server started", attrs...)
	if users.TestMode() {
		s.log.Warn("TEST MODE: anyone who reaches this server can claim any free user name; pass --users FILE in production")
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// sharedSessionsHint is the hint for pgstore.ErrSharedSessions.
const sharedSessionsHint = "the store needs a session of its own per connection: point --dsn at PostgreSQL itself, or at a PgBouncer database with pool_mode = session (docs/POSTGRES.md, \"Through PgBouncer\")"

// openStore opens the SQLite store in --spool-dir or the PostgreSQL store at
// --dsn.
func (s *serverRun) openStore(f serverFlags) (spool.Store, error) {
	if f.storeKind == "postgres" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := pgstore.Open(ctx, f.dsn, pgstore.Options{Logger: s.log})
		if errors.Is(err, pgstore.ErrSharedSessions) {
			return nil, withHint(err, sharedSessionsHint)
		}
		if err != nil {
			return nil, withHint(err, orNewerSchema(err, "check --dsn (postgres://USER@HOST:PORT/DATABASE) and that the server accepts this user"))
		}
		return st, nil
	}
	_, statErr := os.Stat(filepath.Join(f.spoolDir, sqlitestore.DBName))
	st, err := sqlitestore.Open(f.spoolDir, sqlitestore.Options{Logger: s.log})
	if err == nil && errors.Is(statErr, fs.ErrNotExist) {
		// A mistyped --spool-dir starts a new, empty spool, and LMTP
		// takes mail into it that no device will see; the devices say
		// the log was rolled back. Said where the operator looks first.
		abs, _ := filepath.Abs(f.spoolDir)
		s.log.Warn("made a new, empty spool: if this server's users have mail already, --spool-dir is mistyped and names another directory than their spool's",
			"dir", abs)
	}
	if errors.Is(err, spool.ErrFull) {
		return nil, withHint(err, freeSpaceHint(f.spoolDir, "nothing stored was lost, and the MTA keeps what it could not deliver meanwhile"))
	}
	if damaged := damagedSpool(err, f.spoolDir); damaged != nil {
		return nil, damaged
	}
	if err != nil {
		if hint := unwritableSpoolFile(f.spoolDir); hint != "" {
			return nil, withHint(err, hint)
		}
		return nil, withHint(err, orNewerSchema(err, "check that --spool-dir names a directory this user can write"))
	}
	return st, nil
}

// unwritableSpoolFile names the first of the spool's database files in dir
// (spool.db and SQLite's -wal and -shm beside it) that exists and that this
// process may not open for writing, with its owner and the command that
// gives it the database's owner and mode; "" when there is none. Such a
// file is put in place by another user, root copying a backup's
// spool.db-wal in (docs/OPERATING.md, "Restoring a backup"), and SQLite
// then says only "attempt to write a readonly database".
func unwritableSpoolFile(dir string) string {
	db := filepath.Join(dir, sqlitestore.DBName)
	for _, name := range []string{db, db + "-wal", db + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			continue
		}
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
			continue
		}
		owner := ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf(", owned by uid %d", st.Uid)
		}
		fix := fmt.Sprintf("chown %d:%d %s", os.Geteuid(), os.Getegid(), shellQuote(name))
		if name != db {
			fix = fmt.Sprintf("chown --reference=%s %s; chmod --reference=%s %s", shellQuote(db), shellQuote(name), shellQuote(db), shellQuote(name))
		}
		return fmt.Sprintf("%s (mode %04o%s) cannot be written by this process (uid %d): a file put in place by another user, root copying a backup in, say; give it to this user: %s",
			name, fi.Mode().Perm(), owner, os.Geteuid(), fix)
	}
	return ""
}

// usersFileHint is the hint for a users file at path that could not be
// loaded: its mode, or its absence, when that is what is wrong; otherwise
// def, about its lines.
func usersFileHint(err error, path, def string) string {
	var folder *keys.FolderWritableByAllError
	var owner *keys.OwnedByAnotherError
	switch {
	case errors.As(err, &owner):
		return "run, as root: chown root " + shellQuote(path) + " (a group that edits it keeps its write with chgrp GROUP " + shellQuote(path) + " && chmod g+w " + shellQuote(path) + "), then check that each line holds the key its user sent: its owner could have changed one"
	case errors.As(err, &folder):
		return "run: chmod o-w " + shellQuote(folder.Dir) + " (or keep the users file in a folder only root may write to, as /etc/cspool), then check that each line holds the key its user sent: anyone on this machine could have replaced the file"
	case errors.Is(err, keys.ErrSecretKeyListed):
		return "take the line out now, and treat that user's key as exposed: the user makes a new key pair with cspool gen-keys and sends the public key alone (its line cspool-pub-1:...), and a user who already has mail in the spool follows docs/OPERATING.md, \"Replacing a user's key\""
	case errors.Is(err, keys.ErrWritableByAll):
		return "run: chmod 644 " + shellQuote(path) + ", then check that each line holds the key its user sent: anyone on this machine could have changed one"
	case errors.Is(err, fs.ErrNotExist):
		return "check --users: it names the users file, one NAME PUBLIC-KEY line per user (docs/OPERATING.md)"
	}
	return def
}

// damagedSpool returns err with the damaged spool's hint when SQLite found
// the spool's database in dir damaged (SQLITE_CORRUPT or SQLITE_NOTADB:
// the file, not the folder), at the open or at the first statement that
// read the damaged pages; nil otherwise.
func damagedSpool(err error, dir string) error {
	if err == nil || !(strings.Contains(err.Error(), "malformed") || strings.Contains(err.Error(), "not a database")) {
		return nil
	}
	return withHint(err, fmt.Sprintf("the spool's database in %s is damaged (a failing disk, a copy taken while it was written, or another program's file): "+
		"keep it, and restore the spool from its last backup (docs/OPERATING.md, \"Restoring a backup\"); the users' devices then put back what they hold with cspool recover", dir))
}

// keepKeysIn checks the users file of a server of the PostgreSQL store
// against the user each key was last given by any server of the store
// (cspool_user_keys, userdb.Ledger), at start and at every reload, and
// records it there: each server reads a users file of its own, and one
// restarted on a file giving a user another user's key, or one whose
// file says otherwise than another's, took it.
func (s *serverRun) keepKeysIn(f serverFlags, db *userdb.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := userdb.OpenPG(ctx, f.dsn, 0, nil)
	if err != nil {
		return withHint(err, "check --dsn: the servers of the store keep there which user each key of their users files was last given")
	}
	s.pgUser = pg
	if err := db.UseLedger(ctx, pg); err != nil {
		if errors.Is(err, userdb.ErrKeyMoved) {
			return &exitError{withHint(err, "give each user the key its own gen-keys printed, in the users file of every server of the store; a key moves to another user only with its user renamed (the old name's line gone from every server's file)"), exNoPerm}
		}
		return withHint(err, "check --dsn: the servers of the store keep there which user each key of their users files was last given")
	}
	return nil
}

// openUsers opens the users file (--users wins), the PostgreSQL users table
// (--users-table), or test mode.
func (s *serverRun) openUsers(f serverFlags) (users, error) {
	switch {
	case f.usersFile != "":
		u, err := userdb.Load(f.usersFile, s.log)
		if errors.Is(err, keys.ErrSharedKey) {
			return nil, &exitError{withHint(err, "put each user's own public key on its line (the one its gen-keys printed): the later line was likely copied from the earlier one"), exNoPerm}
		}
		if err != nil {
			// Missing, unreadable, too open, another's, a bad line: fix
			// the file (77, as cspool deliver --users).
			return nil, &exitError{withHint(err, usersFileHint(err, f.usersFile, "each line of the users file is NAME PUBLIC-KEY, the public key the user's gen-keys printed (cspool-pub-1:..., never a secret key)")), exNoPerm}
		}
		if f.usersTable {
			s.log.Warn("--users and --users-table both given: using the users file", "file", f.usersFile)
		}
		if u.Len() == 0 {
			// Right for a new installation (docs/systemd/README.md
			// starts with an empty file), and else a mistake that the
			// users=0 of the line before hid: say what it does.
			s.log.Warn("the users file lists no user: every delivery is refused as for an unknown user (LMTP 550) and every device's request too, "+
				"until a line NAME PUBLIC-KEY is added and the server reloaded (systemctl reload, or SIGHUP)", "file", f.usersFile)
		}
		return u, nil
	case f.usersTable:
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		u, err := userdb.OpenPG(ctx, f.dsn, 0, s.log)
		if errors.Is(err, keys.ErrSharedKey) {
			return nil, withHint(err, "give each user its own public key (the one its gen-keys printed): UPDATE cspool_users SET public_key = '...' WHERE name = '...'")
		}
		if err != nil {
			return nil, withHint(err, "check --dsn; the table is created if missing: INSERT INTO cspool_users (name, public_key) VALUES (...)")
		}
		s.pgUser = u
		return u, nil
	}
	return userdb.OpenTestMode(f.spoolDir, s.log)
}
