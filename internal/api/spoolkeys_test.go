package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// TestSpoolKeysRoute: GET /v1/users/{user}/spool-keys gives the user the
// statement the server was configured with, which verifies under the spool
// key and names the key it replaced; a server with none states none; the
// spool key itself, and another user's key, are refused.
func TestSpoolKeysRoute(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, nw := genKey(t), genKey(t)
	stated, err := keys.SignSuccession(nw, old.Public())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, false, func(c *Config) { c.SpoolKey, c.SpoolKeySuccession = nw.Public(), &stated })
	s, ok, err := e.client(t, "alice", e.alice).SpoolKeySuccession(ctx)
	if err != nil || !ok {
		t.Fatalf("the statement: ok %v, %v", ok, err)
	}
	if err := s.Verify(nw.Public()); err != nil || !s.Previous.Equal(old.Public()) {
		t.Fatalf("the statement served: %v, previous %x; want it verified, naming the old key", err, s.Previous.KeyID())
	}
	for who, k := range map[string]*keys.SecretKey{"the spool key": nw, "bob's key": e.bob} {
		var ae *Error
		if _, _, err := e.client(t, "alice", k).SpoolKeySuccession(ctx); !errors.As(err, &ae) || ae.Status != 403 {
			t.Errorf("%s asking for alice's spool keys: %v, want 403", who, err)
		}
	}
	none := newEnv(t, false, nil)
	if _, ok, err := none.client(t, "alice", none.alice).SpoolKeySuccession(ctx); err != nil || ok {
		t.Errorf("a server whose key replaced none: ok %v, %v; want none stated", ok, err)
	}
}

// TestSpoolKeysNoRoute: a server without the route (a release before it)
// answers 404 as to any path it does not serve, which the client gives as
// errors.ErrUnsupported, so the device asks no more.
func TestSpoolKeysNoRoute(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, false, nil)
	older := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.Replace(r.URL.Path, "/spool-keys", "/no-such-route", 1)
		e.api.ServeHTTP(w, r)
	}))
	t.Cleanup(older.Close)
	c, err := NewClient(older.URL, "alice", e.alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.SpoolKeySuccession(ctx); ok || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("a server without the route: ok %v, %v; want errors.ErrUnsupported", ok, err)
	}
}
