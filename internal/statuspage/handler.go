package statuspage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cspool/internal/loginguard"
)

// Config configures a Handler. Zero fields take the documented defaults.
type Config struct {
	Source Source // required

	// User and Password are the IMAP login; HTTP Basic auth must match
	// both. An empty Password is refused unless AllowEmptyPassword is set.
	User               string
	Password           string
	AllowEmptyPassword bool

	// Hosts are the names (without port) a request's Host header may
	// carry, compared case-insensitively; nil allows any. The daemon sets
	// its listen host and the loopback names.
	Hosts []string

	// Login slows down password guessing through the page as IMAP and
	// SMTP submission do theirs (docs/IMAP.md, "Login"), with a guard of
	// its own, which counts failures with theirs when Login.Tally is
	// theirs (the daemon's); zero fields take loginguard's defaults.
	Login loginguard.Limits

	// Refresh is how often the page reloads itself; 0 = 5 s.
	Refresh time.Duration
	// Logger gets failures to build the report; nil: slog.Default().
	Logger *slog.Logger
}

// Handler serves the status page (/) and /status.json.
type Handler struct {
	cfg Config
	// owner: served on the control socket, where only the owner can
	// connect; no login and no Host check.
	owner bool
	log   *slog.Logger
	tmpl  *template.Template
	csp   string
	creds loginguard.Credentials
	guard *loginguard.Guard
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.Refresh <= 0 {
		c.Refresh = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil || cfg.User == "" {
		return nil, errors.New("statuspage: source and user are required")
	}
	if cfg.Password == "" && !cfg.AllowEmptyPassword {
		return nil, errors.New("statuspage: a password is required (or AllowEmptyPassword)")
	}
	cfg.fill()
	log := cfg.Logger
	tmpl, err := parsePage()
	if err != nil {
		return nil, err
	}
	styleHash := sha256.Sum256([]byte(pageStyle))
	h := &Handler{
		cfg:  cfg,
		log:  log.With("component", "status"),
		tmpl: tmpl,
		csp: "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(styleHash[:]) + "'; " +
			"img-src 'none'; script-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
		creds: loginguard.NewCredentials(cfg.User, cfg.Password),
	}
	h.guard = loginguard.New(cfg.Login, h.log, "status page")
	return h, nil
}

// Listener bounds the connections of ln that have not yet carried a
// request with the right login, as IMAP's are bounded before login
// (loginguard.Limits.MaxPending, MaxPendingPerSource, LoginDeadline;
// docs/STATUS.md): the one that waited longest is closed when newer ones
// go past the limits, and one without a good login within LoginDeadline
// of its accept is closed; and those logged in, to MaxSessions. Serve the handler on it with ConnContext set
// on the http.Server, or no connection ever counts as logged in.
func (h *Handler) Listener(ln net.Listener) net.Listener {
	return &loginguard.Listener{Listener: ln, Guard: h.guard}
}

// connKey keys a request's connection in its context.
type connKey struct{}

// ConnContext is for http.Server.ConnContext: it gives each request the
// connection it came on, which a good login takes out of Listener's
// count.
func (h *Handler) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// NewSocketHandler returns a Handler that asks for no login: the daemon
// serves it on its control socket (internal/ownersock), which only the
// user's own processes can open, for `cspool status`. It must never be
// given a TCP listener.
func NewSocketHandler(src Source, logger *slog.Logger) (*Handler, error) {
	// A placeholder login keeps New's checks; it is never compared.
	h, err := New(Config{Source: src, User: "owner", AllowEmptyPassword: true, Logger: logger})
	if err != nil {
		return nil, err
	}
	h.owner = true
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store, max-age=0")
	hd.Set("Pragma", "no-cache")
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	if !h.owner && !h.hostAllowed(r.Host) {
		http.Error(w, "misdirected request: unknown host name", http.StatusMisdirectedRequest)
		return
	}
	if !h.owner && !FromThisOrigin(r) && !topLevelNavigation(r) {
		// Another site's page loading the report (an <img>, a fetch, a
		// frame) with the login the browser keeps for this address: it
		// cannot read the answer, but each such request had the daemon
		// build a whole report. A link followed from elsewhere (a
		// top-level navigation) is served, as an address typed in is.
		http.Error(w, "forbidden: a request from another site's page", http.StatusForbidden)
		return
	}
	if !h.owner && !h.login(w, r) {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/", "/status.json":
	default:
		http.NotFound(w, r)
		return
	}
	rep, err := h.cfg.Source.Report(r.Context())
	if err != nil {
		h.log.Error("building the status report", "err", err)
		http.Error(w, "the daemon's state could not be read; see its log", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if r.URL.Path == "/status.json" {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
		hd.Set("Content-Type", "application/json")
	} else {
		err = h.tmpl.Execute(&buf, pageData{Report: rep, Refresh: int(h.cfg.Refresh.Round(time.Second) / time.Second), Style: template.CSS(pageStyle)})
		hd.Set("Content-Type", "text/html; charset=utf-8")
	}
	if err != nil {
		h.log.Error("rendering the status report", "err", err)
		http.Error(w, "rendering failed; see the daemon's log", http.StatusInternalServerError)
		return
	}
	w.Write(buf.Bytes())
}

// login checks Basic credentials against the configured user and
// password in constant time (both compared as SHA-256 digests, so their
// lengths leak nothing either), through the login guard: a failure is
// answered 401 only after the guard's delay, which the client going away
// does not shorten, and while the source has the guard's most failures
// waiting a login is refused unchecked (429); a right one on a
// connection beyond loginguard.Limits.MaxSessions logged in gets 503.
// A request without
// credentials (a browser's first) is asked for them at once and counts
// for nothing. It reports whether the request may go on; if not, the
// answer is written.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) bool {
	hd := w.Header()
	u, p, ok := r.BasicAuth()
	if !ok {
		hd.Set("WWW-Authenticate", `Basic realm="cspool status", charset="UTF-8"`)
		http.Error(w, "log in with the IMAP user name and password", http.StatusUnauthorized)
		return false
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote := loginguard.Peer(remoteAddr(r.RemoteAddr), local)
	if err := h.guard.Admit(remote); err != nil {
		hd.Set("Retry-After", strconv.Itoa(int(h.guard.Limits().MaxDelay/time.Second)))
		http.Error(w, "too many failed logins from your address; try again later", http.StatusTooManyRequests)
		return false
	}
	userOK, ok := h.creds.Check(u, p)
	if ok {
		if gc, ok := r.Context().Value(connKey{}).(*loginguard.Conn); ok {
			if err := gc.StartSession(); err != nil {
				// The connection stays, not logged in: one of its next
				// requests logs in once a session has closed.
				hd.Set("Retry-After", "30")
				http.Error(w, "too many connections are logged in; try again later", http.StatusServiceUnavailable)
				return false
			}
		}
		return true
	}
	src, d := h.guard.Fail(remote, 0, userOK, false)
	h.guard.Limits().Wait(context.WithoutCancel(r.Context()), d)
	h.guard.Done(src)
	hd.Set("WWW-Authenticate", `Basic realm="cspool status", charset="UTF-8"`)
	http.Error(w, "log in with the IMAP user name and password", http.StatusUnauthorized)
	return false
}

// remoteAddr is a request's RemoteAddr ("host:port") as the login guard
// takes a client's address.
type remoteAddr string

func (a remoteAddr) Network() string { return "tcp" }
func (a remoteAddr) String() string  { return string(a) }

func (h *Handler) hostAllowed(hostport string) bool {
	if h.cfg.Hosts == nil {
		return true
	}
	host := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		host = hh
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for _, a := range h.cfg.Hosts {
		if strings.EqualFold(host, strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")) {
			return true
		}
	}
	return false
}

// FromThisOrigin reports whether r came from no page of another origin:
// by its Sec-Fetch-Site (none for an address typed in or a bookmark,
// same-origin for a page's own links and refresh), or, from a browser that
// sends none, by its Origin (none at all, or http:// and the request's
// Host). go tool pprof, curl and cspool's own clients send neither header.
func FromThisOrigin(r *http.Request) bool {
	if site := r.Header.Values("Sec-Fetch-Site"); len(site) > 0 {
		return len(site) == 1 && (site[0] == "none" || site[0] == "same-origin")
	}
	switch origin := r.Header.Values("Origin"); len(origin) {
	case 0:
		return true
	case 1:
		return strings.EqualFold(origin[0], "http://"+r.Host)
	default:
		return false
	}
}

// topLevelNavigation reports whether a browser sent r to show its answer
// as the page of a window or tab (a link followed, not an image, a script's
// fetch or a frame), by Sec-Fetch-Mode and Sec-Fetch-Dest: the page that
// links there cannot read what the window shows.
func topLevelNavigation(r *http.Request) bool {
	return r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
}
