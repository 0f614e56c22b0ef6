package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
)

// TestQuotaMarginByDefault runs cspool server with --quota and no
// --quota-margin, and appends to the user's log with the user's own key,
// as whoever holds it can without a device: the appends past the quota and
// the default margin (4 MiB and twice the largest message sealed) get 507
// and nothing is appended. Before, --quota-margin left unset meant no
// margin at all: a user's own appends were never refused, and 40 MB went
// into a log with a 1 MB quota.
func TestQuotaMarginByDefault(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildServerBinary(t)
	work := t.TempDir()
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice})
	const quota, maxMsg, size = 1_000_000, 1_000_000, 1_000_000
	margin := defaultQuotaMargin(maxMsg)
	httpPort := freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", work, os.Environ(), bin, "server", "--port", fmt.Sprint(httpPort),
		"--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec",
		"--quota", fmt.Sprint(quota), "--max-message-size", fmt.Sprint(maxMsg))
	waitHealthy(t, spoolURL, server)
	if log := server.stderr.String(); !strings.Contains(log, fmt.Sprintf("quota_margin=%d", margin)) {
		t.Errorf("the server's start says no quota_margin=%d (the default for --max-message-size %d)", margin, maxMsg)
	}

	c, err := api.NewClient(spoolURL, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	taken := 0
	for i := range 40 {
		_, err := c.Append(ctx, "alice", [][]byte{make([]byte, size)})
		if err == nil {
			taken++
			continue
		}
		var ae *api.Error
		if !errors.Is(err, api.ErrOverQuota) || !errors.As(err, &ae) || ae.Status != http.StatusInsufficientStorage {
			t.Fatalf("own append %d of %d bytes: %v; want it taken, or 507 past the quota and the margin", i+1, size, err)
		}
		break
	}
	if most := int((quota + margin) / size); taken == 0 || taken > most {
		t.Fatalf("own appends of %d bytes taken with a %d-byte quota and no --quota-margin: %d; want 1 to %d (the margin by default is %d)",
			size, quota, taken, most, margin)
	}
	head, err := c.Head(ctx)
	if err != nil || head != uint64(taken) {
		t.Fatalf("the log's head %d, %v; want %d (nothing appended past the margin)", head, err, taken)
	}
}
