package main

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"cspool/internal/devicedb"
	"cspool/internal/imapd"
	"cspool/internal/statuspage"
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
(a file only its owner may open), else from --password (which every local
user can read in the process list: the daemon warns), else from the
environment variable CSPOOL_IMAP_PASSWORD, else it is generated on first start,
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
	devFlags := addDeviceFlags(fs, e, "the user `name` (the log's name on the spool and the IMAP login)")
	userName, dbPath, spoolURL := devFlags.user, devFlags.db, devFlags.spoolURL
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
	pprofAddr := fs.String("pprof-addr", "", "serve the Go runtime's profiles at http://ADDR/debug/pprof/ (a loopback address only, served to this process's user alone: they have no login); empty: off")
	memLimit := fs.String("memory-limit", defaultMemoryLimit, "soft `limit` on the Go runtime's memory (debug.SetMemoryLimit; units B, KiB, MiB, GiB; auto: 24 MiB and 32 bytes a log entry applied, the collector at GOGC 50 unless GOGC is set; off); left unset, a GOMEMLIMIT in the environment wins")
	send := addSendingFlags(fs)
	send.args = args
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *devFlags.maxMessage <= 0 {
		return usagef("--max-message-size must be positive")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if *imapsPort != 0 && *tlsCert == "" {
		return usagef("--imaps-port needs --tls-cert and --tls-key")
	}
	if *port < 0 || *port > 65535 {
		return usagef("--port %d: want a port number (0 picks a free one)", *port)
	}
	if *imapsPort < 0 || *imapsPort > 65535 {
		return usagef("--imaps-port %d: want a port number, or 0 for none", *imapsPort)
	}
	if *pprofAddr != "" {
		if err := checkPprofAddr(*pprofAddr); err != nil {
			return err
		}
	}
	limit, err := applyMemoryLimit(*memLimit, flagGiven(fs, "memory-limit"))
	if err != nil {
		return err
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
	userKey, spoolPub, prevPub, err := devFlags.loadKeys()
	if err != nil {
		return err
	}
	log := newLogger(e, *debug)
	// Before the password, which is kept beside the database.
	if err := checkDBFolder(*dbPath); err != nil {
		return err
	}
	if err := refuseForeign(*dbPath); err != nil {
		return err
	}
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

	dev, err := openDevice(e.stderr, device{user: *userName, userKey: userKey, spoolPub: spoolPub, previousSpoolPub: prevPub, spoolURL: *spoolURL, dbPath: *dbPath, log: log,
		dropUnread: true, maxMessage: *devFlags.maxMessage}, "a daemon for this database is running already; see it with: cspool status --db "+*dbPath)
	if err != nil {
		return err
	}
	defer dev.close()
	if err := dev.startSync(syncOptions{daemon: true, checkpointMin: *checkpointMin}); err != nil {
		return err
	}
	defer startGiveBack()() // memreturn.go
	if limit == 0 {
		lctx, stopLimit := context.WithCancel(context.Background())
		defer stopLimit()
		go followMemoryLimit(lctx, func() uint64 { return dev.sync.Status().Position }, autoInterval)
	}
	var outboxKey *devicedb.Key
	if !benchPlaintext {
		k := devicedb.Key(userKey.DatabaseKey("outbox"))
		outboxKey = &k
	}
	outboxNew := dev.firstRunOutbox()
	snd, err := send.open(e, sendingSetup{dbPath: *dbPath, key: outboxKey, store: dev.store, sync: dev.sync, user: *userName, pw: pw,
		allowEmpty: allowEmpty, log: log, tls: tlsConfig, stderr: e.stderr, beforeMessage: dev.keep, logins: dev.loginTally()})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer func() {
		snd.close(stop)
		if outboxNew && snd != nil && snd.unused {
			// Removed with the database, if that goes (device.close).
			dev.dropWith(*dbPath + ".outbox")
		}
	}()
	if err := dev.newIMAP(imapd.Config{Submit: keepFirst{snd.submitter(dev.sync), dev.keep}, Password: pw, MaxMessageBytes: *devFlags.maxMessage, AllowEmptyPassword: allowEmpty, TLS: tlsConfig}); err != nil {
		return err
	}

	listenAddr := net.JoinHostPort(*addr, strconv.Itoa(*port))
	ln, err := listenLocal(*addr, *port)
	if err != nil {
		return withHint(fmt.Errorf("listening for IMAP on %s: %w", listenAddr, err), "pick another --port, or stop the daemon already using it")
	}
	var tlsLn net.Listener
	if *imapsPort != 0 {
		imapsAddr := net.JoinHostPort(*addr, strconv.Itoa(*imapsPort))
		if tlsLn, err = listenLocal(*addr, *imapsPort); err != nil {
			ln.Close()
			return withHint(fmt.Errorf("listening for IMAPS on %s: %w", imapsAddr, err), "pick another --imaps-port, or stop the program already using it")
		}
	}
	collector := dev.collector(ln.Addr(), ipw, snd)
	stopStatus, page, err := startStatusPage(statusPageConfig{
		addr: *statusAddr, required: flagGiven(fs, "status-addr"), source: collector,
		user: *userName, password: pw, allowEmpty: allowEmpty, log: log, stderr: e.stderr, logins: dev.loginTally(),
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
	pos, _ := dev.store.Position(context.Background())
	status := *statusAddr
	if status == "" {
		status = "off"
	}
	imapsText := "off"
	if tlsLn != nil {
		imapsText = tlsLn.Addr().String()
	}
	log.Info("cspool imap-server started", "imap", ln.Addr().String(), "imaps", imapsText, "starttls", tlsConfig != nil,
		"status_page", status, "user", *userName, "db", *dbPath, "position", pos, "spool", *spoolURL, "memory_limit", memoryLimitText(limit), "version", shortVersion())
	printSettings(e, ln.Addr(), tlsLn, tlsConfig != nil, *userName, ipw, *dbPath, page)
	snd.printSettings(e)
	notifyReady(e, log)

	failed := dev.serve(ctx, ln, tlsLn)
	snd.run(ctx)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-failed:
	case runErr = <-pprofErr:
	}
	stop()
	dev.stop()
	return runErr
}

func printSettings(e *env, addr net.Addr, tlsLn net.Listener, starttls bool, user string, pw imapPassword, dbPath string, page statuspage.PageState) {
	host, port, _ := net.SplitHostPort(addr.String())
	w := e.stdout
	fmt.Fprintln(w, "IMAP settings for your mail client:")
	fmt.Fprintf(w, "  server:   %s\n  port:     %s\n  security: %s\n", clientHost(host), port, connSecurity(addr, starttls))
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

// clientHost is the server a mail client is told to use for a listener on
// host. A wildcard (--addr 0.0.0.0, which the listener reports as "::")
// names no machine a client could reach: it was printed as "server: ::".
func clientHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "127.0.0.1 on this machine; from another, this machine's name or address (listening on every address)"
	}
	return host
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

// loadServerTLS reads the certificate and key of a command's listeners
// (the device's IMAP and submission, cspool server's HTTP API); nil
// without them. They are read once, at start. A key file every user of the
// machine may read is refused, as a secret key file of cspool's is: whoever
// reads it can pose as the server (a group's read, as Debian's ssl-cert
// group has it, is the operator's choice).
func loadServerTLS(certFile, keyFile string) (*tls.Config, error) {
	c, err := loadServerTLSFiles(certFile, keyFile)
	if err != nil {
		// A key file, as cspool's own: fix it (77).
		return nil, &exitError{err, exNoPerm}
	}
	return c, nil
}

func loadServerTLSFiles(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	// The two files given the other way round: name the swap before the
	// mode, which a certificate (mode 0644) would fail with a hint to
	// chmod it.
	if pemHolds(certFile, "PRIVATE KEY") && pemHolds(keyFile, "CERTIFICATE") {
		return nil, withHint(fmt.Errorf("TLS certificate %s holds a private key, and TLS key %s a certificate", certFile, keyFile),
			fmt.Sprintf("--tls-cert and --tls-key look swapped: give --tls-cert %s --tls-key %s", keyFile, certFile))
	}
	if info, err := os.Stat(keyFile); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o004 != 0 {
		return nil, withHint(fmt.Errorf("TLS key %s is readable by every user of this machine (mode %04o)", keyFile, info.Mode().Perm()),
			fmt.Sprintf("whoever reads it can pose as this server: chmod 600 %s (or 640 for a group the server's user is in)", keyFile))
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, withHint(fmt.Errorf("loading TLS certificate %s and key %s: %w", certFile, keyFile, err),
			"both files must be PEM; the key must match the certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

// pemHolds reports whether file's first PEM block is of a type ending in
// kind ("CERTIFICATE", or "PRIVATE KEY" for PKCS#8, PKCS#1 and SEC 1 keys).
func pemHolds(file, kind string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	blk, _ := pem.Decode(b)
	return blk != nil && strings.HasSuffix(blk.Type, kind)
}

// cleartextWarning says, on standard error and in the log, that a listener
// on another address than a loopback one has no TLS: logins (and all mail)
// cross the network in the clear.
func cleartextWarning(w io.Writer, log *slog.Logger, what, addr, flag string) {
	fmt.Fprintf(w, "cspool: warning: %s listens on %s without TLS: its password and all mail cross the network in the clear, readable by anyone on the path\n", what, addr)
	fmt.Fprintf(w, "cspool: hint: give --tls-cert and --tls-key (docs/IMAP.md, \"TLS\"), or keep %s on 127.0.0.1\n", flag)
	log.Warn(what+" listens beyond localhost without TLS: passwords and mail cross the network in the clear", "addr", addr)
}
