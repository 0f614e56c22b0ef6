package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// Changes made while the spool cannot be reached (docs/IMAP.md, "Offline"),
// end to end: the real server and daemons, IMAP clients on the devices.

// deliverTokens delivers one message per token over LMTP and requires each
// acknowledged.
func deliverTokens(t *testing.T, c *cluster, tokens ...string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", c.lmtpAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	for _, tok := range tokens {
		if err := sendOne(lc, tok, 200); err != nil {
			t.Fatalf("delivering %s: %v", tok, err)
		}
	}
}

// shown is a message as an IMAP client sees it.
type shown struct {
	uid   imap.UID
	flags []string
}

// byToken lists a mailbox of a logged-in client by X-Fault-Token.
func byToken(t *testing.T, cl *imapclient.Client, box string) map[string]shown {
	t.Helper()
	sel, err := cl.Select(box, nil).Wait()
	if err != nil {
		t.Fatalf("SELECT %s: %v", box, err)
	}
	out := map[string]shown{}
	if sel.NumMessages == 0 {
		return out
	}
	msgs, err := cl.Fetch(seqRange(1, sel.NumMessages), &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{tokenSection}}).Collect()
	if err != nil {
		t.Fatalf("FETCH in %s: %v", box, err)
	}
	for _, m := range msgs {
		tok := strings.TrimPrefix(string(bytes.TrimSpace(m.FindBodySection(tokenSection))), "X-Fault-Token: ")
		var flags []string
		for _, f := range m.Flags {
			if f != `\Recent` {
				flags = append(flags, string(f))
			}
		}
		slices.Sort(flags)
		out[tok] = shown{m.UID, flags}
	}
	return out
}

