package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
)

// sealedBucket is the size of an entry whose inner plaintext is inner bytes
// (docs/FORMAT.md §2): the 53-byte header, the chunks with a 16-byte tag
// each, the 80-byte signature box.
func sealedBucket(inner int) int { return 53 + inner + 16*((inner+65535)/65536) + 80 }

// isBucket reports whether a sealed size is that of a power-of-two inner
// plaintext of at least 1 KiB, the only sizes a device's commands other
// than Append may have.
func isBucket(size int) bool {
	for inner := 1 << 10; inner <= 1<<26; inner *= 2 {
		if size == sealedBucket(inner) {
			return true
		}
	}
	return false
}

// startPaddingDaemon runs `cspool imap-server` on db with extra flags and
// returns it with its IMAP address and password.
func startPaddingDaemon(t *testing.T, s *statusSetup, db string, extra ...string) (*proc, string, string) {
	t.Helper()
	port := freePort(t)
	args := append([]string{"imap-server", "--port", fmt.Sprint(port), "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		s.keyFlags(db)...)
	p := startProc(t, "cspool imap-server", s.dir, s.env, s.bin, append(args, extra...)...)
	out := p.waitOutput(t, "status:", 30*time.Second)
	return p, fmt.Sprintf("127.0.0.1:%d", port), daemonPassword(t, out)
}

// TestSpoolSeesOnlyBuckets runs a device's ordinary day against the real
// spool server (the binary, its HTTP API, its SQLite store) and the real
// device daemon driven over IMAP, then looks at the log as the spool holds
// it. Every command the device wrote, whatever it does, must seal to a
// power-of-two bucket, and all those touching a few messages (and every
// mailbox command, and a short draft) to the same smallest one, so the
// sizes tell the spool nothing about which command it is. The checkpoint
// the daemon writes next is logged with its sealed size, the size the
// spool stores.
func TestSpoolSeesOnlyBuckets(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	userKey, err := keys.LoadSecret(filepath.Join(s.dir, "user.sec"))
	if err != nil {
		t.Fatal(err)
	}
	spoolPub, err := keys.LoadPublic(filepath.Join(s.dir, "spool.pub"))
	if err != nil {
		t.Fatal(err)
	}

	// Deliveries: the test messages, then messages of the benchmark
	// seed's 10 KB, 70 in all.
	samples, err := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("no sample messages: %v", err)
	}
	const delivered = 70
	for i := range delivered {
		var msg []byte
		if i < len(samples) {
			if msg, err = os.ReadFile(samples[i]); err != nil {
				t.Fatal(err)
			}
		} else {
			msg = fmt.Appendf(nil, "From: Sender %d <s%d@example.org>\r\nTo: alice@example.org\r\nSubject: day %d\r\n\r\n", i, i, i)
			for len(msg) < 10<<10 {
				msg = append(msg, "quarterly report meeting invoice travel token mail spool\r\n"...)
			}
		}
		name := fmt.Sprintf("msg%d", i)
		if err := os.WriteFile(filepath.Join(s.dir, name), msg, 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, s.dir, s.env, name, bin, "deliver", "--user", s.user, "--user-key=user.pub", "--spool-key=spool.sec",
			"--spool-server", s.spoolURL)
	}

	daemon, addr, password := startPaddingDaemon(t, s, "mail.db", "--checkpoint-min=-1")
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(s.user, password).Wait(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		sd, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if sd.NumMessages == delivered {
			break
		}
		if i == 300 {
			t.Fatalf("INBOX has %d messages after 30 s, want %d", sd.NumMessages, delivered)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A day's work: read, flag, file, delete, folders, drafts.
	store := func(set imap.SeqSet, op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		if err := c.Store(set, &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
			t.Fatalf("STORE %v %v: %v", set, flags, err)
		}
	}
	ok := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	ok("FETCH BODY[]", err)
	store(imap.SeqSetNum(2), imap.StoreFlagsAdd, imap.FlagFlagged)
	store(imap.SeqSetNum(3, 4), imap.StoreFlagsAdd, imap.FlagFlagged)
	store(imap.SeqSetNum(5, 6, 7, 8, 9), imap.StoreFlagsAdd, imap.FlagAnswered, "$Label1")
	store(imap.SeqSetNum(2), imap.StoreFlagsDel, imap.FlagFlagged)
	store(imap.SeqSetNum(10), imap.StoreFlagsSet, imap.FlagSeen, "$Important")
	ok("CREATE", c.Create("Receipts", nil).Wait())
	_, err = c.Copy(imap.SeqSetNum(11, 12), "Archive").Wait()
	ok("COPY", err)
	_, err = c.Move(imap.SeqSetNum(13, 14, 15, 16, 17), "Trash").Wait()
	ok("MOVE", err)
	store(imap.SeqSetNum(13), imap.StoreFlagsAdd, imap.FlagDeleted)
	_, err = c.Expunge().Collect()
	ok("EXPUNGE", err)
	ok("RENAME", c.Rename("Receipts", "Paid", nil).Wait())
	ok("SUBSCRIBE", c.Subscribe("Paid").Wait())
	ok("UNSUBSCRIBE", c.Unsubscribe("Paid").Wait())
	ok("DELETE", c.Delete("Paid").Wait())
	appendMsg := func(mailbox string, msg []byte) {
		t.Helper()
		ac := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
		if _, err := ac.Write(msg); err != nil {
			t.Fatal(err)
		}
		ok("APPEND", ac.Close())
		_, err := ac.Wait()
		ok("APPEND", err)
	}
	appendMsg("Drafts", []byte("From: alice@example.org\r\nSubject: note\r\n\r\nCall Bob back.\r\n"))
	long := []byte("From: alice@example.org\r\nTo: bob@example.org\r\nSubject: the report\r\n\r\n")
	for len(long) < 10<<10 {
		long = append(long, "here is the quarterly report as promised, with the figures\r\n"...)
	}
	appendMsg("Sent", long)
	store(imap.SeqSet{{Start: 1, Stop: 0}}, imap.StoreFlagsAdd, imap.FlagSeen) // mark all read: 64 messages

	// The log as the spool serves it.
	client, err := api.NewClient(s.spoolURL, s.user, userKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, _, err := client.Read(ctx, 0, 1000, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	small := map[int][]string{}
	var kinds []command.Kind
	var bulk, longAppend int
	for _, e := range entries {
		o, err := entry.Open(e.Data, userKey, s.user, userKey.Public(), spoolPub)
		if err != nil {
			t.Fatalf("entry %d: %v", e.Pos, err)
		}
		size, k := len(e.Data), o.Cmd.Kind
		what := fmt.Sprintf("%s of %d at %d", k, len(o.Cmd.IDs), e.Pos)
		switch {
		case k == command.Deliver:
			continue
		case k == command.Append && len(o.Cmd.Body) > 1<<10:
			longAppend = size
			continue
		case k != command.Append && !isBucket(size):
			t.Errorf("%s sealed to %d bytes, not a power-of-two bucket", what, size)
		}
		if len(o.Cmd.IDs) > 50 {
			bulk = size
			continue
		}
		small[size] = append(small[size], what)
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	t.Logf("the device's small commands by sealed size: %v; STORE over 64 messages: %d; APPEND of %d bytes: %d", small, bulk, len(long), longAppend)
	if len(small) != 1 || len(kinds) < 12 {
		t.Errorf("the device's small commands (%d kinds: %v) sealed to %d sizes, want one: %v", len(kinds), kinds, len(small), small)
	}
	if _, ok := small[sealedBucket(1<<10)]; !ok {
		t.Errorf("small commands not in the 1 KiB bucket (%d bytes): %v", sealedBucket(1<<10), small)
	}
	if bulk != sealedBucket(2<<10) {
		t.Errorf("STORE over 64 messages sealed to %d bytes, want the 2 KiB bucket, %d", bulk, sealedBucket(2<<10))
	}
	if longAppend <= len(long) || isBucket(longAppend) {
		t.Errorf("APPEND of %d bytes sealed to %d bytes, want its Padmé size", len(long), longAppend)
	}

	// A checkpoint: the daemon's log line gives its sealed size, the
	// number of bytes the spool stores, not the state's own length.
	c.Logout().Wait()
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	daemon, _, _ = startPaddingDaemon(t, s, "mail.db", "--checkpoint-min=1")
	var logged int
	for i := 0; logged == 0; i++ {
		if m := regexp.MustCompile(`msg="checkpoint stored" .*sealed_bytes=(\d+)`).FindStringSubmatch(daemon.stderr.String()); m != nil {
			logged, _ = strconv.Atoi(m[1])
		} else if i == 300 {
			t.Fatalf("no checkpoint stored within 30 s:\n%s", daemon.stderr)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	cp, err := client.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if logged != len(cp.Data) || strings.Contains(daemon.stderr.String(), "state_bytes") {
		t.Errorf("checkpoint logged as %d bytes, the spool stores %d", logged, len(cp.Data))
	}
	if o, err := entry.Open(cp.Data, userKey, s.user, userKey.Public()); err != nil || o.Cmd.Kind != command.Checkpoint {
		t.Fatalf("opening the checkpoint: %v", err)
	}
}
