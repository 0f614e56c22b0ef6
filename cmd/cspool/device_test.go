package main

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/imapd"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
)

// TestDeviceQueuesBeforeIMAP: a daemon's sync loop may queue a change (the
// spool refuses connections) before its IMAP server is made; the notice of
// the queued change must not reach a server that does not exist yet, and
// the server made afterwards serves the change.
func TestDeviceQueuesBeforeIMAP(t *testing.T) {
	t.Parallel()
	userKey, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spoolKey, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on: the spool refuses the connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spoolURL := "http://" + ln.Addr().String()
	ln.Close()

	dbPath := filepath.Join(t.TempDir(), "mail.db")
	dev, err := openDevice(io.Discard, device{user: "alice", userKey: userKey, spoolPub: spoolKey.Public(), spoolURL: spoolURL,
		dbPath: dbPath, log: slog.New(slog.DiscardHandler)}, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.close()
	if err := dev.startSync(syncOptions{daemon: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	outs, err := dev.sync.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Early"})
	if err != nil {
		t.Fatalf("Submit with the spool down: %v", err)
	}
	if len(outs) != 1 || outs[0].Status == mailstore.Rejected {
		t.Fatalf("outcomes %+v, want one provisional outcome", outs)
	}
	if q := dev.sync.Status().Queued; q != 1 {
		t.Fatalf("queued %d changes, want 1", q)
	}
	if err := dev.newIMAP(imapd.Config{Submit: dev.sync, Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	defer dev.imap.Close()
	mbs, err := dev.store.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mb := range mbs {
		found = found || mb.Name == "Early"
	}
	if !found {
		t.Fatalf("mailboxes %v lack the queued Early", mbs)
	}
}
