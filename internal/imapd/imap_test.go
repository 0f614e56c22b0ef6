package imapd

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

var order = []string{"plain", "multipart", "latin1", "broken"}

// deliverAll delivers the test messages (UIDs 1 to 4 in INBOX) and waits
// for d to apply them.
func deliverAll(r *rig, d *device) {
	var pos uint64
	for _, k := range order {
		pos = r.Deliver([]byte(messages[k]))
	}
	d.synced(pos)
}

func imapCode(err error) imap.ResponseCode {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

func TestLoginWrongPassword(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	c, err := imapclient.DialInsecure(d.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("alice", "wrong").Wait()
	if imapCode(err) != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("login with a wrong password: %v, want NO [AUTHENTICATIONFAILED]", err)
	}
	if err := c.Login("mallory", testPassword).Wait(); err == nil {
		t.Fatal("login with a wrong user name succeeded")
	}
	if err := c.Login("alice", testPassword).Wait(); err != nil {
		t.Fatalf("login after failures: %v", err)
	}
}

func TestNewRefusesEmptyPassword(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	if _, err := New(Config{Store: d.store, Submit: d.sub, User: "alice"}); err == nil {
		t.Fatal("New accepted an empty password without AllowEmptyPassword")
	}
	if _, err := New(Config{Store: d.store, Submit: d.sub, User: "alice", AllowEmptyPassword: true}); err != nil {
		t.Fatalf("New with AllowEmptyPassword: %v", err)
	}
}

func TestFetch(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	sel := mustSelect(t, c, "INBOX")
	if sel.NumMessages != 4 || sel.UIDValidity != 1 || sel.UIDNext != 5 {
		t.Fatalf("SELECT INBOX: %+v, want 4 messages, UIDVALIDITY 1, UIDNEXT 5", sel)
	}
	if !slices.Contains(sel.PermanentFlags, imap.FlagWildcard) {
		t.Errorf("PERMANENTFLAGS %v lack \\*", sel.PermanentFlags)
	}
	bodyAll := &imap.FetchItemBodySection{Peek: true}
	header := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
	part1 := &imap.FetchItemBodySection{Part: []int{1}, Peek: true}
	partial := &imap.FetchItemBodySection{Peek: true, Partial: &imap.SectionPartial{Offset: 6, Size: 10}}
	fields := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4), &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection:   []*imap.FetchItemBodySection{bodyAll, header, text, part1, partial, fields},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 {
		t.Fatalf("FETCH returned %d messages, want 4", len(msgs))
	}
	for i, m := range msgs {
		raw := []byte(messages[order[i]])
		if m.UID != imap.UID(i+1) || m.SeqNum != uint32(i+1) {
			t.Errorf("message %d: seq %d uid %d", i+1, m.SeqNum, m.UID)
		}
		if got := m.FindBodySection(bodyAll); !bytes.Equal(got, raw) {
			t.Errorf("%s: BODY[] differs from what was delivered:\n%q\nwant\n%q", order[i], got, raw)
		}
		if m.RFC822Size != int64(len(raw)) {
			t.Errorf("%s: RFC822.SIZE %d, want %d", order[i], m.RFC822Size, len(raw))
		}
		if got := m.FindBodySection(partial); !bytes.Equal(got, raw[6:16]) {
			t.Errorf("%s: BODY[]<6.10> = %q, want %q", order[i], got, raw[6:16])
		}
		h, tx := m.FindBodySection(header), m.FindBodySection(text)
		if order[i] != "broken" && !bytes.Equal(append(append([]byte{}, h...), tx...), raw) {
			t.Errorf("%s: HEADER+TEXT is not the message", order[i])
		}
		if len(withoutRecent(m.Flags)) != 0 {
			t.Errorf("%s: flags %v after PEEK, want none", order[i], m.Flags)
		}
		if m.BodyStructure == nil || m.Envelope == nil {
			t.Errorf("%s: no BODYSTRUCTURE or ENVELOPE", order[i])
		}
	}
	if s := msgs[0].Envelope.Subject; s != "Lunch on Friday" {
		t.Errorf("envelope subject %q", s)
	}
	if s := msgs[1].Envelope.Subject; s != "Résumé attached" {
		t.Errorf("RFC 2047 subject decoded as %q", s)
	}
	if got := string(msgs[0].FindBodySection(fields)); got != "Subject: Lunch on Friday\r\n\r\n" {
		t.Errorf("HEADER.FIELDS (Subject) = %q", got)
	}
	mp, ok := msgs[1].BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || mp.Subtype != "mixed" || len(mp.Children) != 2 {
		t.Fatalf("multipart BODYSTRUCTURE: %#v", msgs[1].BodyStructure)
	}
	if got := string(msgs[1].FindBodySection(part1)); got != "Voil=C3=A0 mon CV, caf=C3=A9 compris." {
		t.Errorf("BODY[1] of the multipart = %q", got)
	}
	// A message that is not MIME is one text part, byte for byte.
	broken := []byte(messages["broken"])
	if sp, ok := msgs[3].BodyStructure.(*imap.BodyStructureSinglePart); !ok || sp.Type != "text" {
		t.Errorf("broken message BODYSTRUCTURE %#v, want one text part", msgs[3].BodyStructure)
	}
	if got := msgs[3].FindBodySection(text); !bytes.Equal(got, broken) {
		t.Errorf("broken message BODY[TEXT] = %q, want the whole message", got)
	}

	// BINARY decodes the transfer encoding.
	bin := &imap.FetchItemBinarySection{Part: []int{1}, Peek: true}
	msgs, err = c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{bin}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(msgs[0].FindBinarySection(bin)); got != "Voilà mon CV, café compris." {
		t.Errorf("BINARY[1] = %q", got)
	}

	// BODY[] without PEEK sets \Seen through one command, and the response
	// carries the flags.
	before := r.Head()
	msgs, err = c.Fetch(imap.SeqSetNum(1, 3), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !slices.Contains(m.Flags, imap.FlagSeen) {
			t.Errorf("message %d: flags %v after BODY[], want \\Seen", m.SeqNum, m.Flags)
		}
	}
	if r.Head() != before+1 {
		t.Errorf("BODY[] on two messages appended %d entries, want 1", r.Head()-before)
	}
	// UID FETCH with * and a range beyond the last UID.
	msgs, err = c.Fetch(imap.UIDSet{{Start: 3, Stop: 0}}, &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 2 || msgs[0].UID != 3 || msgs[1].UID != 4 {
		t.Fatalf("UID FETCH 3:* = %v, %v", msgs, err)
	}
}

func TestStoreCopyMoveExpunge(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	var (
		expMu    sync.Mutex
		expunged []uint32 // the EXPUNGE responses, in order
	)
	c := d.client(&imapclient.UnilateralDataHandler{Expunge: func(seq uint32) {
		expMu.Lock()
		expunged = append(expunged, seq)
		expMu.Unlock()
	}})
	mustSelect(t, c, "INBOX")

	// One STORE over several messages is one entry.
	before := r.Head()
	msgs, err := c.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd,
		Flags: []imap.Flag{imap.FlagFlagged, "$Label1"}}, nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if r.Head() != before+1 {
		t.Errorf("STORE 1:* appended %d entries, want 1", r.Head()-before)
	}
	if len(msgs) != 4 {
		t.Fatalf("STORE returned %d FETCH responses, want 4", len(msgs))
	}
	for _, m := range msgs {
		if !reflect.DeepEqual(withoutRecent(m.Flags), []imap.Flag{imap.FlagFlagged, "$Label1"}) {
			t.Errorf("message %d flags %v", m.SeqNum, m.Flags)
		}
	}
	msgs, err = c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsDel, Flags: []imap.Flag{"$label1"}}, nil).Collect()
	if err != nil || len(msgs) != 1 || !reflect.DeepEqual(withoutRecent(msgs[0].Flags), []imap.Flag{imap.FlagFlagged}) {
		t.Fatalf("STORE -FLAGS ($label1): %v %v", msgs, err)
	}
	msgs, err = c.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect()
	if err != nil || len(msgs) != 0 {
		t.Fatalf("UID STORE FLAGS.SILENT: %d responses, %v; want none", len(msgs), err)
	}
	m, err := d.store.Message(context.Background(), mailstore.InboxID(), 3, 0)
	if err != nil || !reflect.DeepEqual(m.Flags, []string{`\Seen`}) {
		t.Fatalf("flags of UID 3 in the store: %v %v", m, err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{`\Bogus`}}, nil).Close(); err == nil {
		t.Error("STORE of an unknown system flag succeeded")
	}

	// COPY: one entry, COPYUID.
	before = r.Head()
	cd, err := c.Copy(imap.SeqSetNum(1, 2), "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if r.Head() != before+1 {
		t.Errorf("COPY appended %d entries, want 1", r.Head()-before)
	}
	if cd.UIDValidity != 6 || cd.SourceUIDs.String() != "1:2" || cd.DestUIDs.String() != "1:2" {
		t.Errorf("COPYUID %d %v %v, want 6 1:2 1:2", cd.UIDValidity, cd.SourceUIDs, cd.DestUIDs)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Nowhere").Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("COPY to a missing mailbox: %v, want NO [TRYCREATE]", err)
	}

	// MOVE: COPYUID and one EXPUNGE per message, none twice.
	uidsBefore, err := d.store.UIDs(context.Background(), mailstore.InboxID())
	if err != nil || len(uidsBefore) != 4 {
		t.Fatalf("INBOX UIDs before MOVE: %v, %v; want 4", uidsBefore, err)
	}
	expMu.Lock()
	expunged = nil
	expMu.Unlock()
	md, err := c.Move(imap.SeqSetNum(2, 3), "Trash").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if md.UIDValidity != 4 || md.SourceUIDs.String() != "2:3" || md.DestUIDs.String() != "1:2" {
		t.Errorf("MOVE COPYUID %d %v %v", md.UIDValidity, md.SourceUIDs, md.DestUIDs)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Errorf("after MOVE the client counts %d messages, want 2", n)
	}
	// Replay the EXPUNGEs on the list as the client saw it: each must name a
	// message still there, and together exactly the two moved.
	expMu.Lock()
	seen := slices.Clone(expunged)
	expMu.Unlock()
	view := slices.Clone(uidsBefore)
	var gone []mailstore.UID
	for _, seq := range seen {
		if seq == 0 || int(seq) > len(view) {
			t.Fatalf("MOVE: EXPUNGE %d with %d messages left (EXPUNGEs %v)", seq, len(view), seen)
		}
		gone = append(gone, view[seq-1])
		view = slices.Delete(view, int(seq-1), int(seq))
	}
	slices.Sort(gone)
	if want := uidsBefore[1:3]; !slices.Equal(gone, want) {
		t.Errorf("MOVE of 2:3: EXPUNGEs %v removed UIDs %v, want each of %v once", seen, gone, want)
	}

	// EXPUNGE of \Deleted messages; UID EXPUNGE only within its set.
	if err := c.Store(imap.SeqSetNum(1, 2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	before = r.Head()
	if _, err := c.UIDExpunge(imap.UIDSetNum(4)).Collect(); err != nil {
		t.Fatal(err)
	}
	if r.Head() != before+1 {
		t.Errorf("UID EXPUNGE appended %d entries, want 1", r.Head()-before)
	}
	uids, _ := d.store.UIDs(context.Background(), mailstore.InboxID())
	if !reflect.DeepEqual(uids, []mailstore.UID{1}) {
		t.Fatalf("INBOX UIDs after UID EXPUNGE 4: %v, want [1]", uids)
	}
	seqs, err := c.Expunge().Collect()
	if err != nil || !reflect.DeepEqual(seqs, []uint32{1}) {
		t.Fatalf("EXPUNGE: %v %v, want [1]", seqs, err)
	}
	if n := c.Mailbox().NumMessages; n != 0 {
		t.Errorf("client counts %d messages, want 0", n)
	}
}

func TestMailboxCommands(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)

	list := func(opts *imap.ListOptions, pattern string) map[string][]imap.MailboxAttr {
		t.Helper()
		l, err := c.List("", pattern, opts).Collect()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]imap.MailboxAttr{}
		for _, e := range l {
			out[e.Mailbox] = e.Attrs
		}
		return out
	}
	all := list(nil, "*")
	for name, attr := range map[string]imap.MailboxAttr{"Sent": imap.MailboxAttrSent, "Trash": imap.MailboxAttrTrash,
		"Drafts": imap.MailboxAttrDrafts, "Junk": imap.MailboxAttrJunk, "Archive": imap.MailboxAttrArchive} {
		if !slices.Contains(all[name], attr) {
			t.Errorf("LIST: %s has %v, want %s", name, all[name], attr)
		}
	}
	if _, ok := all["INBOX"]; !ok {
		t.Error("LIST * lacks INBOX")
	}

	if err := c.Create("Projects/2025", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Projects/2025", nil).Wait(); imapCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("CREATE of an existing mailbox: %v, want NO [ALREADYEXISTS]", err)
	}
	if err := c.Create("Flagged mail", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrFlagged}}).Wait(); err != nil {
		t.Fatal(err)
	}
	all = list(&imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, UIDNext: true}}, "*")
	if !slices.Contains(all["Projects"], imap.MailboxAttrHasChildren) || !slices.Contains(all["Projects/2025"], imap.MailboxAttrHasNoChildren) {
		t.Errorf("CHILDREN attributes: %v %v", all["Projects"], all["Projects/2025"])
	}
	if !slices.Contains(all["Flagged mail"], imap.MailboxAttrFlagged) {
		t.Errorf("CREATE USE (\\Flagged): %v", all["Flagged mail"])
	}
	su := list(&imap.ListOptions{SelectSpecialUse: true}, "*")
	if len(su) != 6 {
		t.Errorf("LIST (SPECIAL-USE) returned %d mailboxes, want 6: %v", len(su), su)
	}
	if err := c.Rename("Projects", "Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	all = list(nil, "*")
	if _, ok := all["Work/2025"]; !ok {
		t.Errorf("RENAME did not carry the child: %v", all)
	}
	if err := c.Delete("Work/2025").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("Nope").Wait(); imapCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("DELETE of a missing mailbox: %v, want NO [NONEXISTENT]", err)
	}
	if err := c.Delete("INBOX").Wait(); err == nil {
		t.Error("DELETE INBOX succeeded")
	}

	if err := c.Subscribe("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	subs := list(&imap.ListOptions{SelectSubscribed: true}, "*")
	if _, ok := subs["Work"]; !ok || len(subs) != 7 {
		t.Errorf("LIST (SUBSCRIBED): %v, want Work and the six initial mailboxes", subs)
	}
	if err := c.Unsubscribe("Work").Wait(); err != nil {
		t.Fatal(err)
	}
	if subs := list(&imap.ListOptions{SelectSubscribed: true}, "*"); len(subs) != 6 || subs["Work"] != nil {
		t.Errorf("after UNSUBSCRIBE: %v", subs)
	}
	lsub, err := c.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	if err != nil || len(lsub) != 6 {
		t.Errorf("LSUB-like listing: %d %v", len(lsub), err)
	}

	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDNext: true, UIDValidity: true, Size: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, k := range order {
		size += int64(len(messages[k]))
	}
	if *st.NumMessages != 4 || *st.NumUnseen != 4 || st.UIDNext != 5 || st.UIDValidity != 1 || *st.Size != size {
		t.Errorf("STATUS INBOX: %+v", st)
	}

	// APPEND with APPENDUID, flags and date.
	msg := "From: alice@example.net\r\nSubject: draft\r\n\r\nunfinished\r\n"
	date := time.Date(2025, 12, 1, 12, 0, 0, 0, time.UTC)
	ac := c.Append("Drafts", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft, imap.FlagSeen}, Time: date})
	ac.Write([]byte(msg))
	ac.Close()
	ad, err := ac.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if ad.UID != 1 || ad.UIDValidity != 3 {
		t.Errorf("APPENDUID %d %d, want 3 1", ad.UIDValidity, ad.UID)
	}
	m, err := d.store.Message(context.Background(), mailstore.InitialMailboxes()[2].ID, 1, mailstore.WantRaw)
	if err != nil || string(m.Raw) != msg || !m.InternalDate.Equal(date) || !reflect.DeepEqual(m.Flags, []string{`\Seen`, `\Draft`}) {
		t.Errorf("appended message in the store: %+v, %v", m, err)
	}
	ac = c.Append("Missing", int64(len(msg)), nil)
	ac.Write([]byte(msg))
	ac.Close()
	if _, err := ac.Wait(); imapCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("APPEND to a missing mailbox: %v, want NO [TRYCREATE]", err)
	}

	ns, err := c.Namespace().Wait()
	if err != nil || len(ns.Personal) != 1 || ns.Personal[0].Delim != '/' {
		t.Errorf("NAMESPACE: %+v %v", ns, err)
	}
	mustSelect(t, c, "INBOX")
	if err := c.Unselect().Wait(); err != nil {
		t.Errorf("UNSELECT: %v", err)
	}
}

