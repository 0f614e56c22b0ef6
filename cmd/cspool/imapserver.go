package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/devicedb"
	"cspool/internal/imapd"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/statuspage"
	"cspool/internal/syncer"
)

func runIMAPServer(e *env, args []string) error {
	fs := newFlagSet(e, "imap-server", "", `
Run the device daemon: keep a local copy of the user's mailbox (an SQLite
database) in step with the spool, and serve it over IMAP to any mail client.

The daemon reads the user's log from the spool server, verifies every entry
(the spool key may only deliver into INBOX; the user key may do anything),
applies it to the database, and pushes new mail to idling clients at once.
Every change a client makes is sealed with the user key and appended to the
log, so the user's other devices see it too. Reading mail works offline.

The IMAP login is the user name. The password comes from --password-file
(a file only its owner may open), else from the environment variable
CSPOOL_IMAP_PASSWORD, else from --password (which every local user can read
in the process list: the daemon warns), else it is generated on first start,
stored next to the database (DB.password, mode 0600) and printed once. An
empty password needs an explicit --password ''. The daemon never prints or
logs the password: it says which file holds it.

IMAP listens on --addr, 127.0.0.1 by default. To reach it from another
machine, give it a certificate with --tls-cert and --tls-key: the --port
then offers STARTTLS and takes logins from other machines only after it
(LOGINDISABLED before), and --imaps-port, if given, speaks TLS from the
first byte (docs/IMAP.md, "TLS"). Without them, an --addr that is not a
loopback address is warned about: the password would cross the network in
the clear.`, `
cspool imap-server --user-key=user.sec --spool-key=spool.pub --user-public-key=user.pub
cspool imap-server --user alice --db ~/.cspool/alice.db --spool-server https://spool.example.org
cspool imap-server --config ~/.config/cspool/alice.conf --addr 0.0.0.0 --imaps-port 1993 \
    --tls-cert /etc/ssl/laptop.pem --tls-key ~/.config/cspool/laptop.key`)
	dev := addDeviceFlags(fs, e, "the user `name` (the log's name on the spool and the IMAP login)")
	userName, dbPath, spoolURL := dev.user, dev.db, dev.spoolURL
	pwFlags := addPasswordFlags(fs)
	port := fs.Int("port", 1143, "IMAP port")
	addr := fs.String("addr", "127.0.0.1", "IMAP listen `address` (beyond localhost, give --tls-cert and --tls-key)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file` (PEM, the full chain) for IMAP (STARTTLS, --imaps-port) and SMTP submission")
	tlsKey := fs.String("tls-key", "", "TLS private key `file` (PEM) matching --tls-cert")
	imapsPort := fs.Int("imaps-port", 0, "IMAP port speaking TLS from the first byte (IMAPS, RFC 8314) on --addr; needs --tls-cert; 0: none")
	statusAddr := fs.String("status-addr", defaultStatusAddr, "status page `address` (host:port, see docs/STATUS.md; '' turns it off)")
	debug := fs.Bool("debug", false, "log debug detail")
	checkpointMin := fs.Int("checkpoint-min", 1000, "write a checkpoint (letting the spool compact the log) once this many entries, and more than the live messages, follow the last one; negative: never")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `file` when the daemon stops (go tool pprof FILE); empty: off")
	pprofAddr := fs.String("pprof-addr", "", "serve the Go runtime's profiles at http://ADDR/debug/pprof/ (a loopback address only: a heap profile holds decrypted mail); empty: off")
	send := addSendingFlags(fs)
	send.args = args
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if *imapsPort != 0 && *tlsCert == "" {
		return usagef("--imaps-port needs --tls-cert and --tls-key")
	}
	if *imapsPort < 0 || *imapsPort > 65535 {
		return usagef("--imaps-port %d: want a port number, or 0 for none", *imapsPort)
	}
	if *pprofAddr != "" {
		host, _, err := net.SplitHostPort(*pprofAddr)
		if err != nil || !isLoopback(host) {
			return usagef("--pprof-addr %q: want a loopback host:port, such as 127.0.0.1:6060 (a heap profile holds decrypted mail)", *pprofAddr)
		}
	}
	tlsConfig, err := loadServerTLS(*tlsCert, *tlsKey)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		stopProfile, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	userKey, spoolPub, err := dev.loadKeys()
	if err != nil {
		return err
	}
	log := newLogger(e, *debug)
	ipw, err := pwFlags.resolve(e, fs, *dbPath, log)
	if err != nil {
		return err
	}
	pw, allowEmpty := ipw.value, ipw.explicit && ipw.value == ""
	if allowEmpty {
		log.Warn("IMAP login accepts an empty password: anyone who can reach the port can read this mailbox", "addr", *addr)
	}
	if tlsConfig == nil && !isLoopback(*addr) {
		cleartextWarning(e.stderr, log, "IMAP", *addr, "--addr")
	}

	store, closeStore, err := openDeviceStore(e.stderr, *dbPath, "a daemon for this database is running already; see it with: cspool status --db "+*dbPath, userKey)
	if err != nil {
		return err
	}
	defer closeStore()
	client, err := api.NewClient(*spoolURL, *userName, userKey, nil)
	if err != nil {
		return usagef("--spool-server: %v", err)
	}
	// The IMAP server hears of every applied batch; it exists before the
	// sync loop starts, so the callback never sees a nil server.
	var srv *imapd.Server
	ix := newIndexer(store, log)
	sy, err := syncer.New(syncer.Config{
		User: *userName, UserKey: userKey, SpoolKey: spoolPub, Source: client, Store: store,
		Logger: log, OnApplied: func(r *mailstore.Result) { srv.Applied(r); ix.applied() },
		Permanent: api.Hint, Unreachable: spoolUnreachable, CheckpointMin: *checkpointMin, KeepDir: keptDir(*dbPath),
	})
	if err != nil {
		return err
	}
	var outboxKey *devicedb.Key
	if !benchPlaintext {
		k := devicedb.Key(userKey.DatabaseKey("outbox"))
		outboxKey = &k
	}
	snd, err := send.open(e, sendingSetup{dbPath: *dbPath, key: outboxKey, store: store, sync: sy, user: *userName, pw: pw,
		allowEmpty: allowEmpty, log: log, tls: tlsConfig, stderr: e.stderr})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer snd.close(stop)
	srv, err = imapd.New(imapd.Config{
		Store: store, Submit: snd.submitter(sy), User: *userName, Password: pw, AllowEmptyPassword: allowEmpty,
		Logger: log, TLS: tlsConfig,
		Alert: func() string { return sy.Status().Alert() },
	})
	if err != nil {
		return err
	}

	listenAddr := net.JoinHostPort(*addr, strconv.Itoa(*port))
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return withHint(fmt.Errorf("listening for IMAP on %s: %w", listenAddr, err), "pick another --port, or stop the daemon already using it")
	}
	var tlsLn net.Listener
	if *imapsPort != 0 {
		imapsAddr := net.JoinHostPort(*addr, strconv.Itoa(*imapsPort))
		if tlsLn, err = net.Listen("tcp", imapsAddr); err != nil {
			ln.Close()
			return withHint(fmt.Errorf("listening for IMAPS on %s: %w", imapsAddr, err), "pick another --imaps-port, or stop the program already using it")
		}
	}
	collector := newStatusCollector(sy, store, ln.Addr(), *userName, ipw, *spoolURL)
	collector.Outbox = snd.report()
	collector.Search = func(ctx context.Context) (*statuspage.SearchIndex, error) {
		n, err := store.UnindexedCount(ctx)
		if err != nil {
			return nil, err
		}
		return &statuspage.SearchIndex{Unindexed: n}, nil
	}
	stopStatus, page, err := startStatusPage(statusPageConfig{
		addr: *statusAddr, required: flagGiven(fs, "status-addr"), source: collector,
		user: *userName, password: pw, allowEmpty: allowEmpty, log: log,
	})
	if err != nil {
		ln.Close()
		if tlsLn != nil {
			tlsLn.Close()
		}
		return err
	}
	defer stopStatus()
	collector.Page = page
	stopSocket, err := startControlSocket(*dbPath, collector, log)
	if err != nil {
		ln.Close()
		if tlsLn != nil {
			tlsLn.Close()
		}
		return err
	}
	defer stopSocket()
	pprofErr := make(chan error, 1)
	if *pprofAddr != "" {
		ps, err := startPprof(*pprofAddr, pprofErr)
		if err != nil {
			ln.Close()
			if tlsLn != nil {
				tlsLn.Close()
			}
			return err
		}
		defer ps.Close()
	}
	pos, _ := store.Position(context.Background())
	status := *statusAddr
	if status == "" {
		status = "off"
	}
	imapsText := "off"
	if tlsLn != nil {
		imapsText = tlsLn.Addr().String()
	}
	log.Info("cspool imap-server started", "imap", ln.Addr().String(), "imaps", imapsText, "starttls", tlsConfig != nil,
		"status_page", status, "user", *userName, "db", *dbPath, "position", pos, "spool", *spoolURL)
	printSettings(e, ln.Addr(), tlsLn, tlsConfig != nil, *userName, ipw, *dbPath, page)
	snd.printSettings(e)
	notifyReady(e, log)

	go ix.run(ctx)
	syncDone := make(chan error, 1)
	go func() { syncDone <- sy.Run(ctx) }()
	serveDone := make(chan error, 2)
	go func() { serveDone <- srv.Serve(ln) }()
	if tlsLn != nil {
		go func() { serveDone <- srv.ServeTLS(tlsLn) }()
	}
	snd.run(ctx)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-syncDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			runErr = fmt.Errorf("sync stopped: %w", err)
		}
	case err := <-serveDone:
		runErr = fmt.Errorf("IMAP server stopped: %w", err)
	case runErr = <-pprofErr:
	}
	stop()
	srv.Close()
	select {
	case <-syncDone:
	case <-time.After(5 * time.Second):
		log.Warn("sync loop did not stop within 5s")
	}
	return runErr
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

