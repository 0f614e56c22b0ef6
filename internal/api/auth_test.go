package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// rawRequest builds a signed request; tamper may change it after signing.
type rawRequest struct {
	method, path, query string
	body                []byte
	key                 *keys.SecretKey
	at                  time.Duration // timestamp offset from now
	tamper              func(*http.Request)
	noSign              bool
	contentType         string // of a body; "": ContentType
}

func (e *env) send(t *testing.T, rr rawRequest) (*http.Response, string) {
	t.Helper()
	resp, _, msg := e.sendBody(t, rr)
	return resp, msg
}

// sendBody is send, also returning the body read.
func (e *env) sendBody(t *testing.T, rr rawRequest) (*http.Response, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(rr.method, e.srv.URL+rr.path, bytes.NewReader(rr.body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = rr.query
	if rr.body != nil {
		req.Header.Set("Content-Type", cmp.Or(rr.contentType, ContentType))
	}
	if !rr.noSign {
		if err := SignRequest(req, rr.body, rr.key, time.Now().Add(rr.at)); err != nil {
			t.Fatal(err)
		}
	}
	if rr.tamper != nil {
		rr.tamper(req)
	}
	return e.doBody(t, req)
}

func (e *env) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, _, msg := e.doBody(t, req)
	return resp, msg
}

// doBody is do, also returning the body read.
func (e *env) doBody(t *testing.T, req *http.Request) (*http.Response, []byte, string) {
	t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb struct {
		Error string `json:"error"`
	}
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
			t.Errorf("%s %s: status %d with body %q, want a JSON error", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	return resp, b, eb.Error
}

// spoilSignature changes the first character of r's signature.
func spoilSignature(r *http.Request) {
	h := r.Header.Get("Authorization")
	i := strings.LastIndex(h, "sig=") + 4
	c := byte('A')
	if h[i] == 'A' {
		c = 'B'
	}
	r.Header.Set("Authorization", h[:i]+string(c)+h[i+1:])
}

func TestAuth(t *testing.T) {
	e := newEnv(t, false, nil)
	entries := "/v1/users/alice/entries"
	good := EncodeBatch([][]byte{[]byte("m")})
	mail := EncodeBatch([][]byte{e.delivery(t, "alice", "m")})
	tests := []struct {
		name string
		rr   rawRequest
		want int
	}{
		{"own log read", rawRequest{method: "GET", path: entries, query: "after=0", key: e.alice}, 200},
		{"own log append", rawRequest{method: "POST", path: entries, body: good, key: e.alice}, 200},
		{"own head", rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice}, 200},
		{"health needs nothing", rawRequest{method: "GET", path: "/v1/health", noSign: true}, 200},
		{"no signature", rawRequest{method: "GET", path: entries, noSign: true}, 401},
		{"unknown key", rawRequest{method: "GET", path: entries, key: e.stranger}, 401},
		{"other user's log", rawRequest{method: "GET", path: entries, key: e.bob}, 403},
		{"other user's log append", rawRequest{method: "POST", path: entries, body: good, key: e.bob}, 403},
		{"spool key appends", rawRequest{method: "POST", path: entries, body: mail, key: e.spoolK}, 200},
		{"spool key appends to no user", rawRequest{method: "POST", path: "/v1/users/nobody/entries", body: mail, key: e.spoolK}, 404},
		{"spool key reads", rawRequest{method: "GET", path: entries, key: e.spoolK}, 403},
		{"spool key head", rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.spoolK}, 403},
		{"stale timestamp", rawRequest{method: "GET", path: entries, key: e.alice, at: -2 * time.Minute}, 401},
		{"future timestamp", rawRequest{method: "GET", path: entries, key: e.alice, at: 6 * time.Minute}, 401},
		{"skewed within window", rawRequest{method: "GET", path: entries, key: e.alice, at: -50 * time.Second}, 200},
		{"tampered body", rawRequest{method: "POST", path: entries, body: good, key: e.alice, tamper: func(r *http.Request) {
			r.Body = io.NopCloser(bytes.NewReader(EncodeBatch([][]byte{[]byte("x")})))
		}}, 401},
		{"tampered query", rawRequest{method: "GET", path: entries, query: "after=0", key: e.alice, tamper: func(r *http.Request) {
			r.URL.RawQuery = "after=5"
		}}, 401},
		{"added query parameter", rawRequest{method: "GET", path: entries, query: "after=0", key: e.alice, tamper: func(r *http.Request) {
			r.URL.RawQuery = "after=0&wait=5"
		}}, 401},
		{"tampered path", rawRequest{method: "GET", path: "/v1/users/bob/entries", key: e.alice, tamper: func(r *http.Request) {
			r.URL.Path = entries
		}}, 401},
		{"tampered method", rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice, tamper: func(r *http.Request) {
			r.Method = "POST"
			r.URL.Path = entries
		}}, 401},
		{"get with signed body", rawRequest{method: "GET", path: entries, body: []byte("x"), key: e.alice}, 401},
		{"other scheme", rawRequest{method: "GET", path: entries, key: e.alice, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer x")
		}}, 401},
		{"bad signature", rawRequest{method: "GET", path: entries, key: e.alice, tamper: spoilSignature}, 401},
		{"two headers", rawRequest{method: "GET", path: entries, key: e.alice, tamper: func(r *http.Request) {
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
		}}, 401},
		{"duplicate query parameter", rawRequest{method: "GET", path: entries, key: e.alice, tamper: func(r *http.Request) {
			r.URL.RawQuery = "after=1&after=2"
		}}, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, msg := e.send(t, tc.rr)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.want)
			}
			if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") != AuthScheme {
				t.Errorf("401 without WWW-Authenticate: %s", AuthScheme)
			}
			if resp.Header.Get("Cspool-Request-Id") == "" {
				t.Error("no Cspool-Request-Id header")
			}
		})
	}
}