// TestExpungeReadOnly sends EXPUNGE and UID EXPUNGE in an EXAMINEd
// mailbox holding a message marked \Deleted: each is answered OK with no
// EXPUNGE response and removes nothing (RFC 9051 sections 6.3.3 and
// 6.4.3), as Gnus expects when it leaves a group it had EXAMINEd.
func TestExpungeReadOnly(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	w.ok(`STORE 2 +FLAGS.SILENT (\Deleted)`)
	w.ok("EXAMINE INBOX")
	before := r.Head()
	expectUntagged(t, "EXPUNGE", w.ok("EXPUNGE"))
	expectUntagged(t, "UID EXPUNGE 2", w.ok("UID EXPUNGE 2"))
	if r.Head() != before {
		t.Errorf("EXPUNGE in an EXAMINEd mailbox appended %d entries, want 0", r.Head()-before)
	}
	expectUntagged(t, "STATUS INBOX", w.ok("STATUS INBOX (MESSAGES)"), "* STATUS INBOX (MESSAGES 4)")
	// SELECTed, the same EXPUNGE removes the message.
	w.ok("SELECT INBOX")
	expectUntagged(t, "EXPUNGE", w.ok("EXPUNGE"), "* 2 EXPUNGE")
}

func TestExamineIsReadOnly(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	before := r.Head()
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err == nil {
		t.Error("STORE in an EXAMINEd mailbox succeeded")
	}
	if exp, err := c.Expunge().Collect(); err != nil || len(exp) != 0 {
		t.Errorf("EXPUNGE in an EXAMINEd mailbox: %v %v, want OK removing nothing", exp, err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Trash").Wait(); err == nil {
		t.Error("MOVE from an EXAMINEd mailbox succeeded")
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 || len(withoutRecent(msgs[0].Flags)) != 0 {
		t.Errorf("FETCH BODY[] in an EXAMINEd mailbox: %v %v; want no \\Seen", msgs, err)
	}
	if r.Head() != before {
		t.Errorf("EXAMINE session appended %d entries, want 0", r.Head()-before)
	}
	// COPY out of a read-only mailbox is allowed.
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Errorf("COPY from an EXAMINEd mailbox: %v", err)
	}
	// CLOSE of a read-only mailbox closes without expunging.
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Errorf("CLOSE of an EXAMINEd mailbox: %v", err)
	}
}