func newLogger(e *env, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

func printSettings(e *env, addr net.Addr, tlsLn net.Listener, starttls bool, user string, pw imapPassword, dbPath string, page statuspage.PageState) {
	host, port, _ := net.SplitHostPort(addr.String())
	w := e.stdout
	fmt.Fprintln(w, "IMAP settings for your mail client:")
	fmt.Fprintf(w, "  server:   %s\n  port:     %s\n  security: %s\n", host, port, connSecurity(addr, starttls))
	if tlsLn != nil {
		_, tport, _ := net.SplitHostPort(tlsLn.Addr().String())
		fmt.Fprintf(w, "  imaps:    port %s, security SSL/TLS\n", tport)
	}
	fmt.Fprintf(w, "  user:     %s\n", user)
	switch {
	case pw.generated:
		// Not the password itself: under a service manager this output
		// goes to a log (the journal) that others may read.
		fmt.Fprintf(w, "  password: in %s (generated now, mode 0600; show it with: cat %s)\n", pw.file, shellQuote(pw.file))
	case pw.value == "":
		fmt.Fprintln(w, "  password: (empty)")
	case pw.file != "":
		fmt.Fprintf(w, "  password: in %s\n", pw.file)
	default:
		fmt.Fprintln(w, "  password: as given")
	}
	switch {
	case page.URL != "":
		fmt.Fprintf(w, "  status:   %s (log in with the IMAP user and password)\n", page.URL)
	case page.Problem != "":
		fmt.Fprintf(w, "  status:   NOT SERVED: %s\n", page.Problem)
	}
	fmt.Fprintf(w, "  state:    cspool status --db %s\n", shellQuote(dbPath))
}

// loadDeviceKeys loads what a device needs: the user's secret key (checked
// against the public file given with it) and the spool's public key.
// deviceFlags are the flags of the commands that sync a device's database
// (imap-server, sync).
type deviceFlags struct {
	userKey, userPub, spoolPub, user, db, spoolURL *string
	pass                                           *passphraseSource
}

func addDeviceFlags(fs *flagSet, e *env, userHelp string) *deviceFlags {
	return &deviceFlags{
		userKey:  fs.String("user-key", "user.sec", "the user's secret key `file`"),
		userPub:  fs.String("user-public-key", "user.pub", "the user's public key `file` (must match --user-key)"),
		spoolPub: fs.String("spool-key", "spool.pub", "the spool's public key `file` (trusted for deliveries only)"),
		user:     fs.String("user", defaultUser(e), userHelp),
		db:       fs.String("db", "test.db", "local mail database `file`"),
		spoolURL: fs.String("spool-server", "http://localhost:3999", "spool server `URL`"),
		pass:     addPassphraseFlag(fs, e),
	}
}

// loadKeys checks the user name and loads the device's keys.
func (d *deviceFlags) loadKeys() (*keys.SecretKey, keys.PublicKey, error) {
	if err := keys.CheckUserName(*d.user); err != nil {
		return nil, keys.PublicKey{}, usagef("%v", err)
	}
	return loadDeviceKeys(d.pass, *d.userKey, *d.userPub, *d.spoolPub)
}

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
		return nil, keys.PublicKey{}, withHint(fmt.Errorf("%s is not the public half of %s", userPubPath, userKeyPath),
			"pass the .pub file that gen-keys wrote together with the .sec file")
	}
	spoolPub, err := deviceSpoolPub.loadPublic(spoolPubPath, "")
	if err != nil {
		return nil, keys.PublicKey{}, err
	}
	return userKey, spoolPub, nil
}

