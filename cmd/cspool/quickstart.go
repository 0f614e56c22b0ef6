package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cspool/internal/api"
	"cspool/internal/deliver"
	"cspool/internal/devicedb"
	"cspool/internal/entry"
	"cspool/internal/imapd"
	"cspool/internal/keys"
	"cspool/internal/outbox"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/statuspage"
	"cspool/internal/userdb"
)

// The quickstart's default ports: the real daemons' defaults (HTTP 3999, IMAP
// 1143, LMTP 2424 in the docs) with a 1 in front, so a quickstart runs beside
// them.
const (
	quickstartHTTPPort = 13999
	quickstartIMAPPort = 11143
	quickstartLMTPPort = 12424
	quickstartSMTPPort = 11025
)

// Files in the quickstart's state folder (docs/QUICKSTART.md).
const (
	qsUserSec  = "user.sec"
	qsUserPub  = "user.pub"
	qsSpoolSec = "spool.sec"
	qsSpoolPub = "spool.pub"
	qsUsers    = "users"
	qsSpoolDir = "spool"
	qsMailDB   = "mail.db"
	qsWelcome  = "welcome-delivered"
)

func runQuickstart(e *env, args []string) error {
	fs := newFlagSet(e, "quickstart", "", `
Try cspool on one machine, in one process: create (on first run) keys for a
user and for the spool and a users file in a state folder, then run the spool
server (HTTP API and LMTP) and the IMAP daemon together, deliver a welcome
message, and print what to type into a mail client and how to deliver more
mail. Everything listens on 127.0.0.1 only.

Running it again with the same --dir reuses the same keys, password and
mailbox; the welcome message is delivered only once. Ctrl-C stops it. Remove
the folder to start afresh. A port of 0 picks a free one.`, `
go run ./cmd/cspool quickstart
cspool quickstart --dir /tmp/demo --user alice --imap-port 0`)
	dir := fs.String("dir", "./cspool-quickstart", "state `folder` (created if missing)")
	userName := fs.String("user", defaultUser(e), "the demo user's `name` (the IMAP login)")
	httpPort := fs.Int("http-port", quickstartHTTPPort, "spool server HTTP API port")
	imapPort := fs.Int("imap-port", quickstartIMAPPort, "IMAP port")
	lmtpPort := fs.Int("lmtp-port", quickstartLMTPPort, "LMTP port")
	smtpPort := fs.Int("smtp-port", quickstartSMTPPort, "SMTP submission port (mail to USER@localhost comes back through LMTP)")
	statusAddr := fs.String("status-addr", qsStatusAddr, "status page `address` (host:port; port 0 picks a free one; '' turns it off); given, it must be free")
	debug := fs.Bool("debug", false, "log every HTTP request and debug detail")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	for name, p := range map[string]int{"http-port": *httpPort, "imap-port": *imapPort, "lmtp-port": *lmtpPort, "smtp-port": *smtpPort} {
		if p < 0 || p > 65535 {
			return usagef("--%s %d out of range", name, p)
		}
	}
	userSet := false
	fs.Visit(func(f *flag.Flag) { userSet = userSet || f.Name == "user" })
	if err := keys.CheckUserName(*userName); err != nil {
		return usagef("--user: %v", err)
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return fmt.Errorf("state folder %s: %w", *dir, err)
	}
	q := &quickstart{e: e, dir: absDir, log: newLogger(e, *debug), debug: *debug, smtpPort: *smtpPort, smtpRequired: flagGiven(fs, "smtp-port"),
		statusAddr: *statusAddr, statusRequired: flagGiven(fs, "status-addr")}
	defer func() {
		q.close()
		q.log.Info("stopped")
	}()
	// Listen first: a second quickstart on the same ports fails here, before
	// it touches the state folder.
	if err := q.listen(*httpPort, *imapPort, *lmtpPort); err != nil {
		return err
	}
	if err := q.prepare(*userName, userSet); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer startGiveBack()() // memreturn.go
	return q.run(ctx)
}

// quickstart is one running quickstart: its state and what it must release.
type quickstart struct {
	e     *env
	dir   string
	log   *slog.Logger
	debug bool

	user              string
	userKey, spoolKey *keys.SecretKey

	httpLn, imapLn, lmtpLn net.Listener
	closers                []func()

	// smtpPort is the submission port; when it is taken and was not
	// given, the quickstart runs without sending.
	smtpPort     int
	smtpRequired bool
	send         *sending
	// statusAddr is where to serve the status page ("" = nowhere); when
	// it is taken and was not given, the quickstart runs without a page
	// and says so, rather than point at whatever answers there.
	statusAddr     string
	statusRequired bool
	statusLn       net.Listener         // nil: no page
	page           statuspage.PageState // where the status page is, or why not
}

