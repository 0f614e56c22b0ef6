package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"cspool/internal/devicedb"
	"cspool/internal/loginguard"
	"cspool/internal/mailstore"
	"cspool/internal/outbox"
	"cspool/internal/statuspage"
	"cspool/internal/submit"
	"cspool/internal/syncer"
)

// Sending mail from the device (docs/SENDING.md): imap-server's flags for
// the SMTP submission listener and the smarthost, and what they start.

// relayPasswordEnv holds the smarthost password when no file is given.
const relayPasswordEnv = "CSPOOL_RELAY_PASSWORD"

// sendingFlags are imap-server's flags for sending.
type sendingFlags struct {
	smtpPort, smtpsPort                  *int
	smtpAddr, relay, relayUser           *string
	relayPasswordFile, relayPassword, ca *string
	identities                           listFlag
	backoff                              *time.Duration
	releaseOutbox                        releaseFlag
	args                                 []string // the command line, to tell a flag given there from one in --config
	configPath                           func() string
}

func addSendingFlags(fs *flagSet) *sendingFlags {
	f := &sendingFlags{
		smtpPort:          fs.Int("smtp-port", 1025, "SMTP submission port (sending, docs/SENDING.md)"),
		smtpAddr:          fs.String("smtp-addr", "127.0.0.1", "SMTP submission listen `address` ('' turns sending off; beyond localhost, give --tls-cert and --tls-key)"),
		smtpsPort:         fs.Int("smtps-port", 0, "SMTP submission port speaking TLS from the first byte (submissions, RFC 8314) on --smtp-addr; needs --tls-cert; 0: none"),
		relay:             fs.String("relay", "", "the smarthost to send through: smtps://`host:465` or smtp://host:587 (STARTTLS required); none: sending is off"),
		relayUser:         fs.String("relay-user", "", "the login `name` at the smarthost (none: no AUTH)"),
		relayPasswordFile: fs.String("relay-password-file", "", "a `file` holding the smarthost password (mode 0600); else $"+relayPasswordEnv+", else --relay-password"),
		relayPassword:     fs.String("relay-password", "", "the smarthost `password`; meant for a config file readable by its owner only (on the command line others can see it)"),
		ca:                fs.String("relay-ca", "", "PEM `file` of CA certificates to verify the smarthost with (default: the system's)"),
		backoff:           fs.Duration("relay-backoff", time.Minute, "the wait after a first temporary failure; it doubles with each further one, up to an hour"),
	}
	fs.Var(&f.releaseOutbox, "release-outbox", "=NAME: relay the messages held because the outbox (DB.outbox) was copied or restored from another machine or file, "+
		"NAME being the hold's name cspool status gives; first check that the outbox they came from did not send them (docs/SENDING.md); "+
		"releases that hold only, never a later one; command line only")
	fs.Var(&f.identities, "identity", "an `address` the user sends as (MAIL FROM and From must be one); repeat it or give a comma-separated list")
	f.configPath = func() string {
		if fs.config == nil {
			return ""
		}
		return *fs.config
	}
	return f
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ", ") }

func (l *listFlag) Set(v string) error {
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*l = append(*l, a)
		}
	}
	return nil
}

// onCommandLine reports whether --name was given in args (as opposed to
// the config file).
func onCommandLine(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// releaseFlag is --release-outbox=NAME, NAME the hold's name (cspool
// status, "Outbox held"). Given bare, the form from before holds were
// named, it is "true", which names no hold: nothing is released, and the
// log says which name to give. "false" and "" are none.
type releaseFlag struct{ name string }

func (f *releaseFlag) String() string {
	if f == nil {
		return ""
	}
	return f.name
}

func (f *releaseFlag) Set(s string) error {
	if s == "false" {
		s = ""
	}
	f.name = s
	return nil
}

// IsBoolFlag lets --release-outbox stand alone, as it did before it took
// a name, so that a unit or script still giving it starts.
func (f *releaseFlag) IsBoolFlag() bool { return true }

// checkPrivate refuses a file holding a secret that group or others can
// read, like the IMAP password file.
func checkPrivate(path, what string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return withHint(fmt.Errorf("%s %s is readable by its group or others (mode %04o)", what, path, info.Mode().Perm()),
			"run: chmod 600 "+path)
	}
	return nil
}

