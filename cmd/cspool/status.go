package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"strings"
	"time"

	"cspool/internal/api"
	"cspool/internal/loginguard"
	"cspool/internal/mailstore"
	"cspool/internal/ownersock"
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
	stderr     io.Writer         // where a page beyond localhost is warned about, besides the log; nil: the log only
	logins     *loginguard.Tally // the failed-login count shared with IMAP and submission; nil: the page's own
}

// startStatusPage listens on c.addr and serves the status page until stop
// is called. With an empty address it does nothing. When the default address
// is taken the daemon runs on without a page, says so loudly (someone else's
// program there would receive the password of whoever logs in), and the
// returned state carries the problem for `cspool status`.
func startStatusPage(c statusPageConfig) (stop func(), state statuspage.PageState, err error) {
	ln, state, err := listenStatusPage(c.addr, c.required, c.log)
	if err != nil || ln == nil {
		return func() {}, state, err
	}
	stop, err = serveStatusPage(ln, c)
	if err != nil {
		ln.Close()
		return nil, statuspage.PageState{}, err
	}
	return stop, state, nil
}

// listenStatusPage takes the status page's address: nil and no error when
// addr is empty, or taken while not required (state says why then).
func listenStatusPage(addr string, required bool, log *slog.Logger) (net.Listener, statuspage.PageState, error) {
	var state statuspage.PageState
	if addr == "" {
		return nil, state, nil
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, state, usagef("--status-addr %q: %v", addr, err)
	}
	var ln net.Listener
	if port, perr := strconv.Atoi(portText); perr == nil {
		ln, err = listenLocal(host, port)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil && !required {
		held := addr
		if twin := (*TwinHeldError)(nil); errors.As(err, &twin) {
			held = twin.Addr
		}
		state.Problem = fmt.Sprintf("%s was in use by another program when the daemon started; "+
			"do not log in there: whatever answers there is not this daemon", held)
		log.Error("NO STATUS PAGE: its address is in use by another program, which would receive the password "+
			"of anyone who logs in there; use cspool status, or pass --status-addr to choose a free address",
			"addr", addr, "err", err)
		return nil, state, nil
	}
	if err != nil {
		return nil, state, withHint(fmt.Errorf("listening for the status page on %s: %w", addr, err),
			"pick another --status-addr, or turn the page off with --status-addr ''")
	}
	state.URL = "http://" + ln.Addr().String() + "/"
	return ln, state, nil
}

// serveStatusPage serves the status page on ln (from listenStatusPage)
// until stop is called.
func serveStatusPage(ln net.Listener, c statusPageConfig) (stop func(), err error) {
	hosts := loopbackHosts(ln.Addr().String())
	if hosts == nil {
		warnExposed(c.stderr, c.log, statusExposure, ln.Addr().String())
	}
	h, err := statuspage.New(statuspage.Config{
		Source: c.source, User: c.user, Password: c.password, AllowEmptyPassword: c.allowEmpty,
		Hosts: hosts, Logger: c.log, Login: loginguard.Limits{Tally: c.logins},
	})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ConnContext: h.ConnContext}
	go srv.Serve(h.Listener(ln))
	c.log.Info("status page listening", "url", "http://"+ln.Addr().String()+"/")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// controlSocketPath is where the daemon for the database dbPath listens for
// `cspool status`: a socket in a directory of its own beside the database.
func controlSocketPath(dbPath string) string { return dbPath + ".run/control.sock" }

// startControlSocket serves the daemon's report, without a login, on the
// control socket of dbPath (docs/STATUS.md), until stop is called. The
// socket's directory keeps every other user out; a directory that does not
// is an error, and the daemon does not start.
func startControlSocket(dbPath string, src statuspage.Source, log *slog.Logger) (stop func(), err error) {
	path := controlSocketPath(dbPath)
	h, err := statuspage.NewSocketHandler(src, log)
	if err != nil {
		return nil, err
	}
	ln, err := ownersock.Listen(path)
	var ue *ownersock.UnsafeDirError
	switch {
	case errors.As(err, &ue):
		return nil, withHint(err, fmt.Sprintf("the daemon makes %s with mode 0700 for its own user; if you changed it, run: chmod 700 %s (or remove it)",
			shellQuote(ue.Dir), shellQuote(ue.Dir)))
	case err != nil:
		return nil, withHint(fmt.Errorf("control socket for cspool status: %w", err), "check that the directory of --db is writable and the path is not too long")
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(ln)
	log.Info("control socket listening (for cspool status)", "path", ln.Path())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ln.Close()
	}, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// removedStatusFlags are flags `cspool status` had when it logged in to
// the status page over HTTP; a script that still passes one is told why it
// is gone.
var removedStatusFlags = map[string]string{
	"password":    "cspool status no longer sends a password",
	"status-addr": "cspool status no longer reads the status page over HTTP",
	"user":        "cspool status no longer logs in",
}

func runStatus(e *env, args []string) error {
	fs := newFlagSet(e, "status", "", `
Show the state of the running device daemon (cspool imap-server): its IMAP
settings, where its status page is, how far it has synced (position, the
spool's head, the lag), its last contact with the spool and last error, the
folders with message and unseen counts, checkpoints, entries it rejected,
and any integrity alarm, which comes first, on lines starting with ALARM.

It asks the daemon through its control socket, DB.run/control.sock beside
the daemon's database (found with --db, or the db setting of the daemon's
--config file): a Unix socket in a directory only its owner can open, so no password is needed or sent. A socket directory
that other users could reach is refused. Exit status 1 when no daemon
answers.`, `
cspool status
cspool status --config ~/.config/cspool/alice.conf
cspool status --db ~/.local/state/cspool/alice/mail.db --json`)
	dbPath := fs.String("db", "test.db", "the daemon's database `file` (its --db); the socket is DB.run/control.sock")
	asJSON := fs.Bool("json", false, "print the daemon's JSON report as is")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this `duration`")
	if err := parseFlags(fs, args); err != nil {
		var u *usageError
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && errors.As(err, &u) {
			if why, gone := removedStatusFlags[strings.TrimPrefix(name, "-")]; gone {
				return usagef("--%s is gone: %s; it asks the daemon through the control socket beside its database: pass the daemon's --db",
					strings.TrimPrefix(name, "-"), why)
			}
		}
		return err
	}
	if fs.NArg() != 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *timeout <= 0 {
		return usagef("--timeout %v: want a duration above 0", *timeout)
	}
	sock := controlSocketPath(*dbPath)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := statuspage.FetchSocket(ctx, sock)
	var ue *ownersock.UnsafeDirError
	switch {
	case errors.As(err, &ue):
		// The directory's own words: the socket's path and the request
		// made through it add nothing for the user.
		return withHint(fmt.Errorf("refusing to talk to the daemon: %w", ue),
			fmt.Sprintf("another user may have put a socket there; the daemon makes %s with mode 0700 and refuses to start otherwise. Remove it, or run: chmod 700 %s",
				shellQuote(ue.Dir), shellQuote(ue.Dir)))
	case errors.Is(err, ownersock.ErrNotRunning):
		start := "cspool imap-server --db " + shellQuote(*dbPath) + " (or pass the --db it was started with)"
		if fs.config != nil && *fs.config != "" && !fs.cmdline["db"] {
			start = "cspool imap-server --config " + shellQuote(*fs.config) + " (or pass the --config it was started with)"
		}
		return withHint(fmt.Errorf("no cspool daemon answering for %s: %w", *dbPath, err), "start it with: "+start)
	case err != nil && isConnError(err):
		return withHint(fmt.Errorf("no answer from the cspool daemon for %s: %w", *dbPath, err),
			"the daemon may be stuck; see its log")
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

// isConnError tells a daemon that is not there (refused, unreachable, timed
// out) from one that answered badly.
func isConnError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded)
}

// spoolUnreachable reports whether err means that no answer came from the
// spool server (refused, reset, timed out): the sync loop then asks it
// every half second whether it is back (syncer.Config.Unreachable). An
// answer whose status came and whose body was cut short, or that names
// another request (a proxy on the way), is not: /v1/health would say the
// spool is back at once, and the loop would send the request again twice
// a second for as long as the proxy does so; it waits its backoff.
func spoolUnreachable(err error) bool {
	var e *api.Error
	return errors.Is(err, api.ErrTransport) && !(errors.As(err, &e) && e.Status != 0)
}

// newStatusCollector is the status page's view of a running daemon.
func newStatusCollector(sy *syncer.Syncer, store *mailstore.Store, imapAddr net.Addr, user string, pw imapPassword, spoolURL string) *statuspage.Collector {
	host, port, _ := net.SplitHostPort(imapAddr.String())
	p, _ := strconv.Atoi(port)
	settings := statuspage.IMAPSettings{Host: host, Port: p, User: user, EmptyPassword: pw.value == "", PasswordFile: pw.file}
	return &statuspage.Collector{Sync: sy, Store: store, IMAP: settings, Spool: spoolURL}
}
