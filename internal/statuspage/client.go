package statuspage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"cspool/internal/ownersock"
)

// ErrUnauthorized means the daemon refused the user name or password.
var ErrUnauthorized = errors.New("user name or password refused")

// Fetch reads /status.json from the daemon's status page at base
// (http://host:port), logging in as user with password. `cspool status`
// does not use it: it reads the control socket with FetchSocket.
func Fetch(ctx context.Context, client *http.Client, base, user, password string) (*Report, error) {
	url := strings.TrimSuffix(base, "/") + "/status.json"
	return fetch(ctx, client, url, url, func(req *http.Request) { req.SetBasicAuth(user, password) })
}

// FetchSocket reads /status.json from the daemon's control socket at path
// (ownersock.Dial checks the socket's directory first). It sends no
// credentials: only the user's own processes can open the socket. Nothing
// listening is an error wrapping ownersock.ErrNotRunning.
func FetchSocket(ctx context.Context, path string) (*Report, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return ownersock.Dial(ctx, path)
		},
		DisableKeepAlives: true,
	}}
	// The host name is not resolved: every connection goes to path.
	return fetch(ctx, client, "http://cspool-daemon/status.json", path, func(*http.Request) {})
}

// fetch GETs url, naming it as where in errors, and decodes the report.
func fetch(ctx context.Context, client *http.Client, url, where string, prepare func(*http.Request)) (*Report, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", where, err)
	}
	prepare(req)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", where, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", where, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("fetching %s: %w", where, ErrUnauthorized)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("fetching %s: %s: %s", where, resp.Status, strings.TrimSpace(string(body)))
	}
	var r Report
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding the report from %s: %w", where, err)
	}
	if r.Version > ReportVersion {
		return nil, fmt.Errorf("the report from %s is version %d; this cspool reads version %d (upgrade it)", where, r.Version, ReportVersion)
	}
	return &r, nil
}