func TestSearch(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	if err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen, "Work"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	day := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	cases := []struct {
		name string
		c    imap.SearchCriteria
		want []uint32
	}{
		{"all", imap.SearchCriteria{}, []uint32{1, 2, 3, 4}},
		{"from header", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "BOB"}}}, []uint32{1}},
		{"subject decoded", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "résumé"}}}, []uint32{2}},
		{"header present", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: ""}}}, []uint32{1}},
		{"body plain", imap.SearchCriteria{Body: []string{"noon"}}, []uint32{1}},
		{"body quoted-printable", imap.SearchCriteria{Body: []string{"café"}}, []uint32{2}},
		{"body latin1", imap.SearchCriteria{Body: []string{"münchen"}}, []uint32{3}},
		{"body of a broken message", imap.SearchCriteria{Body: []string{"bytes"}}, []uint32{4}},
		{"text in header", imap.SearchCriteria{Text: []string{"lunch"}}, []uint32{1}},
		{"seen", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{2}},
		{"unseen", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, []uint32{1, 3, 4}},
		{"keyword any case", imap.SearchCriteria{Flag: []imap.Flag{"work"}}, []uint32{2}},
		{"larger", imap.SearchCriteria{Larger: int64(len(messages["plain"]))}, []uint32{2, 3}},
		{"smaller", imap.SearchCriteria{Smaller: int64(len(messages["broken"]) + 1)}, []uint32{4}},
		{"sent since", imap.SearchCriteria{SentSince: day("2025-11-25")}, []uint32{2, 3}},
		// The broken message has no Date: its internal date stands for it.
		{"sent before", imap.SearchCriteria{SentBefore: day("2025-11-25")}, []uint32{1, 4}},
		{"since (internal date)", imap.SearchCriteria{Since: day("2025-11-24")}, []uint32{1, 2, 3, 4}},
		{"before (internal date)", imap.SearchCriteria{Before: day("2025-11-24")}, nil},
		{"sequence set", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 3, Stop: 0}}}}, []uint32{3, 4}},
		{"uid set", imap.SearchCriteria{UID: []imap.UIDSet{imap.UIDSetNum(1, 4)}}, []uint32{1, 4}},
		{"not", imap.SearchCriteria{Not: []imap.SearchCriteria{{Body: []string{"noon"}}}}, []uint32{2, 3, 4}},
		{"or", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Body: []string{"noon"}}, {Flag: []imap.Flag{imap.FlagSeen}}}}}, []uint32{1, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Search(&tc.c, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			if got := data.AllSeqNums(); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("SEARCH %s = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Body: []string{"café"}}, nil).Wait()
	if err != nil || !reflect.DeepEqual(data.AllUIDs(), []imap.UID{2}) {
		t.Errorf("UID SEARCH BODY café = %v, %v", data, err)
	}
}

// TestIdlePush checks that a delivery appended to the spool reaches an
// idling session as EXISTS, and records the latency.
func TestIdlePush(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	exists := make(chan uint32, 16)
	c := d.client(&imapclient.UnilateralDataHandler{Mailbox: func(m *imapclient.UnilateralDataMailbox) {
		if m.NumMessages != nil {
			exists <- *m.NumMessages
		}
	}})
	mustSelect(t, c, "INBOX")
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		r.Deliver([]byte(fmt.Sprintf("Subject: push %d\r\n\r\nhello\r\n", i)))
		select {
		case n := <-exists:
			if n != uint32(5+i) {
				t.Fatalf("EXISTS %d, want %d", n, 5+i)
			}
			lat = append(lat, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Fatalf("no EXISTS within 5 s of delivery %d", i)
		}
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	t.Logf("delivery to untagged EXISTS in IDLE: median %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
}

// TestSecondSession checks that a session sees flags and expunges made by
// another session, in IDLE and on NOOP.
func TestSecondSession(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	a := d.client(nil)
	mustSelect(t, a, "INBOX")
	type event struct {
		expunge uint32
		seq     uint32
		flags   []imap.Flag
	}
	events := make(chan event, 32)
	b := d.client(&imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { events <- event{expunge: seq} },
		Fetch: func(m *imapclient.FetchMessageData) {
			buf, err := m.Collect()
			if err == nil {
				events <- event{seq: buf.SeqNum, flags: buf.Flags}
			}
		},
	})
	mustSelect(t, b, "INBOX")
	idle, err := b.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	next := func() event {
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no update within 5 s")
		}
		return event{}
	}
	if e := next(); e.seq != 2 || !reflect.DeepEqual(e.flags, []imap.Flag{imap.FlagFlagged}) {
		t.Fatalf("idling session got %+v, want FETCH 2 (FLAGS (\\Flagged))", e)
	}
	if err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	next()
	if _, err := a.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.expunge != 1 {
		t.Fatalf("idling session got %+v, want EXPUNGE 1", e)
	}
	idle.Close()
	idle.Wait()
	// Without IDLE the update arrives with the next command.
	if err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagAnswered}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.seq != 1 || !slices.Contains(e.flags, imap.FlagAnswered) {
		t.Fatalf("after NOOP: %+v, want FETCH 1 with \\Answered", e)
	}
	if n := b.Mailbox().NumMessages; n != 3 {
		t.Errorf("second session counts %d messages, want 3", n)
	}
}

// TestSecondDevice checks that changes made through one device reach a
// session on another device sharing the spool.
func TestSecondDevice(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	b := r.device("b")
	b.synced(r.Head())
	events := make(chan string, 32)
	cb := b.client(&imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { events <- fmt.Sprintf("EXPUNGE %d", seq) },
		Fetch: func(m *imapclient.FetchMessageData) {
			if buf, err := m.Collect(); err == nil {
				events <- fmt.Sprintf("FETCH %d UID %d %v", buf.SeqNum, buf.UID, withoutRecent(buf.Flags))
			}
		},
		Mailbox: func(m *imapclient.UnilateralDataMailbox) {
			if m.NumMessages != nil {
				events <- fmt.Sprintf("EXISTS %d", *m.NumMessages)
			}
		},
	})
	mustSelect(t, cb, "INBOX")
	idle, err := cb.Idle()
	if err != nil {
		t.Fatal(err)
	}
	ca := a.client(nil)
	mustSelect(t, ca, "INBOX")
	if err := ca.Store(imap.SeqSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Move(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: appended on a\r\n\r\nx\r\n"
	ac := ca.Append("INBOX", int64(len(msg)), nil)
	ac.Write([]byte(msg))
	ac.Close()
	if _, err := ac.Wait(); err != nil {
		t.Fatal(err)
	}
	// imapclient runs the Fetch handler on a goroutine of its own, so
	// where a FETCH lands among the other events is not what the server
	// sent; its UID pins it instead: message 3 is UID 3 only before the
	// EXPUNGE of message 1. The EXPUNGE and EXISTS keep their order.
	want := []string{"FETCH 3 UID 3 [\\Seen]", "EXPUNGE 1", "EXISTS 4"}
	var got []string
	for len(got) < len(want) {
		select {
		case e := <-events:
			got = append(got, e)
		case <-time.After(5 * time.Second):
			t.Fatalf("device b got %v, want %v", got, want)
		}
	}
	notFetch := func(e string) int {
		if strings.HasPrefix(e, "FETCH ") {
			return 0
		}
		return 1
	}
	sorted := slices.SortedStableFunc(slices.Values(got), func(a, b string) int {
		return cmp.Compare(notFetch(a), notFetch(b))
	})
	if !reflect.DeepEqual(sorted, want) {
		t.Fatalf("device b got %v, want %v (a FETCH anywhere)", got, want)
	}
	idle.Close()
	idle.Wait()
	if ca, cb := dump(t, a.store), dump(t, b.store); ca != cb {
		t.Errorf("devices differ:\n%s\n%s", ca, cb)
	}
}

// withoutRecent drops \Recent, which every message delivered after the
// device started has for the first session (recent_conformance_test.go tests it).
func withoutRecent(flags []imap.Flag) []imap.Flag {
	return slices.DeleteFunc(slices.Clone(flags), func(f imap.Flag) bool { return f == `\Recent` })
}

func dump(t *testing.T, st *mailstore.Store) string {
	t.Helper()
	var b strings.Builder
	boxes, err := st.Mailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range boxes {
		fmt.Fprintf(&b, "%s %d %d:", mb.Name, mb.UIDValidity, mb.UIDNext)
		st.Scan(context.Background(), mb.ID, 0, func(m *mailstore.Message) error {
			fmt.Fprintf(&b, " %d%v", m.UID, m.Flags)
			return nil
		})
		b.WriteString("\n")
	}
	return b.String()
}

// TestPartialOutcome makes another device expunge a message just before
// this device's command reaches the log.
func TestPartialOutcome(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	ids, err := d.store.MessageIDs(context.Background(), mailstore.InboxID(), []mailstore.UID{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	d.sub.set(false, func([]*command.Command) {
		r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[2]}})
	})
	cd, err := c.Copy(imap.SeqSetNum(1, 2), "Archive").Wait()
	if err != nil {
		t.Fatalf("COPY with one message expunged meanwhile: %v, want OK", err)
	}
	if cd.SourceUIDs.String() != "1" || cd.DestUIDs.String() != "1" {
		t.Errorf("COPYUID %v %v, want 1 1", cd.SourceUIDs, cd.DestUIDs)
	}
	if n := c.Mailbox().NumMessages; n != 3 {
		t.Errorf("after the partial COPY the client counts %d messages, want 3 (EXPUNGE sent)", n)
	}
	// All gone: NO [EXPUNGEISSUED].
	ids, _ = d.store.MessageIDs(context.Background(), mailstore.InboxID(), []mailstore.UID{3})
	d.sub.set(false, func([]*command.Command) {
		r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[3]}})
	})
	if _, err := c.Move(imap.UIDSetNum(3), "Archive").Wait(); imapCode(err) != "EXPUNGEISSUED" {
		t.Errorf("MOVE of a message expunged meanwhile: %v, want NO [EXPUNGEISSUED]", err)
	}
	d.sub.set(false, nil)
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Errorf("client counts %d messages, want 2", n)
	}
}

func TestAlertAtLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	d.srv.cfg.Alert = func() string { return "log fork detected\r\nsee the daemon's log" }
	conn := dialRaw(t, d.addr)
	conn.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	lines := conn.until("a1 ")
	if !strings.Contains(lines, "* OK [ALERT] log fork detected  see the daemon's log\r\n") || !strings.Contains(lines, "a1 OK") {
		t.Fatalf("login with an alert:\n%s", lines)
	}
}