// openDeviceStore takes the database's lock (one process syncs a database
// at a time; busy explains who holds it) and opens the mail store,
// encrypted at rest with a key derived from userKey: a plaintext database
// (an earlier cspool's) is encrypted in place first, with a line on w.
// closeStore closes the store, then releases the lock.
func openDeviceStore(w io.Writer, dbPath, busy string, userKey *keys.SecretKey) (store *mailstore.Store, closeStore func(), err error) {
	unlock, err := lockDatabase(dbPath, busy)
	if err != nil {
		return nil, nil, err
	}
	store, err = openMailStore(w, dbPath, userKey, false)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return store, func() { store.Close(); unlock() }, nil
}

// openMailStore opens the device's mail store encrypted with userKey's
// database key; readOnly leaves a plaintext database unencrypted (the
// caller holds no lock on it).
func openMailStore(w io.Writer, dbPath string, userKey *keys.SecretKey, readOnly bool) (*mailstore.Store, error) {
	if benchPlaintext {
		fmt.Fprintf(w, "cspool: this build (cspool_bench_plaintext) keeps %s in plaintext, for benchmarks only\n", dbPath)
		return mailstore.OpenWith(dbPath, mailstore.Options{NoMigrate: readOnly})
	}
	key := devicedb.Key(userKey.DatabaseKey("mailstore"))
	migrating := false
	if st, err := devicedb.Inspect(dbPath, &key); err == nil && st == devicedb.Plaintext && !readOnly {
		migrating = true
		size := int64(0)
		if info, err := os.Stat(dbPath); err == nil {
			size = info.Size()
		}
		fmt.Fprintf(w, "cspool: encrypting %s in place (%s; once, and safe to interrupt)\n", dbPath, sizeText(size))
	}
	store, err := mailstore.OpenWith(dbPath, mailstore.Options{Key: &key, NoMigrate: readOnly})
	if err != nil {
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
		return fmt.Sprintf("%s was encrypted with another secret key: pass the --user-key this device has always used; a database made with a different key cannot be read, but it is only a copy: move it away and a new one syncs from the spool", dbPath)
	case errors.Is(err, devicedb.ErrEncrypted):
		return "the database is encrypted with the user's key: pass --user-key (and its passphrase)"
	}
	return "check that the directory of --db exists and is writable"
}

