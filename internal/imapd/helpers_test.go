package imapd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/syncer"
)

const testPassword = "correct horse battery staple"

// rig is one user's spool with its keys (package devicetest's).
type rig struct {
	*devicetest.Spool
	t *testing.T
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return &rig{Spool: devicetest.NewSpool(t), t: t}
}

// device is one device: a mail store, its syncer and an IMAP server on a
// real listener.
type device struct {
	t     *testing.T
	store *mailstore.Store
	sync  *syncer.Syncer
	srv   *Server
	addr  string
	sub   *switchSubmitter
	src   *switchSource
	// rewrite, when set, changes each Result before the server hears it.
	rewrite atomic.Pointer[func(*mailstore.Result) *mailstore.Result]
}

// errSourceDown is what a switchSource answers while down, as the API
// client does for a spool server that is not running: temporary.
var errSourceDown = fmt.Errorf("dial tcp 127.0.0.1:1: connect: connection refused: %w", spool.ErrUnavailable)

// switchSource is the spool as a device reaches it, which can be switched
// off.
type switchSource struct {
	syncer.StoreSource
	mu   sync.Mutex
	down bool
	// readers, when set, is what every read is told of the formats the
	// user's devices read (an API server's Cspool-Readers).
	readers int
	// lose, when set, runs once after the next append that landed, with
	// the positions it took, and its error is answered instead: the
	// entries are in the log, the answer is lost.
	lose func(first uint64, n int) error
}

// answer is what an append that got first, err answers: lose's error
// once it is set.
func (s *switchSource) answer(first uint64, n int, err error) (uint64, error) {
	if err != nil {
		return first, err
	}
	s.mu.Lock()
	lose := s.lose
	s.lose = nil
	s.mu.Unlock()
	if lose != nil {
		if err := lose(first, n); err != nil {
			return 0, err
		}
	}
	return first, nil
}

func (s *switchSource) setLose(lose func(first uint64, n int) error) {
	s.mu.Lock()
	s.lose = lose
	s.mu.Unlock()
}

func (s *switchSource) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *switchSource) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errSourceDown
	}
	return nil
}

func (s *switchSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	if err := s.err(); err != nil {
		return spool.LogRead{}, err
	}
	lr, err := s.StoreSource.ReadLog(ctx, after, n, b, wait)
	s.mu.Lock()
	lr.Readers = s.readers
	s.mu.Unlock()
	return lr, err
}

func (s *switchSource) setReaders(v int) { s.mu.Lock(); s.readers = v; s.mu.Unlock() }

func (s *switchSource) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	if err := s.err(); err != nil {
		return 0, err
	}
	first, err := s.StoreSource.Append(ctx, user, batch)
	return s.answer(first, len(batch), err)
}

func (s *switchSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if err := s.err(); err != nil {
		return 0, err
	}
	first, err := s.StoreSource.AppendAt(ctx, user, head, batch)
	return s.answer(first, len(batch), err)
}

func (s *switchSource) Health(context.Context) error { return s.err() }

// switchSubmitter forwards to the syncer, or fails as an unreachable spool
// would, or runs a hook first.
type switchSubmitter struct {
	mu     sync.Mutex
	next   Submitter
	down   bool
	before func(cmds []*command.Command)
}

func (s *switchSubmitter) Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error) {
	s.mu.Lock()
	down, before := s.down, s.before
	s.mu.Unlock()
	if down {
		return nil, errors.Join(syncer.ErrUnavailable, errors.New("dial tcp: connection refused"))
	}
	if before != nil {
		before(cmds)
	}
	return s.next.Submit(ctx, cmds...)
}

func (s *switchSubmitter) set(down bool, before func([]*command.Command)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down, s.before = down, before
}

func (r *rig) device(name string) *device {
	r.t.Helper()
	return r.deviceWith(name, Config{})
}