func (q *quickstart) path(name string) string { return filepath.Join(q.dir, name) }

// close releases everything still held, last opened first.
func (q *quickstart) close() {
	for i := len(q.closers) - 1; i >= 0; i-- {
		q.closers[i]()
	}
	q.closers = nil
}

func (q *quickstart) listen(httpPort, imapPort, lmtpPort int) error {
	for _, l := range []struct {
		ln   *net.Listener
		port int
		what string
		flag string
	}{{&q.httpLn, httpPort, "the HTTP API", "http-port"}, {&q.imapLn, imapPort, "IMAP", "imap-port"}, {&q.lmtpLn, lmtpPort, "LMTP", "lmtp-port"}} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port))
		listen := func() (net.Listener, error) { return net.Listen("tcp", addr) }
		if l.ln == &q.imapLn {
			// A mail client may be given "localhost" (listenLocal).
			listen = func() (net.Listener, error) { return listenLocal("127.0.0.1", l.port) }
		}
		ln, err := listen()
		if err != nil {
			return withHint(fmt.Errorf("listening for %s on %s: %w", l.what, addr, err),
				fmt.Sprintf("is a quickstart already running? Stop it, or pick another port with --%s (0 picks a free one)", l.flag))
		}
		*l.ln = ln
		q.closers = append(q.closers, func() { ln.Close() })
	}
	// The status page: at --status-addr, which must be free; at the
	// default when it is free (it is a convenience here).
	ln, page, err := listenStatusPage(q.statusAddr, q.statusRequired, q.log)
	if err != nil {
		return err
	}
	if ln != nil {
		q.statusLn = ln
		q.closers = append(q.closers, func() { ln.Close() })
	}
	q.page = page
	return nil
}

// prepare creates the state folder's keys and users file, or loads them.
func (q *quickstart) prepare(userName string, userSet bool) error {
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return withHint(fmt.Errorf("creating state folder: %w", err), "pick a writable --dir")
	}
	if err := checkOwnFolder(q.dir); err != nil {
		return err
	}
	if users, err := keys.LoadUsers(q.path(qsUsers)); err == nil {
		stored := ""
		for name := range users {
			stored = name
		}
		if len(users) != 1 {
			return withHint(fmt.Errorf("users file %s lists %d users, want 1", q.path(qsUsers), len(users)),
				"this folder was not made by cspool quickstart: pick another --dir")
		}
		if userSet && stored != userName {
			return withHint(fmt.Errorf("state folder %s belongs to user %q, not %q", q.dir, stored, userName),
				"run with --user "+stored+", or pick another --dir for a new user")
		}
		userName = stored
	} else if !errors.Is(err, os.ErrNotExist) {
		return withHint(err, orNewerSchema(err, "remove the state folder to start afresh"))
	}
	q.user = userName
	var err error
	if q.userKey, err = loadOrMakeKey(q.path(qsUserSec), q.path(qsUserPub), "user key of "+userName); err != nil {
		return err
	}
	if q.spoolKey, err = loadOrMakeKey(q.path(qsSpoolSec), q.path(qsSpoolPub), "spool key"); err != nil {
		return err
	}
	line := fmt.Sprintf("# cspool users file: NAME PUBLIC-KEY\n%s %s\n", userName, q.userKey.Public())
	f, err := os.OpenFile(q.path(qsUsers), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		users, err := keys.LoadUsers(q.path(qsUsers))
		if err != nil {
			return withHint(err, "remove the state folder to start afresh")
		}
		if k, ok := users[userName]; !ok || !k.Equal(q.userKey.Public()) {
			return withHint(fmt.Errorf("users file %s does not hold the key in %s", q.path(qsUsers), q.path(qsUserPub)),
				fmt.Sprintf("%s and %s are not the key pair this folder was made with (its users file holds that pair's public key), and its mail is sealed to that pair: put it back; %s",
					q.path(qsUserSec), q.path(qsUserPub), qsAfresh))
		}
	case err != nil:
		return fmt.Errorf("creating users file: %w", err)
	default:
		_, werr := io.WriteString(f, line)
		if err := errors.Join(werr, f.Close()); err != nil {
			return fmt.Errorf("writing users file %s: %w", q.path(qsUsers), err)
		}
	}
	return nil
}