// readRelayPasswordFile reads the smarthost password from the first line
// of p, a file only its owner may read.
func readRelayPasswordFile(p string) (string, error) {
	if err := checkPrivate(p, "relay password file"); err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("reading relay password file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	if pw = strings.TrimRight(pw, "\r"); pw == "" {
		return "", fmt.Errorf("relay password file %s is empty", p)
	}
	if err := notKeyFile(p, "relay password file", strings.TrimSpace(pw)); err != nil {
		return "", err
	}
	return pw, nil
}

// relayPasswordFrom finds the smarthost password: the file, the
// environment, or the flag (warned about on the command line, and refused
// from a config file others can read).
func (f *sendingFlags) relayPasswordFrom(e *env, log *slog.Logger) (string, error) {
	if p := *f.relayPasswordFile; p != "" {
		pw, err := readRelayPasswordFile(p)
		if err != nil {
			// A file the configuration names: fix it (77).
			return "", &exitError{err, exNoPerm}
		}
		return pw, nil
	}
	if pw := e.getenv(relayPasswordEnv); pw != "" {
		return pw, nil
	}
	if *f.relayPassword == "" {
		return "", nil
	}
	if onCommandLine(f.args, "relay-password") {
		log.Warn("--relay-password on the command line can be read by other users of this machine; use --relay-password-file, $" +
			relayPasswordEnv + " or a config file of mode 0600")
		return *f.relayPassword, nil
	}
	if cfg := f.configPath(); cfg != "" {
		if err := checkPrivate(cfg, "config file (it holds relay-password)"); err != nil {
			return "", err
		}
	}
	return *f.relayPassword, nil
}

// sendingSetup is what the daemon hands to sending.
type sendingSetup struct {
	dbPath     string
	key        *devicedb.Key // encrypts the outbox at rest
	store      *mailstore.Store
	sync       *syncer.Syncer
	user, pw   string
	allowEmpty bool
	log        *slog.Logger
	tls        *tls.Config // STARTTLS and --smtps-port; nil: none
	stderr     io.Writer   // where a listener without TLS beyond localhost is warned about
	// releaseHeld names the hold whose messages are relayed: held because
	// the outbox was found copied or restored (outbox.Config.ReleaseHeld).
	releaseHeld string
	// beforeMessage, if set, runs before the outbox takes a message (a
	// first run keeps its database from then on, firstrun.go).
	beforeMessage func()
	// logins is the failed-login count shared with the daemon's other
	// listeners; nil: one of the listener's own.
	logins *loginguard.Tally
}

// sending is the running submission listener and outbox; nil when sending
// is off (every method of a nil *sending does nothing).
type sending struct {
	box   *outbox.Outbox
	srv   *submit.Server
	ln    net.Listener
	tlsLn net.Listener // submissions (implicit TLS), nil: none
	log   *slog.Logger
	ids   []string
	user  string
	relay string
	wg    sync.WaitGroup
	// unused, set by close: the outbox took no message in this run
	// (nothing queued, held, relayed, bounced or waiting to be filed).
	unused bool
}