// connSecurity says what protects a plain listener's connections.
func connSecurity(addr net.Addr, starttls bool) string {
	host, _, _ := net.SplitHostPort(addr.String())
	switch {
	case starttls && isLoopback(host):
		return "STARTTLS (or none from this machine)"
	case starttls:
		return "STARTTLS (required from other machines)"
	case isLoopback(host):
		return "none (localhost only)"
	}
	return "NONE: the password crosses the network in the clear"
}

// loadServerTLS reads the certificate and key of the device's listeners;
// nil without them. They are read once, at start.
func loadServerTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, withHint(fmt.Errorf("loading TLS certificate %s and key %s: %w", certFile, keyFile, err),
			"both files must be PEM; the key must match the certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

// cleartextWarning says, on standard error and in the log, that a listener
// on another address than a loopback one has no TLS: logins (and all mail)
// cross the network in the clear.
func cleartextWarning(w io.Writer, log *slog.Logger, what, addr, flag string) {
	fmt.Fprintf(w, "cspool: warning: %s listens on %s without TLS: its password and all mail cross the network in the clear, readable by anyone on the path\n", what, addr)
	fmt.Fprintf(w, "cspool: hint: give --tls-cert and --tls-key (docs/IMAP.md, \"TLS\"), or keep %s on 127.0.0.1\n", flag)
	log.Warn(what+" listens beyond localhost without TLS: passwords and mail cross the network in the clear", "addr", addr)
}
