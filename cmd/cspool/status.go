package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"strings"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/statuspage"
	"cspool/internal/syncer"
)

// defaultStatusAddr is where imap-server serves its status page and
// `cspool status` looks for it: next to the IMAP port, on localhost.
const defaultStatusAddr = "127.0.0.1:1144"

// statusPageConfig is what the daemon hands to its status listener.
type statusPageConfig struct {
	addr       string // host:port; "" = no status page
	required   bool   // addr was given: failing to listen is an error, not a warning
	source     statuspage.Source
	user       string
	password   string
	allowEmpty bool
	log        *slog.Logger
}

// startStatusPage listens on c.addr and serves the status page until stop
// is called. With an empty address it does nothing.
func startStatusPage(e *env, c statusPageConfig) (stop func(), err error) {
	if c.addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(c.addr)
	if err != nil {
		return nil, usagef("--status-addr %q: %v", c.addr, err)
	}
	var hosts []string
	if isLoopback(host) {
		hosts = []string{"localhost", "127.0.0.1", "::1", host}
	} else {
		c.log.Warn("the status page is reachable from the network, without TLS", "addr", c.addr)
	}
	h, err := statuspage.New(statuspage.Config{
		Source: c.source, User: c.user, Password: c.password, AllowEmptyPassword: c.allowEmpty,
		Hosts: hosts, Logger: c.log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil && !c.required {
		// The default address is taken (another user's daemon, most
		// likely): the daemon runs on without its page.
		c.log.Warn("no status page: the default address is in use; pass --status-addr to choose one", "addr", c.addr, "err", err)
		return func() {}, nil
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("listening for the status page on %s: %w", c.addr, err),
			"pick another --status-addr, or turn the page off with --status-addr ''")
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String() + "/"
	c.log.Info("status page listening", "url", url)
	fmt.Fprintf(e.stdout, "  status:   %s (log in with the IMAP user and password)\n", url)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func runStatus(e *env, args []string) error {
	fs := newFlagSet(e, "status", "", `
Show the state of the running device daemon (cspool imap-server): its IMAP
settings, how far it has synced (position, the spool's head, the lag), its
last contact with the spool and last error, the folders with message and
unseen counts, checkpoints, entries it rejected, and any integrity alarm,
which comes first, on lines starting with ALARM.

It reads the daemon's status page (/status.json on --status-addr), logging
in with the IMAP user name and password: the password comes from --password
or from the file the daemon keeps next to its database (DB.password, found
with --db). Exit status 1 when no daemon answers.`, `
cspool status
cspool status --db ~/.cspool/alice.db --user alice --status-addr 127.0.0.1:1144`)
	addr := fs.String("status-addr", defaultStatusAddr, "the daemon's status `address` (its --status-addr)")
	userName := fs.String("user", defaultUser(e), "the IMAP user `name`")
	dbPath := fs.String("db", "test.db", "the daemon's database `file` (its password is read from DB.password)")
	password := fs.String("password", "", "the IMAP `password` (default: read from DB.password)")
	asJSON := fs.Bool("json", false, "print the daemon's JSON report as is")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this `duration`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *addr == "" {
		return usagef("--status-addr is empty")
	}
	pw := *password
	if !flagGiven(fs, "password") {
		var err error
		if pw, err = readPasswordFile(*dbPath); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	base := "http://" + *addr
	rep, err := statuspage.Fetch(ctx, &http.Client{}, base, *userName, pw)
	switch {
	case errors.Is(err, statuspage.ErrUnauthorized):
		return withHint(fmt.Errorf("the daemon on %s refused user %q: %w", *addr, *userName, err),
			"pass the daemon's --user and --db (or --password)")
	case err != nil && isConnError(err):
		return withHint(fmt.Errorf("no cspool daemon answering on %s: %w", *addr, err),
			"start it with: cspool imap-server (or pass the --status-addr it was started with)")
	case err != nil:
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return statuspage.WriteText(e.stdout, rep, time.Now())
}

func flagGiven(fs *flagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// readPasswordFile reads the password the daemon stored beside dbPath,
// without making one.
func readPasswordFile(dbPath string) (string, error) {
	path := dbPath + ".password"
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", withHint(fmt.Errorf("no password file %s", path),
			"pass the daemon's database with --db, or the password with --password")
	}
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// isConnError tells a daemon that is not there (refused, unreachable, timed
// out) from one that answered badly.
func isConnError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}

// newStatusCollector is the status page's view of a running daemon.
func newStatusCollector(sy *syncer.Syncer, store *mailstore.Store, imapAddr net.Addr, user, dbPath string, passwordSet bool, pw, spoolURL string) *statuspage.Collector {
	host, port, _ := net.SplitHostPort(imapAddr.String())
	p, _ := strconv.Atoi(port)
	settings := statuspage.IMAPSettings{Host: host, Port: p, User: user, EmptyPassword: pw == ""}
	if !passwordSet {
		if abs, err := filepath.Abs(dbPath + ".password"); err == nil {
			settings.PasswordFile = abs
		}
	}
	return &statuspage.Collector{Sync: sy, Store: store, IMAP: settings, Spool: spoolURL}
}