// open checks the flags, opens the outbox (DB.outbox) and listens for
// submission. It returns nil when no --relay is given or --smtp-addr is
// empty.
func (f *sendingFlags) open(e *env, s sendingSetup) (*sending, error) {
	if *f.smtpAddr == "" {
		s.log.Info("sending is off: --smtp-addr is empty")
		return nil, nil
	}
	if *f.relay == "" {
		if len(f.identities) > 0 || *f.relayUser != "" {
			return nil, usagef("--identity and --relay-user need --relay (the smarthost to send through)")
		}
		s.log.Info("sending is off: no --relay given (docs/SENDING.md)")
		return nil, nil
	}
	relay, err := outbox.ParseRelayURL(*f.relay)
	if err != nil {
		return nil, usagef("--relay: %v", err)
	}
	if len(f.identities) == 0 {
		return nil, usagef("--relay needs at least one --identity (an address you send as)")
	}
	if _, err := submit.IdentitySet(f.identities); err != nil {
		return nil, usagef("--identity: %v", err)
	}
	if *f.relayUser != "" {
		relay.Username = *f.relayUser
		if relay.Password, err = f.relayPasswordFrom(e, s.log); err != nil {
			return nil, err
		}
		if relay.Password == "" {
			return nil, withHint(fmt.Errorf("--relay-user %s has no password", *f.relayUser),
				"give --relay-password-file, $"+relayPasswordEnv+" or relay-password in a config file")
		}
	}
	if *f.ca != "" {
		b, err := os.ReadFile(*f.ca)
		if err != nil {
			return nil, fmt.Errorf("reading --relay-ca: %w", err)
		}
		relay.RootCAs = x509.NewCertPool()
		if !relay.RootCAs.AppendCertsFromPEM(b) {
			return nil, usagef("--relay-ca %s holds no PEM certificate", *f.ca)
		}
	}
	if *f.backoff <= 0 {
		return nil, usagef("--relay-backoff must be positive")
	}
	if f.releaseOutbox.name != "" && !onCommandLine(f.args, "release-outbox") {
		// In a config file it would release every later copy unseen.
		return nil, usagef("release-outbox is for the command line only, once: remove it from %s", f.configPath())
	}
	s.releaseHeld = f.releaseOutbox.name
	if *f.smtpsPort != 0 && s.tls == nil {
		return nil, usagef("--smtps-port needs --tls-cert and --tls-key")
	}
	if *f.smtpsPort < 0 || *f.smtpsPort > 65535 {
		return nil, usagef("--smtps-port %d: want a port number, or 0 for none", *f.smtpsPort)
	}
	if s.tls == nil && !isLoopback(*f.smtpAddr) {
		cleartextWarning(s.stderr, s.log, "SMTP submission", *f.smtpAddr, "--smtp-addr")
	}
	snd, err := startSending(s, relay, f.identities, *f.smtpAddr, *f.smtpPort, *f.backoff)
	if err != nil || *f.smtpsPort == 0 {
		return snd, err
	}
	tlsAddr := net.JoinHostPort(*f.smtpAddr, strconv.Itoa(*f.smtpsPort))
	if snd.tlsLn, err = listenLocal(*f.smtpAddr, *f.smtpsPort); err != nil {
		snd.ln.Close()
		snd.srv.Close()
		snd.box.Close()
		return nil, withHint(fmt.Errorf("listening for SMTP submission over TLS on %s: %w", tlsAddr, err),
			"pick another --smtps-port, or stop the program already using it")
	}
	return snd, nil
}

// startSending opens the outbox and listens for submission (the quickstart
// calls it directly, with its own relay).
func startSending(s sendingSetup, relay outbox.Relay, identities []string, addr string, port int, backoff time.Duration) (*sending, error) {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	box, err := outbox.Open(outbox.Config{Path: s.dbPath + ".outbox", Key: s.key, Store: s.store, Log: s.sync, Relay: relay,
		Hostname: host, MinBackoff: backoff, Logger: s.log, ReleaseHeld: s.releaseHeld})
	if err != nil {
		return nil, withHint(err, outboxHint(s.dbPath, err))
	}
	srv, err := submit.New(submit.Config{User: s.user, Password: s.pw, AllowEmptyPassword: s.allowEmpty,
		Identities: identities, Queue: keepFirstQueue{box, s.beforeMessage}, Hostname: host, Logger: s.log, TLS: s.tls,
		Login: loginguard.Limits{Tally: s.logins}})
	if err != nil {
		box.Close()
		return nil, err
	}
	listenAddr := net.JoinHostPort(addr, strconv.Itoa(port))
	ln, err := listenLocal(addr, port)
	if err != nil {
		box.Close()
		return nil, withHint(fmt.Errorf("listening for SMTP on %s: %w", listenAddr, err),
			"pick another --smtp-port, or turn sending off with --smtp-addr ''")
	}
	return &sending{box: box, srv: srv, ln: ln, log: s.log, ids: identities, user: s.user, relay: relay.String()}, nil
}