// login logs in to a device, every command bounded by 30 s.
func login(t *testing.T, d *device) *imapclient.Client {
	t.Helper()
	cl, conn, err := dialIMAP(d.addr())
	if err != nil {
		t.Fatalf("logging in to device %s: %v", d.name, err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	t.Cleanup(func() { cl.Close() })
	return cl
}

// mustOK fails the test on a command's error.
func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// uidSet is the UID set of one message.
func uidSet(u imap.UID) imap.UIDSet { return imap.UIDSetNum(u) }

// appendToken appends a message with a token to box.
func appendToken(t *testing.T, cl *imapclient.Client, box, tok string) {
	t.Helper()
	msg := message(tok, 100)
	ac := cl.Append(box, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	if _, err := ac.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	mustOK(t, "APPEND to "+box, ac.Close())
	_, err := ac.Wait()
	mustOK(t, "APPEND to "+box, err)
}

// wantBox fails unless a mailbox, as a client sees it, holds exactly want
// (token -> sorted flags).
func wantBox(t *testing.T, who, box string, got map[string]shown, want map[string][]string) {
	t.Helper()
	for tok, flags := range want {
		g, ok := got[tok]
		if !ok {
			t.Errorf("%s: %s lacks %s", who, box, tok)
		} else if fmt.Sprint(g.flags) != fmt.Sprint(flags) {
			t.Errorf("%s: %s holds %s with flags %v, want %v", who, box, tok, g.flags, flags)
		}
	}
	for tok := range got {
		if _, ok := want[tok]; !ok {
			t.Errorf("%s: %s holds %s, which it should not", who, box, tok)
		}
	}
}

// queuedStatus asks `cspool status --json` how many changes wait on a
// device.
func queuedStatus(t *testing.T, d *device) int {
	t.Helper()
	out, err := exec.Command(binary(t), "status", "--db", d.db, "--json").Output()
	if err != nil {
		t.Fatalf("cspool status for device %s: %v", d.name, err)
	}
	var rep struct {
		Sync struct {
			Queued *int `json:"queued"`
		} `json:"sync"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Sync.Queued == nil {
		t.Fatalf("cspool status --json for device %s: %v, no sync.queued in\n%s", d.name, err, out)
	}
	text, err := exec.Command(binary(t), "status", "--db", d.db).Output()
	if err != nil {
		t.Fatalf("cspool status for device %s: %v", d.name, err)
	}
	if want := fmt.Sprintf("Queued:        %d change", *rep.Sync.Queued); *rep.Sync.Queued > 0 && !strings.Contains(string(text), want) {
		t.Errorf("cspool status for device %s lacks %q:\n%s", d.name, want, text)
	}
	return *rep.Sync.Queued
}

// timeToConverge waits until every device has applied the spool's head
// with an empty queue, and returns how long that took from since.
func (c *cluster) timeToConverge(t *testing.T, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(bound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		head, err := c.head(ctx)
		cancel()
		ok := err == nil
		state := fmt.Sprintf("head %d (%v)", head, err)
		for _, d := range c.devices {
			pos, queued, err := c.progress(d.db)
			state += fmt.Sprintf(", %s at %d with %d queued (%v)", d.name, pos, queued, err)
			ok = ok && err == nil && pos == head && queued == 0
		}
		if ok {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged within %v: %s", bound, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sameDumps stops the daemons and requires equal states, with no entry
// rejected on either device.
func sameDumps(t *testing.T, c *cluster) {
	t.Helper()
	var states []*mailstore.State
	for _, d := range c.devices {
		d.p.stop(t)
		key := devicedb.Key(c.userKey.DatabaseKey("mailstore"))
		ms, err := mailstore.OpenWith(d.db, mailstore.Options{Parser: mimeform.Parser{}, Key: &key, NoMigrate: true})
		if err != nil {
			t.Fatalf("opening device %s's database: %v", d.name, err)
		}
		st, err := ms.Dump(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ms.Close()
		states = append(states, st)
	}
	if d := mailstore.Diff(states[0], states[1], 10); len(d) > 0 {
		t.Errorf("devices differ:\n%s", strings.Join(d, "\n"))
	}
}

// TestOfflineChanges: with the spool server stopped, a client changes the
// mailbox through device a (every command answered OK, shown at once);
// the daemon is killed with SIGKILL and started again in the middle, and
// the changes are still shown and still waiting (cspool status counts
// them); when the server starts again device b shows them all, each once.
func TestOfflineChanges(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	a, b := c.devices[0], c.devices[1]
	deliverTokens(t, c, "m0", "m1", "m2", "m3", "m4", "m5")
	c.waitConverged(60 * time.Second)
	c.server.stop(t)
	downSince := time.Now()

	cl := login(t, a)
	inbox := byToken(t, cl, "INBOX")
	mustOK(t, "CREATE", cl.Create("Offline", nil).Wait())
	mustOK(t, "SELECT", func() error { _, err := cl.Select("INBOX", nil).Wait(); return err }())
	mustOK(t, "STORE", cl.Store(uidSet(inbox["m0"].uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close())
	msgs, err := cl.Fetch(uidSet(inbox["m1"].uid), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	mustOK(t, "FETCH BODY[]", err)
	if len(msgs) != 1 || !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH BODY[] while offline: %+v, want \\Seen set", msgs)
	}
	_, err = cl.Copy(uidSet(inbox["m2"].uid), "Offline").Wait()
	mustOK(t, "COPY", err)
	_, err = cl.Move(uidSet(inbox["m3"].uid), "Archive").Wait()
	mustOK(t, "MOVE", err)
	appendToken(t, cl, "Offline", "a0")
	mustOK(t, "STORE \\Deleted", cl.Store(uidSet(inbox["m4"].uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	mustOK(t, "UID EXPUNGE", cl.UIDExpunge(uidSet(inbox["m4"].uid)).Close())
	cl.Close()

	// kill -9, and the daemon started again on its database.
	a.p.kill()
	c.startDevice(a)
	cl = login(t, a)
	wantInbox := map[string][]string{"m0": {`\Flagged`}, "m1": {`\Seen`}, "m2": nil, "m5": nil}
	wantBox(t, "device a after a restart", "INBOX", byToken(t, cl, "INBOX"), wantInbox)
	mustOK(t, "STORE", cl.Store(uidSet(inbox["m5"].uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$AfterRestart"}}, nil).Close())
	wantInbox["m5"] = []string{"$AfterRestart"}
	cl.Close()
	const changes = 9 // CREATE, STORE, the \Seen, COPY, MOVE, APPEND, STORE, EXPUNGE, STORE
	if n := queuedStatus(t, a); n != changes {
		t.Errorf("cspool status counts %d changes waiting, want %d", n, changes)
	}
	wantBox(t, "device b while a is offline", "INBOX", byToken(t, login(t, b), "INBOX"),
		map[string][]string{"m0": nil, "m1": nil, "m2": nil, "m3": nil, "m4": nil, "m5": nil})

	c.startServer()
	back := time.Now()
	// About half a second (the daemons ask an unreachable spool every
	// 500 ms whether it is back); the bound leaves room for a loaded
	// machine, and is well below the 8 s and more the backoff alone would
	// take after this long.
	took := c.timeToConverge(t, back, 10*time.Second)
	t.Logf("spool down %v; both devices converged %v after it answered again (%d changes queued on a)",
		back.Sub(downSince).Round(time.Millisecond), took.Round(time.Millisecond), changes)
	if !strings.Contains(a.p.stderr.String(), "spool reachable again") {
		t.Error(`device a's log does not say "spool reachable again"`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	head, err := c.head(ctx)
	cancel()
	if err != nil || head != 6+changes {
		t.Errorf("the log's head is %d (%v), want %d: each delivery and change once", head, err, 6+changes)
	}
	for _, d := range c.devices {
		cl := login(t, d)
		who := "device " + d.name
		wantBox(t, who, "INBOX", byToken(t, cl, "INBOX"), wantInbox)
		wantBox(t, who, "Archive", byToken(t, cl, "Archive"), map[string][]string{"m3": nil})
		wantBox(t, who, "Offline", byToken(t, cl, "Offline"), map[string][]string{"m2": nil, "a0": {`\Draft`}})
		cl.Close()
	}
	sameDumps(t, c)
}

// proxy relays TCP connections to a target, and can cut them off (new
// connections refused, open ones closed) and let them through again on
// the same address: one device's way to the spool.
type proxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), target: target, conns: map[net.Conn]bool{}}
	p.open(t)
	t.Cleanup(p.cut)
	return p
}

// open listens again.
func (p *proxy) open(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
}

func (p *proxy) relay(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	c.Close()
	s.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// cut closes the listener and every open connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// TestOfflineConflict: device a is cut off from the spool while device b
// is not; both change the same messages; when a gets through again, its
// queue goes to the log after b's changes, and both devices end the same,
// as the log's order decides (docs/IMAP.md, "Offline").
// behindProxy starts a cluster of two devices, device a reaching the
// spool through a proxy that the test can cut.
func behindProxy(t *testing.T) (c *cluster, a, b *device, px *proxy) {
	t.Helper()
	c = newCluster(t, clusterOptions{})
	a, b = c.devices[0], c.devices[1]
	px = newProxy(t, fmt.Sprintf("127.0.0.1:%d", c.httpPort))
	a.p.stop(t)
	a.spool = "http://" + px.addr
	c.startDevice(a)
	return c, a, b, px
}

func TestOfflineConflict(t *testing.T) {
	t.Parallel()
	c, a, b, px := behindProxy(t)
	deliverTokens(t, c, "m0", "m1", "m2", "m3")
	ca, cb := login(t, a), login(t, b)
	mustOK(t, "CREATE Work", cb.Create("Work", nil).Wait())
	c.waitConverged(60 * time.Second)
	px.cut()

	inbox := byToken(t, ca, "INBOX")
	store := func(cl *imapclient.Client, tok string, op imap.StoreFlagsOp, f imap.Flag) {
		t.Helper()
		mustOK(t, "STORE "+tok, cl.Store(uidSet(inbox[tok].uid), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{f}}, nil).Close())
	}
	expunge := func(cl *imapclient.Client, tok string) {
		t.Helper()
		store(cl, tok, imap.StoreFlagsAdd, imap.FlagDeleted)
		mustOK(t, "UID EXPUNGE "+tok, cl.UIDExpunge(uidSet(inbox[tok].uid)).Close())
	}
	move := func(cl *imapclient.Client, tok, to string) {
		t.Helper()
		_, err := cl.Move(uidSet(inbox[tok].uid), to).Wait()
		mustOK(t, "MOVE "+tok, err)
	}
	// b, online, first in time.
	byToken(t, cb, "INBOX")
	store(cb, "m0", imap.StoreFlagsAdd, imap.FlagSeen)
	move(cb, "m1", "Work")
	expunge(cb, "m2")
	store(cb, "m3", imap.StoreFlagsAdd, imap.FlagAnswered)
	// a, cut off, has not seen any of it, and changes the same messages.
	wantBox(t, "device a, cut off", "INBOX", byToken(t, ca, "INBOX"),
		map[string][]string{"m0": nil, "m1": nil, "m2": nil, "m3": nil})
	store(ca, "m0", imap.StoreFlagsAdd, imap.FlagFlagged)
	store(ca, "m0", imap.StoreFlagsDel, imap.FlagSeen)
	move(ca, "m1", "Archive")
	store(ca, "m2", imap.StoreFlagsAdd, "$Mine")
	expunge(ca, "m3")
	wantBox(t, "device a, cut off", "INBOX", byToken(t, ca, "INBOX"),
		map[string][]string{"m0": {`\Flagged`}, "m2": {"$Mine"}})
	if n := queuedStatus(t, a); n != 6 {
		t.Errorf("cspool status counts %d changes waiting on device a, want 6", n)
	}

	px.open(t)
	back := time.Now()
	took := c.timeToConverge(t, back, 30*time.Second)
	t.Logf("converged %v after device a got through again", took.Round(time.Millisecond))
	// b's changes are in the log first: a's later \Seen removal wins, its
	// move takes the message from where b put it, its keyword on the
	// message b expunged does nothing, its expunge removes the message b
	// flagged.
	for _, d := range c.devices {
		cl := login(t, d)
		who := "device " + d.name
		wantBox(t, who, "INBOX", byToken(t, cl, "INBOX"), map[string][]string{"m0": {`\Flagged`}})
		wantBox(t, who, "Archive", byToken(t, cl, "Archive"), map[string][]string{"m1": nil})
		wantBox(t, who, "Work", byToken(t, cl, "Work"), map[string][]string{})
		cl.Close()
	}
	sameDumps(t, c)
}

// TestOfflineBothConflict: both devices of the user are cut off at once and
// change the same messages (flags, the same expunge, an expunge against a
// move, an APPEND each to INBOX, the same CREATE), then both get through
// at the same moment. Whatever order their queues land in, every device
// ends with the same state: the flags both added, the message both
// expunged gone once, both appended messages (one of them renumbered),
// the mailbox both created once.
func TestOfflineBothConflict(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	a, b := c.devices[0], c.devices[1]
	pxa := newProxy(t, fmt.Sprintf("127.0.0.1:%d", c.httpPort))
	pxb := newProxy(t, fmt.Sprintf("127.0.0.1:%d", c.httpPort))
	for _, x := range []struct {
		d  *device
		px *proxy
	}{{a, pxa}, {b, pxb}} {
		x.d.p.stop(t)
		x.d.spool = "http://" + x.px.addr
		c.startDevice(x.d)
	}
	deliverTokens(t, c, "m0", "m1", "m2")
	ca, cb := login(t, a), login(t, b)
	mustOK(t, "CREATE Work", cb.Create("Work", nil).Wait())
	c.waitConverged(60 * time.Second)
	pxa.cut()
	pxb.cut()

	inbox := byToken(t, ca, "INBOX")
	if got := byToken(t, cb, "INBOX"); fmt.Sprint(got) != fmt.Sprint(inbox) {
		t.Fatalf("devices differ before the cut: %v and %v", inbox, got)
	}
	store := func(cl *imapclient.Client, tok string, op imap.StoreFlagsOp, f imap.Flag) {
		t.Helper()
		mustOK(t, "STORE "+tok, cl.Store(uidSet(inbox[tok].uid), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{f}}, nil).Close())
	}
	expunge := func(cl *imapclient.Client, tok string) {
		t.Helper()
		store(cl, tok, imap.StoreFlagsAdd, imap.FlagDeleted)
		mustOK(t, "UID EXPUNGE "+tok, cl.UIDExpunge(uidSet(inbox[tok].uid)).Close())
	}
	store(ca, "m0", imap.StoreFlagsAdd, imap.FlagFlagged)
	store(cb, "m0", imap.StoreFlagsAdd, imap.FlagSeen)
	expunge(ca, "m1")
	expunge(cb, "m1")
	expunge(ca, "m2")
	_, err := cb.Move(uidSet(inbox["m2"].uid), "Work").Wait()
	mustOK(t, "MOVE m2", err)
	appendToken(t, ca, "INBOX", "fromA")
	appendToken(t, cb, "INBOX", "fromB")
	mustOK(t, "CREATE Same on a", ca.Create("Same", nil).Wait())
	mustOK(t, "CREATE Same on b", cb.Create("Same", nil).Wait())

	pxa.open(t)
	pxb.open(t)
	took := c.timeToConverge(t, time.Now(), 60*time.Second)
	t.Logf("converged %v after both devices got through", took.Round(time.Millisecond))
	for _, d := range c.devices {
		cl := login(t, d)
		who := "device " + d.name
		got := byToken(t, cl, "INBOX")
		if f := got["m0"].flags; fmt.Sprint(f) != fmt.Sprint([]string{`\Flagged`, `\Seen`}) {
			t.Errorf("%s: m0 has flags %v, want both devices' \\Flagged and \\Seen", who, f)
		}
		for _, tok := range []string{"m1", "m2"} {
			if _, ok := got[tok]; ok {
				t.Errorf("%s: INBOX still holds %s, which both devices took out of it", who, tok)
			}
		}
		for _, tok := range []string{"fromA", "fromB"} {
			if _, ok := got[tok]; !ok {
				t.Errorf("%s: INBOX lacks %s, appended while offline", who, tok)
			}
		}
		boxes, err := cl.List("", "*", nil).Collect()
		mustOK(t, "LIST", err)
		n := 0
		for _, bx := range boxes {
			if bx.Mailbox == "Same" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: LIST shows Same %d times, want once", who, n)
		}
		cl.Close()
	}
	sameDumps(t, c)
}