// deviceWith is device with the Login, Logger, MaxMessageBytes, TLS,
// AppendMemory and Autologout of extra.
func (r *rig) deviceWith(name string, extra Config) *device {
	r.t.Helper()
	t := r.t
	var srvMu sync.Mutex
	var srv *Server
	var d *device
	src := &switchSource{StoreSource: r.Source()}
	dt := r.Device(name, syncer.Config{Source: src,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		Unreachable: func(err error) bool { return errors.Is(err, errSourceDown) },
		OnApplied: func(res *mailstore.Result) {
			srvMu.Lock()
			s, d := srv, d
			srvMu.Unlock()
			if f := d.rewrite.Load(); f != nil {
				res = (*f)(res)
			}
			s.Applied(res)
		}})
	srvMu.Lock()
	d = &device{t: t, store: dt.Store, sync: dt.Sync, src: src}
	srvMu.Unlock()
	d.sub = &switchSubmitter{next: d.sync}
	logger := devicetest.Logger()
	if extra.Logger != nil {
		logger = extra.Logger
	}
	s, err := New(Config{Store: d.store, Submit: d.sub, User: "alice", Password: testPassword, Logger: logger, Login: extra.Login,
		MaxMessageBytes: extra.MaxMessageBytes, TLS: extra.TLS, AppendMemory: extra.AppendMemory,
		Autologout: extra.Autologout, AppendStall: extra.AppendStall})
	if err != nil {
		t.Fatal(err)
	}
	srvMu.Lock()
	srv = s
	srvMu.Unlock()
	d.srv = s
	d.addr = serveAndSync(t, s, d.sync)
	return d
}

// serveAndSync serves srv on a loopback port and runs sy's sync loop until
// the test ends, and returns the IMAP address.
func serveAndSync(tb testing.TB, srv *Server, sy *syncer.Syncer) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	devicetest.Run(tb, sy)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-served
	})
	return ln.Addr().String()
}

// synced waits until the device has applied the log up to pos.
func (d *device) synced(pos uint64) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.sync.WaitApplied(ctx, pos); err != nil {
		d.t.Fatalf("device did not apply position %d: %v", pos, err)
	}
}

// client logs a go-imap client in.
func (d *device) client(h *imapclient.UnilateralDataHandler) *imapclient.Client {
	d.t.Helper()
	c, err := imapclient.DialInsecure(d.addr, &imapclient.Options{UnilateralDataHandler: h})
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", testPassword).Wait(); err != nil {
		d.t.Fatalf("login: %v", err)
	}
	return c
}

func mustSelect(t *testing.T, c *imapclient.Client, name string) *imap.SelectData {
	t.Helper()
	data, err := c.Select(name, nil).Wait()
	if err != nil {
		t.Fatalf("SELECT %s: %v", name, err)
	}
	return data
}

// needTool finds a program, skipping the test when it is missing, unless
// CI=true, where a missing tool is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	return needToolIn(t, name, name)
}

// needToolIn is needTool for a program that Debian's package pkg installs.
func needToolIn(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI but not found: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install %s); skipping", name, pkg)
	}
	return p
}

// another returns the bytes of messages[name] as another delivery of its
// text makes them: an MTA's Received field of its own in front. The same
// bytes delivered again would be a retried delivery (mailstore's
// ReasonDuplicate), not a second message.
func another(name string) []byte {
	return fmt.Appendf(nil, "Received: by mx.example.org with queue id %d\r\n%s", anotherN.Add(1), messages[name])
}

var anotherN atomic.Int64

// messages are test messages with real shapes.
var messages = map[string]string{
	"plain": "From: Bob Example <bob@example.org>\r\nTo: alice@example.net\r\nSubject: Lunch on Friday\r\n" +
		"Date: Mon, 24 Nov 2025 09:30:00 +0100\r\nMessage-ID: <lunch-1@example.org>\r\n\r\n" +
		"Shall we meet at noon?\r\nBob\r\n",
	"multipart": "From: Carol <carol@example.com>\r\nTo: alice@example.net\r\nSubject: =?UTF-8?Q?R=C3=A9sum=C3=A9_attached?=\r\n" +
		"Date: Tue, 25 Nov 2025 14:00:00 +0000\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Voil=C3=A0 mon CV, caf=C3=A9 compris.\r\n--b1\r\nContent-Type: application/pdf; name=\"cv.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"cv.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\r\n--b1--\r\n",
	"latin1": "From: Dieter <dieter@example.de>\r\nTo: alice@example.net\r\nSubject: Gr\xfc\xdfe\r\n" +
		"Date: Wed, 26 Nov 2025 08:00:00 +0100\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\nViele Gr\xfc\xdfe aus M\xfcnchen\r\n",
	"broken": "this is not a mail header at all\x00\x01\r\nno colon here\r\n\r\nbody \xff\xfe bytes\r\n",
}
