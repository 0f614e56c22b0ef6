package hostile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"cspool/internal/api"
	"cspool/internal/spool"
)

// Proxy is a dishonest spool in front of a real one. Create it with New.
type Proxy struct {
	user  string
	store spool.Store
	rp    *httputil.ReverseProxy

	mu     sync.Mutex
	fronts map[string]*front
	held   map[string]spool.Checkpoint // by listener, under View.HoldCheckpoints
}

type front struct {
	name string
	url  string
	srv  *http.Server
	view *View
}

// New returns a Proxy forwarding to the API server at upstream (a base
// URL) for user, whose log it reads from store, the server's own store.
func New(upstream string, store spool.Store, user string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("parsing upstream %q: %w", upstream, err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a device that hung up is no news
	return &Proxy{user: user, store: store, rp: rp, fronts: map[string]*front{}, held: map[string]spool.Checkpoint{}}, nil
}

// Listen opens a listener on 127.0.0.1 for one device and returns its base
// URL. The listener starts honest.
func (p *Proxy) Listen(name string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.fronts[name]; ok {
		return "", fmt.Errorf("listener %q exists", name)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listening for %q: %w", name, err)
	}
	f := &front{name: name, url: "http://" + ln.Addr().String()}
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(f, w, r) })}
	p.fronts[name] = f
	go f.srv.Serve(ln)
	return f.url, nil
}

// Set gives listener name a View; nil makes it honest again.
func (p *Proxy) Set(name string, v *View) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.fronts[name]; ok {
		f.view = v
	}
}

// Close closes every listener.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.fronts {
		f.srv.Close()
	}
}

func (p *Proxy) viewOf(f *front) *View {
	p.mu.Lock()
	defer p.mu.Unlock()
	return f.view
}

// Held returns the last checkpoint listener name uploaded under
// View.HoldCheckpoints, and whether there is one.
func (p *Proxy) Held(name string) (spool.Checkpoint, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cp, ok := p.held[name]
	return cp, ok
}

// serve routes one request: reads, head and checkpoint downloads of the
// user's log follow the listener's View, and so do appends and checkpoint
// uploads when it holds or loses them; the rest goes to the server.
func (p *Proxy) serve(f *front, w http.ResponseWriter, r *http.Request) {
	v := p.viewOf(f)
	user, route, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/users/"), "/")
	if v == nil || !ok || user != p.user {
		p.rp.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodPut && route == "checkpoint" && v.HoldCheckpoints:
		p.hold(f, w, r)
		return
	case r.Method == http.MethodPost && route == "entries" && v.LoseAppendAnswers:
		p.rp.ServeHTTP(httptest.NewRecorder(), r)
		http.Error(w, `{"error":"bad gateway"}`, http.StatusBadGateway)
		return
	case r.Method != http.MethodGet:
		p.rp.ServeHTTP(w, r)
		return
	}
	var err error
	switch route {
	case "entries":
		err = p.read(r.Context(), w, r.URL.Query(), v)
	case "head":
		err = p.head(r.Context(), w, v)
	case "checkpoint":
		if v.Checkpoint == nil {
			p.rp.ServeHTTP(w, r)
			return
		}
		err = writeCheckpoint(w, *v.Checkpoint)
	default:
		p.rp.ServeHTTP(w, r)
		return
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		http.Error(w, `{"error":"internal"}`, http.StatusInternalServerError)
	}
}

// hold answers a checkpoint upload as a spool that stored it would, and
// keeps the checkpoint instead of forwarding it.
func (p *Proxy) hold(f *front, w http.ResponseWriter, r *http.Request) {
	pos, err := strconv.ParseUint(r.URL.Query().Get("pos"), 10, 64)
	body, rerr := io.ReadAll(io.LimitReader(r.Body, 1<<30))
	var keep []uint64
	var data []byte
	if err == nil && rerr == nil {
		keep, data, err = api.DecodeCheckpoint(body, 1<<24)
	}
	if err != nil || rerr != nil || pos == 0 {
		http.Error(w, `{"error":"bad checkpoint"}`, http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.held[f.name] = spool.Checkpoint{Pos: pos, Data: data}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"deleted\":0,\"bytes\":0,\"kept\":%d}\n", len(keep))
}