// TestOfflineDeleteKeepsUnseen: the changes of a device cut off wait for
// what it saw, with the real binaries. Device a, cut off, deletes the
// mailbox Old (it shows m0 there) and expunges INBOX (it shows m2
// \Deleted). Meanwhile device b, online, moves m1 into Old, and takes
// \Deleted off m2 and files it in Keep. Once a gets through, every device
// shows Old with m1 alone and Keep with m2: before, the DELETE took m1
// with the mailbox and the EXPUNGE took m2 out of Keep, on every device,
// and neither device had ever shown the user that it would.
func TestOfflineDeleteKeepsUnseen(t *testing.T) {
	t.Parallel()
	c, a, b, px := behindProxy(t)
	deliverTokens(t, c, "m0", "m1", "m2")
	ca, cb := login(t, a), login(t, b)
	mustOK(t, "CREATE Old", cb.Create("Old", nil).Wait())
	mustOK(t, "CREATE Keep", cb.Create("Keep", nil).Wait())
	inbox := byToken(t, cb, "INBOX")
	_, err := cb.Move(uidSet(inbox["m0"].uid), "Old").Wait()
	mustOK(t, "MOVE m0", err)
	mustOK(t, "STORE m2", cb.Store(uidSet(inbox["m2"].uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	c.waitConverged(60 * time.Second)
	px.cut()

	byToken(t, cb, "INBOX")
	_, err = cb.Move(uidSet(inbox["m1"].uid), "Old").Wait()
	mustOK(t, "MOVE m1", err)
	mustOK(t, "STORE -\\Deleted m2", cb.Store(uidSet(inbox["m2"].uid), &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	_, err = cb.Move(uidSet(inbox["m2"].uid), "Keep").Wait()
	mustOK(t, "MOVE m2", err)

	wantBox(t, "device a, cut off", "Old", byToken(t, ca, "Old"), map[string][]string{"m0": nil})
	wantBox(t, "device a, cut off", "INBOX", byToken(t, ca, "INBOX"), map[string][]string{"m1": nil, "m2": {`\Deleted`}})
	mustOK(t, "EXPUNGE", ca.Expunge().Close())
	mustOK(t, "UNSELECT", ca.Unselect().Wait())
	mustOK(t, "DELETE Old", ca.Delete("Old").Wait())
	if n := queuedStatus(t, a); n != 2 {
		t.Errorf("cspool status counts %d changes waiting on device a, want 2", n)
	}

	px.open(t)
	took := c.timeToConverge(t, time.Now(), 30*time.Second)
	t.Logf("converged %v after device a got through again", took.Round(time.Millisecond))
	// Old keeps its UIDVALIDITY on both devices: every UID device a's
	// sessions saw in it was the log's, so a client takes up its state of
	// it again (mbsync and OfflineIMAP stopped for good on the new one
	// device a gave it before).
	var validities []uint32
	for _, d := range c.devices {
		cl := login(t, d)
		st, err := cl.Status("Old", &imap.StatusOptions{UIDValidity: true}).Wait()
		mustOK(t, "STATUS Old", err)
		validities = append(validities, st.UIDValidity)
		cl.Close()
	}
	if validities[0] != validities[1] {
		t.Errorf("Old has UIDVALIDITY %d on device a and %d on device b, want the same", validities[0], validities[1])
	}
	for _, d := range c.devices {
		cl := login(t, d)
		who := "device " + d.name
		old := byToken(t, cl, "Old")
		wantBox(t, who, "Old", old, map[string][]string{"m1": nil})
		if _, ok := old["m0"]; ok || len(old) != 1 {
			t.Errorf("%s: Old holds %v, want m1 alone", who, old)
		}
		wantBox(t, who, "Keep", byToken(t, cl, "Keep"), map[string][]string{"m2": nil})
		if got := byToken(t, cl, "INBOX"); len(got) != 0 {
			t.Errorf("%s: INBOX holds %v, want nothing", who, got)
		}
		cl.Close()
	}
	// Each daemon says what it kept, the deleting one too: it has
	// applied both changes by now.
	for _, d := range c.devices {
		for _, kind := range []string{"Expunge", "DeleteMailbox"} {
			want := `msg="change applied, messages its author had not seen so kept"`
			if !slices.ContainsFunc(strings.Split(d.p.stderr.String(), "\n"), func(l string) bool {
				return strings.Contains(l, want) && strings.Contains(l, "command="+kind+" kept=1")
			}) {
				t.Errorf("device %s did not log the %s that kept a message", d.name, kind)
			}
		}
	}
	sameDumps(t, c)
}
