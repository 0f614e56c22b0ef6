package statuspage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ErrUnauthorized means the daemon refused the user name or password.
var ErrUnauthorized = errors.New("user name or password refused")

// Fetch reads /status.json from the daemon's status listener at base
// (http://host:port), logging in as user with password.
func Fetch(ctx context.Context, client *http.Client, base, user, password string) (*Report, error) {
	url := strings.TrimSuffix(base, "/") + "/status.json"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	req.SetBasicAuth(user, password)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("fetching %s: %w", url, ErrUnauthorized)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("fetching %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var r Report
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", url, err)
	}
	if r.Version > ReportVersion {
		return nil, fmt.Errorf("%s is version %d; this cspool reads version %d (upgrade it)", url, r.Version, ReportVersion)
	}
	return &r, nil
}
