package syncer

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestSourceErrorsSayWhatIsTemporary: the syncer needs no classifier of
// the spool's errors, the API client's say what is temporary. A change the
// spool refuses for good (an append signed by a key it does not know, 401)
// fails, with nothing queued; one the spool cannot be asked about (the
// server gone) waits on the device.
func TestSourceErrorsSayWhatIsTemporary(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stranger, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	device := func(name string, key *keys.SecretKey) *Syncer {
		ms, err := mailstore.Open(filepath.Join(h.dir, name+".db"), mimeform.Parser{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ms.Close() })
		client, err := api.NewClient("http://"+h.addr, "alice", key, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{User: "alice", UserKey: h.user, SpoolKey: h.spoolKey.Public(), Source: client, Store: ms,
			Logger: h.quiet, CheckpointMin: -1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	create := func(name string) *command.Command {
		return &command.Command{Kind: command.CreateMailbox, Mailbox: name}
	}

	refused := device("refused", stranger)
	outs, err := refused.Submit(ctx, create("Refused"))
	if !errors.Is(err, api.ErrUnauthenticated) || errors.Is(err, ErrUnavailable) || len(outs) != 0 {
		t.Errorf("submit the spool refuses (401): %v, %v; want the 401, not queued", outs, err)
	}
	if q := refused.Status().Queued; q != 0 {
		t.Errorf("%d changes queued after a refusal, want none", q)
	}

	offline := device("offline", h.user)
	h.stop()
	outs, err = offline.Submit(ctx, create("Offline"))
	if err != nil || len(outs) != 1 || outs[0].Status != mailstore.Applied {
		t.Fatalf("submit with the spool gone: %+v, %v; want it applied on the device, queued", outs, err)
	}
	if q := offline.Status().Queued; q != 1 {
		t.Errorf("%d changes queued with the spool gone, want 1", q)
	}
}