// submitter is what the IMAP server submits through: the syncer, with a
// client's own copy of a message just sent kept from doubling in Sent.
func (s *sending) submitter(sy *syncer.Syncer) outbox.Submitter {
	if s == nil {
		return sy
	}
	return s.box.SentFilter(sy)
}

// run serves submission and runs the outbox until ctx is done.
func (s *sending) run(ctx context.Context) {
	if s == nil {
		return
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(s.ln); err != nil {
			s.log.Error("SMTP submission stopped", "err", err)
		}
	}()
	if s.tlsLn != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.srv.ServeTLS(s.tlsLn); err != nil {
				s.log.Error("SMTP submission over TLS stopped", "err", err)
			}
		}()
	}
	go func() {
		defer s.wg.Done()
		if err := s.box.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("outbox stopped", "err", err)
		}
	}()
}

// close stops the listener (run's ctx must be done or cancelled next) and
// closes the outbox once its loops ended.
func (s *sending) close(cancel context.CancelFunc) {
	if s == nil {
		return
	}
	s.srv.Close()
	cancel()
	s.wg.Wait()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	st, err := s.box.Status(ctx)
	stop()
	s.unused = err == nil && st.Queued == 0 && st.Held == 0 && st.ToFile == 0 && st.Relayed == 0 && st.Bounced == 0
	s.box.Close()
}

// report gives the outbox's state to the status page and `cspool status`;
// nil when sending is off.
func (s *sending) report() func(context.Context) (*statuspage.Outbox, error) {
	if s == nil {
		return nil
	}
	return func(ctx context.Context) (*statuspage.Outbox, error) {
		st, err := s.box.Status(ctx)
		if err != nil {
			return nil, err
		}
		return &statuspage.Outbox{Relay: st.Relay, Queued: st.Queued, Deferred: st.Deferred, Held: st.Held, Hold: st.Hold, Oldest: st.Oldest,
			NextTry: st.NextTry, ToFile: st.ToFile, LastError: st.LastError, Relayed: st.Relayed, Bounced: st.Bounced,
			LastSent: st.LastSent}, nil
	}
}

func (s *sending) printSettings(e *env) {
	if s == nil {
		return
	}
	host, port, _ := net.SplitHostPort(s.ln.Addr().String())
	w := e.stdout
	fmt.Fprintln(w, "SMTP settings for your mail client (sending):")
	fmt.Fprintf(w, "  server:   %s\n  port:     %s\n  security: %s\n", clientHost(host), port, connSecurity(s.ln.Addr(), s.srv.HasTLS()))
	if s.tlsLn != nil {
		_, tport, _ := net.SplitHostPort(s.tlsLn.Addr().String())
		fmt.Fprintf(w, "  smtps:    port %s, security SSL/TLS\n", tport)
	}
	fmt.Fprintf(w, "  user:     %s (the IMAP user and password)\n", s.user)
	fmt.Fprintf(w, "  relaying through %s as %s\n", s.relay, strings.Join(s.ids, ", "))
}

// outboxHint says what to do about an outbox that did not open. One
// encrypted with another key was told to check that the directory of
// --db is writable: left beside a new database when the old one was moved
// away alone, it stopped every start.
func outboxHint(dbPath string, err error) string {
	if errors.Is(err, devicedb.ErrWrongKey) {
		return fmt.Sprintf("%s.outbox was encrypted with another secret key than --user-key: pass the key this device has always used. "+
			"If %s was moved away for a new key, move %s.outbox with it: it may hold mail not sent yet, which only that key opens (docs/SENDING.md)",
			dbPath, dbPath, dbPath)
	}
	return "check that the directory of --db is writable"
}