// loadOrMakeKey loads a key pair, or creates it if the secret file is
// missing.
func loadOrMakeKey(sec, pub, comment string) (*keys.SecretKey, error) {
	if _, err := os.Lstat(sec); errors.Is(err, os.ErrNotExist) {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			return nil, err
		}
		if err := keys.WriteFiles(k, sec, pub, keys.WriteOptions{Comment: comment + " (cspool quickstart)"}); err != nil {
			return nil, withHint(err, "remove the state folder to start afresh")
		}
		return k, nil
	}
	k, err := keys.LoadSecret(sec)
	if err != nil {
		return nil, withHint(err, qsKeyHint(sec, err))
	}
	p, err := keys.LoadPublic(pub)
	if err != nil || !p.Equal(k.Public()) {
		return nil, withHint(fmt.Errorf("%s is missing, damaged or not the public half of %s", pub, sec),
			fmt.Sprintf("put back the %s written with %s; %s", filepath.Base(pub), filepath.Base(sec), qsAfresh))
	}
	return k, nil
}

// qsAfresh ends a hint about a state folder's file: removing the folder
// is the last resort, since the mail is in it.
const qsAfresh = "only to start afresh, losing the mail kept in the folder, remove the state folder"

// qsKeyHint is the hint for a key of the state folder that does not load:
// a mode to set back, or the key to put back. The hint was to remove the
// folder whatever the cause, a chmod 644 too, which lost its mail.
func qsKeyHint(path string, err error) string {
	if errors.Is(err, keys.ErrTooOpen) {
		return fmt.Sprintf("run: chmod 600 %s (and check who could have read it)", shellQuote(path))
	}
	return fmt.Sprintf("put back the folder's own %s, made at its first run (another key does not fit the mail kept there); %s", filepath.Base(path), qsAfresh)
}

// run starts the spool server, the LMTP listener and the IMAP daemon, sends
// the welcome message once, prints the settings and waits for ctx.
func (q *quickstart) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	store, err := sqlitestore.Open(q.path(qsSpoolDir), sqlitestore.Options{Logger: q.log})
	if err != nil {
		return withHint(err, "remove the state folder to start afresh")
	}
	q.closers = append(q.closers, func() {
		if err := store.Close(); err != nil {
			q.log.Error("closing the spool store", "err", err)
		}
	})
	if err := keepSpoolKey(store, q.spoolKey.Public(), q.path(qsSpoolSec), q.path(qsSpoolDir),
		"this folder's spool key is not the one its mail was signed with (were spool.sec and spool.pub made anew?): put back the ones it had (its mail and its device trust that key only), or remove the folder to start afresh"); err != nil {
		return err
	}
	users, err := userdb.Load(q.path(qsUsers), q.log)
	if err != nil {
		return err
	}
	apiLog := slog.New(slog.DiscardHandler)
	if q.debug {
		apiLog = q.log
	}
	// The server's defaults: --entry-format auto, --entry-format-after.
	d := &deliver.Deliverer{Log: store, SpoolKey: q.spoolKey, Users: users, Chains: entry.NewChains(0)}
	srv := newSpoolServer(api.Config{Store: store, Users: users, SpoolKey: q.spoolKey.Public(), Logger: apiLog,
		NewFormatsAfter: defaultEntryFormatAfter}, d,
		deliver.LMTPOptions{Hostname: "localhost", RecipientDelimiter: "+", Logger: q.log}, q.log)
	d.Chained = srv.api.SealsVersion3
	errc := make(chan error, 4)
	srv.serve(q.httpLn, q.lmtpLn, nil, errc)
	q.closers = append(q.closers, func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := srv.shutdown(sctx); err != nil {
			q.log.Warn("requests still in flight were cut", "err", err)
		}
	})

	dev, failed, pw, err := q.startDevice(ctx)
	if err != nil {
		return err
	}
	q.closers = append(q.closers, func() {
		cancel()
		dev.stop()
	})
	pos, err := q.welcome(ctx, d)
	if err != nil {
		return err
	}
	q.awaitApplied(ctx, dev, pos)
	q.printSettings(pw)

	select {
	case <-ctx.Done():
		q.log.Info("shutting down")
		return nil
	case err := <-errc:
		q.log.Error("quickstart failed; shutting down", "err", err)
		return err
	case err := <-failed:
		q.log.Error("quickstart failed; shutting down", "err", err)
		return err
	}
}

// qsStatusAddr is the quickstart's status page: next to its IMAP port.
const qsStatusAddr = "127.0.0.1:11144"