// TestReplay: a request sent again to the same server is refused as a
// replay, except an append without if_head, which gets its first answer
// again; either way nothing happens twice.
func TestReplay(t *testing.T) {
	e := newEnv(t, false, nil)
	for _, method := range []string{"GET", "POST"} {
		var body []byte
		if method == "POST" {
			body = EncodeBatch([][]byte{[]byte("once")})
		}
		req, err := http.NewRequest(method, e.srv.URL+"/v1/users/alice/entries", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ContentType)
		if err := SignRequest(req, body, e.alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		again := req.Clone(req.Context())
		again.Body = io.NopCloser(bytes.NewReader(body))
		if resp, msg := e.do(t, req); resp.StatusCode != 200 {
			t.Fatalf("%s: first request: %d %s", method, resp.StatusCode, msg)
		}
		resp, msg := e.do(t, again)
		if method == "GET" && (resp.StatusCode != 401 || !strings.Contains(msg, "replay")) {
			t.Errorf("%s: replayed request: %d %q, want 401 naming the replay", method, resp.StatusCode, msg)
		}
		// An append without if_head is answered as the first was, from the
		// store's record of it, and appends nothing (docs/API.md §2).
		if method == "POST" && resp.StatusCode != 200 {
			t.Errorf("%s: replayed append: %d %q, want 200 with the first one's position", method, resp.StatusCode, msg)
		}
	}
	if h, err := e.store.Head(testCtx(t), "alice"); err != nil || h != 1 {
		t.Errorf("head after a replayed append = %d, %v; want 1", h, err)
	}
}

func TestTestModeAPI(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx := testCtx(t)
	first := e.client(t, "carol", e.stranger)
	if _, err := first.Append(ctx, "carol", [][]byte{[]byte("mine")}); err != nil {
		t.Fatalf("first key for carol: %v", err)
	}
	second := e.client(t, "carol", e.bob)
	if _, _, err := second.Read(ctx, 0, 0, 0, 0); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("second key for carol: %v, want ErrUnauthenticated", err)
	}
	if _, err := e.client(t, "dave", e.stranger).Head(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("carol's key as dave: %v, want ErrForbidden", err)
	}
	es, _, err := first.Read(ctx, 0, 0, 0, 0)
	if err != nil || len(es) != 1 {
		t.Errorf("carol reads her log: %d entries, %v", len(es), err)
	}
}

// TestKnownKeysDecideNothing: a key remembered from an authenticated
// request spares only its parsing: the same key's forged request, and its
// request for another user's log, are refused as before; the keys
// remembered are bounded.
func TestKnownKeysDecideNothing(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	if _, err := e.client(t, "alice", e.alice).Head(ctx); err != nil {
		t.Fatal(err)
	}
	if e.api.known.get(e.alice.Public().String()) == nil {
		t.Fatal("alice's key not remembered after her request")
	}
	var ae *Error
	if _, err := e.client(t, "bob", e.alice).Head(ctx); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Errorf("alice's key reading bob's head: %v, want 403", err)
	}
	req, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/head", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(req, nil, e.alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	req.URL.Path = "/v1/users/bob/head" // the signature covers alice's path
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged request with a remembered key: %d, want 401", resp.StatusCode)
	}
	var k knownKeys
	for i := range maxKnownKeys + 10 {
		k.add(&authorization{keyText: strconv.Itoa(i)})
	}
	if n := k.n.Load(); n != maxKnownKeys {
		t.Errorf("%d keys remembered, want at most %d", n, maxKnownKeys)
	}
}