// startDevice runs the device: the sync loop and the IMAP server on the
// quickstart's own spool, as cspool imap-server does, with sending that
// comes back through the quickstart's LMTP listener. The channel it
// returns gets the first failure (device.serve).
func (q *quickstart) startDevice(ctx context.Context) (dev *device, failed <-chan error, pw string, err error) {
	dbPath := q.path(qsMailDB)
	stored, err := storedPassword(dbPath)
	if err != nil {
		return nil, nil, "", err
	}
	pw = stored.value
	dev, err = openDevice(q.e.stderr, device{user: q.user, userKey: q.userKey, spoolPub: q.spoolKey.Public(),
		spoolURL: "http://" + q.httpLn.Addr().String(), dbPath: dbPath, log: q.log},
		"a quickstart or daemon is using this state folder already")
	if err != nil {
		return nil, nil, "", err
	}
	q.closers = append(q.closers, dev.close)
	if err := dev.startSync(syncOptions{daemon: true}); err != nil {
		return nil, nil, "", err
	}
	// Sending: mail goes back into the quickstart's own LMTP listener, so
	// a message to USER@localhost arrives in INBOX, and any other address
	// bounces.
	// The outbox holds each message relayed for a day: encrypted at rest
	// as the daemon's is.
	outboxKey := devicedb.Key(q.userKey.DatabaseKey("outbox"))
	q.send, err = startSending(sendingSetup{dbPath: dbPath, key: &outboxKey, store: dev.store, sync: dev.sync, user: q.user, pw: pw, log: q.log, logins: dev.loginTally()},
		outbox.Relay{Addr: q.lmtpLn.Addr().String(), LMTP: true}, []string{q.user + "@localhost"}, "127.0.0.1", q.smtpPort, time.Second)
	if err != nil && q.smtpRequired {
		return nil, nil, "", err
	}
	if err != nil {
		q.log.Warn("no SMTP submission: its port is taken; pass --smtp-port to choose one", "err", err)
		q.send = nil
	}
	sendCtx, stopSend := context.WithCancel(ctx)
	q.closers = append(q.closers, func() { q.send.close(stopSend) })
	if err := dev.newIMAP(imapd.Config{Submit: q.send.submitter(dev.sync), Password: pw}); err != nil {
		return nil, nil, "", err
	}
	// The status page, if its address was free (listen), and the control
	// socket for cspool status in any case.
	collector := dev.collector(q.imapLn.Addr(), stored, q.send)
	collector.Page = q.page
	if q.statusLn != nil {
		stopStatus, err := serveStatusPage(q.statusLn, statusPageConfig{source: collector, user: q.user, password: pw, log: q.log, stderr: q.e.stderr, logins: dev.loginTally()})
		if err != nil {
			return nil, nil, "", err
		}
		q.closers = append(q.closers, stopStatus)
	}
	stopSocket, err := startControlSocket(dbPath, collector, q.log)
	if err != nil {
		return nil, nil, "", err
	}
	q.closers = append(q.closers, stopSocket)
	// Sending starts last, as in cspool imap-server: the outbox files
	// through the sync loop, whose notices go to the IMAP server.
	failed = dev.serve(ctx, q.imapLn, nil)
	q.send.run(sendCtx)
	return dev, failed, pw, nil
}

// welcome delivers the welcome message unless the state folder records that
// it was delivered before, and returns its log position (0: not delivered
// now).
func (q *quickstart) welcome(ctx context.Context, d *deliver.Deliverer) (uint64, error) {
	marker := q.path(qsWelcome)
	if _, err := os.Stat(marker); err == nil {
		return 0, nil
	}
	pos, err := d.Deliver(ctx, q.user, welcomeMessage(q.user, time.Now()))
	if err != nil {
		return 0, fmt.Errorf("delivering the welcome message: %w", err)
	}
	note := fmt.Sprintf("welcome message delivered at log position %d, %s\n", pos, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(marker, []byte(note), 0o600); err != nil {
		return 0, fmt.Errorf("recording the welcome message: %w", err)
	}
	q.log.Info("welcome message delivered", "user", q.user, "pos", pos)
	return pos, nil
}

// welcomeWait bounds how long the settings wait for the device to apply
// the welcome message.
const welcomeWait = 5 * time.Second

// awaitApplied waits, up to welcomeWait, until the device has applied the
// log up to pos, so that a mail client set up from the settings printed
// next finds the welcome message in INBOX at its first login, not an empty
// INBOX for the moment the device's first read of the spool takes (up to
// a second, the spool server's start rule, docs/API.md §2). Past the bound
// the settings are printed anyway: the message shows when it is applied.
func (q *quickstart) awaitApplied(ctx context.Context, dev *device, pos uint64) {
	if pos == 0 {
		return
	}
	deadline := time.Now().Add(welcomeWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if at, err := dev.store.Position(ctx); err == nil && at >= pos {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func welcomeMessage(user string, now time.Time) []byte {
	var id [8]byte
	rand.Read(id[:])
	lines := []string{
		"From: cspool quickstart <quickstart@localhost>",
		"To: " + user + "@localhost",
		"Subject: Welcome to cspool",
		"Date: " + now.Format(time.RFC1123Z),
		"Message-ID: <welcome." + hex.EncodeToString(id[:]) + "@localhost>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Hello " + user + ",",
		"",
		"this message was sealed to your public key the moment it arrived and",
		"appended to your log on the spool server. The server cannot read it:",
		"only your key opens it. The IMAP daemon you are reading it through",
		"replayed the log into a local database.",
		"",
		"Flag it, move it, delete it: each change is appended to the log as a",
		"signed, encrypted command, so every device of yours sees the same.",
		"",
		"The terminal running 'cspool quickstart' shows how to deliver more mail.",
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

func (q *quickstart) printSettings(pw string) {
	w := q.e.stdout
	host, port, _ := net.SplitHostPort(q.imapLn.Addr().String())
	httpURL := "http://" + q.httpLn.Addr().String()
	fmt.Fprintf(w, "\ncspool quickstart is running; its state is in %s. Ctrl-C stops it.\n\n", q.dir)
	fmt.Fprintln(w, "Mail client settings (IMAP, no encryption: it listens on localhost only):")
	fmt.Fprintf(w, "  server:   %s\n  port:     %s\n  user:     %s\n  password: %s\n", host, port, q.user, pw)
	fmt.Fprintf(w, "  (the password is kept in %s; it stays the same on every run)\n\n", q.path(qsMailDB)+".password")
	if q.send != nil {
		host, port, _ := net.SplitHostPort(q.send.ln.Addr().String())
		fmt.Fprintln(w, "Sending (SMTP, the same user and password, no encryption):")
		fmt.Fprintf(w, "  server:   %s\n  port:     %s\n  from:     %s@localhost\n", host, port, q.user)
		fmt.Fprintf(w, "  (mail to %s@localhost comes back into INBOX; the copy goes to Sent)\n\n", q.user)
	}
	fmt.Fprintln(w, "Deliver more mail from a file (any message, e.g. one saved as .eml):")
	fmt.Fprintf(w, "  %s deliver --user=%s --user-key=%s --spool-key=%s --spool-server=%s < message.eml\n\n",
		selfCommand(), q.user, shellQuote(q.path(qsUserPub)), shellQuote(q.path(qsSpoolSec)), httpURL)
	fmt.Fprintf(w, "or over LMTP, as a mail server would (any domain; --to USER@anything):\n")
	fmt.Fprintf(w, "  swaks --protocol LMTP --server %s --to %s@localhost --from you@example.org\n\n", q.lmtpLn.Addr(), q.user)
	fmt.Fprintf(w, "Spool server HTTP API: %s (users file %s). LMTP: %s.\n", httpURL, q.path(qsUsers), q.lmtpLn.Addr())
	fmt.Fprintf(w, "\nSee this quickstart's state with: %s status --db %s\n", selfCommand(), shellQuote(q.path(qsMailDB)))
	fmt.Fprintln(w, "(it asks this quickstart, and no other, through the socket beside that database)")
	switch {
	case q.page.URL != "":
		fmt.Fprintf(w, "or in a browser at %s (the same user and password as IMAP).\n", q.page.URL)
	case q.page.Problem != "":
		fmt.Fprintf(w, "The status page is NOT SERVED: %s; choose a free address with --status-addr.\n", q.page.Problem)
	default:
		fmt.Fprintln(w, "The status page is off (--status-addr '').")
	}
}

// selfCommand is how to run this binary again from a shell: through go run
// when it was built by go run, else by its absolute path.
func selfCommand() string {
	exe, err := os.Executable()
	switch {
	case err != nil:
		return "cspool"
	case strings.Contains(exe, string(filepath.Separator)+"go-build"):
		return "go run ./cmd/cspool"
	case !strings.ContainsRune(os.Args[0], filepath.Separator):
		return "cspool"
	}
	return shellQuote(exe)
}

// checkOwnFolder refuses a state folder that another user owns or that
// others may write to: whoever can write there can remove, rename and
// replace the keys, the password file and the databases kept in it (a
// folder made first by another user in a shared /tmp, which the
// quickstart then took as it was).
func checkOwnFolder(dir string) error {
	return checkPrivateFolder(dir, "state folder "+dir, "the keys and files kept there",
		"pick a folder of your own with --dir (the default ./cspool-quickstart, or one under your home)")
}
