package imapd

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"golang.org/x/text/unicode/norm"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// searchWords mixes ASCII, letters whose case folds in interesting ways
// (ß, Σ/σ/ς, İ, K as the Kelvin sign), accents written composed and
// decomposed, a ligature, fullwidth letters, combining marks that
// decomposition reorders and an emoji, so needles cut from them cross the
// cases the index must get right.
var searchWords = []string{"quarterly", "Report", "MEETING", "invoice", "Straße", "ΣΟΦΙΑ", "σοφίας", "İstanbul",
	"Kelvin", "café", "crème", "naïve", "Zürich", "😀ok", "a", "ab", "x\"y", "tab\tin", "A.B-C", "münchen", "Ǆemal",
	"cafe\u0301", "ﬁnal", "ＦＵＬＬ", "ᾳ\u0301", "e\u0301\u0323"}

func randomText(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			if r.IntN(7) == 0 {
				b.WriteString("\r\n")
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(searchWords[r.IntN(len(searchWords))])
	}
	return b.String()
}

// randomMessage builds one of several shapes: plain, quoted-printable,
// base64 text, latin-1, multipart with an attachment carrying words in
// base64, a forwarded message, RFC 2047 headers, and broken ones.
func randomMessage(r *rand.Rand, i int) string {
	word := func() string { return searchWords[r.IntN(len(searchWords))] }
	hdr := func(name, v string) string {
		if r.IntN(3) == 0 {
			return name + ": " + mime.QEncoding.Encode("utf-8", v) + "\r\n"
		}
		if r.IntN(4) == 0 {
			return name + ": " + mime.BEncoding.Encode("utf-8", v) + "\r\n"
		}
		return name + ": " + v + "\r\n"
	}
	var b strings.Builder
	b.WriteString(hdr("From", word()+" <"+strings.ToLower(word())+"@example.org>"))
	b.WriteString(hdr("To", word()+"@example.net"))
	if r.IntN(2) == 0 {
		b.WriteString(hdr("Cc", word()+" <cc@example.com>"))
	}
	if r.IntN(3) == 0 {
		b.WriteString(hdr("Bcc", word()+"@hidden.example"))
	}
	b.WriteString(hdr("Subject", fmt.Sprintf("%s %d %s", word(), i, word())))
	b.WriteString(hdr("X-Other", word()))
	if r.IntN(2) == 0 {
		// Folded, sometimes with an encoded word that does not decode:
		// the field's text is its unfolded value.
		second := word()
		if r.IntN(2) == 0 {
			second = "=?x-unknown?q?" + strings.ToLower(word()) + "?="
		}
		b.WriteString(strings.TrimSuffix(hdr("X-Folded", word()), "\r\n") + "\r\n " + second + "\r\n")
	}
	text := randomText(r, 5+r.IntN(30))
	switch r.IntN(8) {
	case 0:
		b.WriteString("\r\n" + text + "\r\n")
	case 1:
		var q strings.Builder
		w := quotedprintable.NewWriter(&q)
		w.Write([]byte(text))
		w.Close()
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + q.String() + "\r\n")
	case 2:
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte(text)) + "\r\n")
	case 3:
		latin := strings.Map(func(c rune) rune {
			if c > 0xff {
				return '?'
			}
			return c
		}, text)
		raw := make([]byte, 0, len(latin))
		for _, c := range latin {
			raw = append(raw, byte(c))
		}
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n" + string(raw) + "\r\n")
	case 4:
		att := base64.StdEncoding.EncodeToString([]byte(randomText(r, 20)))
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
			text + "\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + att + "\r\n--b1--\r\n")
	case 5:
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner " + word() + "\r\n\r\n" + text + "\r\n")
	case 6:
		b.WriteString("Content-Type: text/plain; charset=x-unknown-charset\r\n\r\n" + text + "\r\n")
	default:
		// Broken: a header line without a colon, a body with a NUL-free
		// mess of everything.
		b.WriteString("this is not a header line\r\n\r\n" + text + " =C3=A9 " + word() + "\r\n")
	}
	return b.String()
}

// randomNeedle cuts a needle out of a word or a message, in random case,
// from 1 to 12 code points.
func randomNeedle(r *rand.Rand, msgs []string) string {
	var src []rune
	if r.IntN(2) == 0 {
		src = []rune(searchWords[r.IntN(len(searchWords))] + " " + searchWords[r.IntN(len(searchWords))])
	} else {
		m := msgs[r.IntN(len(msgs))]
		if r.IntN(3) == 0 {
			m = strings.ReplaceAll(m, "\r\n ", " ") // across an unfolded header line
		}
		src = []rune(m)
	}
	n := 1 + r.IntN(12)
	if n > len(src) {
		n = len(src)
	}
	start := r.IntN(len(src) - n + 1)
	needle := src[start : start+n]
	out := make([]rune, len(needle))
	for i, c := range needle {
		switch r.IntN(3) {
		case 0:
			out[i] = []rune(strings.ToUpper(string(c)))[0]
		case 1:
			out[i] = []rune(strings.ToLower(string(c)))[0]
		default:
			out[i] = c
		}
	}
	// Composed or decomposed, as a client may send either.
	switch r.IntN(4) {
	case 0:
		return norm.NFC.String(string(out))
	case 1:
		return norm.NFD.String(string(out))
	}
	return string(out)
}

func randomCriteria(r *rand.Rand, msgs []string, depth int) imap.SearchCriteria {
	var c imap.SearchCriteria
	needle := randomNeedle(r, msgs)
	switch r.IntN(8) {
	case 0:
		c.Body = []string{needle}
	case 1:
		c.Text = []string{needle}
	case 2, 3:
		c.Header = []imap.SearchCriteriaHeaderField{{Key: []string{"From", "To", "Cc", "Bcc", "Subject", "X-Other", "X-Folded"}[r.IntN(7)], Value: needle}}
	case 4:
		if depth < 2 {
			c.Not = []imap.SearchCriteria{randomCriteria(r, msgs, depth+1)}
		} else {
			c.Body = []string{needle}
		}
	case 5:
		if depth < 2 {
			c.Or = [][2]imap.SearchCriteria{{randomCriteria(r, msgs, depth+1), randomCriteria(r, msgs, depth+1)}}
		} else {
			c.Text = []string{needle}
		}
	case 6:
		c.Body = []string{needle, randomNeedle(r, msgs)}
	default:
		c.Header = []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: needle}}
		c.Body = []string{randomNeedle(r, msgs)}
	}
	return c
}

// scanned reads every message of a mailbox once, its raw bytes and its
// texts decoded too, each into a matcher of its own, which keeps them
// from one query to the next: the messages do not change while the index
// does. Decoded, they are tested as they are, never through the texts
// the store keeps of a body too long for the index.
func scanned(t *testing.T, st *mailstore.Store, mailbox *mailstore.Mailbox) []*matcher {
	t.Helper()
	ctx := context.Background()
	var mts []*matcher
	seq := uint32(0)
	err := st.Scan(ctx, mailbox.ID, mailstore.WantHeader|mailstore.WantEnvelope, func(m *mailstore.Message) error {
		seq++
		raw, err := m.LoadRaw(ctx)
		if err != nil {
			return err
		}
		mts = append(mts, &matcher{recent: func(imap.UID) bool { return false }, msg: m, seq: seq, body: raw,
			text: mimeform.BodyTexts(raw, m.HeaderLen)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mts
}

// scanSearch is the reference: every message through the matcher, with no
// help from the index.
func scanSearch(t *testing.T, mts []*matcher, c *imap.SearchCriteria) []uint32 {
	t.Helper()
	var out []uint32
	for _, mt := range mts {
		ok, err := mt.match(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, mt.seq)
		}
	}
	return out
}

// TestSearchIndexAgainstScan is the property test of the search index: over
// a random mailbox, random SEARCH criteria (BODY, TEXT, HEADER of indexed
// and other fields, NOT, OR, needles of 1 to 12 code points in random
// case) give through the real IMAP server exactly what the scan gives; with
// the index complete, dropped (every body unindexed) and half rebuilt.
func TestSearchIndexAgainstScan(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	rg := newRig(t)
	d := rg.device("a")
	var msgs []string
	var last uint64
	for i := 0; i < 60; i++ {
		m := randomMessage(r, i)
		msgs = append(msgs, m)
		last = rg.Deliver([]byte(m))
	}
	d.synced(last)
	if _, left, err := d.store.IndexPending(context.Background(), 1000); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	inbox, err := d.store.MailboxByName(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	reference := scanned(t, d.store, inbox)
	// 250 queries a phase with CSPOOL_HEAVY=1 without the race detector
	// (CI runs it so too), else 60.
	queries := 60
	if testproc.Heavy() && !testing.Short() {
		queries = testproc.Scale(t, 60, 250)
	}
	check := func(phase string) {
		t.Helper()
		hits := 0
		for q := 0; q < queries; q++ {
			crit := randomCriteria(r, msgs, 0)
			want := scanSearch(t, reference, &crit)
			data, err := c.Search(&crit, nil).Wait()
			if err != nil {
				t.Fatalf("%s: SEARCH %+v: %v", phase, crit, err)
			}
			got := data.AllSeqNums()
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("%s: SEARCH %#v: the index gives %v, the scan %v (seed %d)", phase, crit, got, want, seed)
			}
			if len(want) > 0 {
				hits++
			}
		}
		t.Logf("%s: %d queries, %d with matches", phase, queries, hits)
	}
	check("index complete")
	if err := d.store.Reindex(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("index dropped")
	if _, left, err := d.store.IndexPending(context.Background(), 30); err != nil || left != 30 { // half
		t.Fatalf("IndexPending: %d left, %v; want 30 left", left, err)
	}
	check("index half built")
	if _, left, err := d.store.IndexPending(context.Background(), 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	check("index rebuilt")
	st, err := d.store.IndexSize(context.Background())
	if err != nil || st.Bodies != 60 || st.Unindexed != 0 || st.IndexBytes == 0 {
		t.Errorf("IndexSize: %+v, %v", st, err)
	}
}

// TestImaplibSearch searches with Python's imaplib, a client written apart
// from go-imap, and checks every answer; the same queries must give the
// same answers with the index dropped (every message scanned).
func TestImaplibSearch(t *testing.T) {
	t.Parallel()
	python := needTool(t, "python3")
	r := newRig(t)
	d := r.device("a")
	msgs := []string{
		"From: Carol <carol@example.org>\r\nTo: dave@example.net\r\nCc: Erin <erin@example.com>\r\nSubject: Budget for Q3\r\n\r\nThe quarterly numbers are in.\r\n",
		"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?= attached\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nA naive cafe on the Hauptstra=C3=9Fe.\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("secretattachment quarterly")) + "\r\n--x--\r\n",
		"From: frank@example.org\r\nSubject: greetings\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("Viele Grüße aus der STRASSE, zz top")) + "\r\n",
	}
	var pos uint64
	for _, m := range msgs {
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	if _, left, err := d.store.IndexPending(context.Background(), 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	want := map[string]string{
		"body-word": "1", "body-substring": "1", "body-case": "1", "text-header": "1", "subject": "1",
		"from": "1", "to": "1", "cc": "1", "body-qp": "2", "not-in-attachment": "", "short": "3",
		"or": "1", "not": "2 3", "utf8-body": "2", "utf8-upper": "3", "utf8-subject": "2", "utf8-base64": "3",
	}
	run := func(phase string) {
		t.Helper()
		imaplibSearch(t, phase, python, "testdata/imaplib_search.py", d.addr, want)
	}
	run("indexed")
	if err := d.store.Reindex(context.Background()); err != nil {
		t.Fatal(err)
	}
	run("index dropped")
}

// imaplibSearch runs the imaplib script against the server at addr and
// checks each search's UIDs against want: the script prints a line a
// search, "NAME uid uid ...", then PASS.
func imaplibSearch(t *testing.T, phase, python, script, addr string, want map[string]string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, script, host, port, "alice", testPassword).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: imaplib: %v\n%s", phase, err, out)
	}
	got := map[string]string{}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[len(lines)-1] != "PASS" {
		t.Fatalf("%s: imaplib did not pass:\n%s", phase, out)
	}
	for _, l := range lines[:len(lines)-1] {
		name, uids, _ := strings.Cut(l, " ")
		got[name] = uids
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: SEARCH %s: UIDs %q, want %q", phase, name, got[name], w)
		}
	}
}

// TestImaplibSearchDecomposed: SEARCH compares texts decomposed (NFKD) and
// case-folded, as i;unicode-casemap (RFC 5051) does, for a needle sent as
// a literal with CHARSET UTF-8 and as a quoted string after ENABLE
// UTF8=ACCEPT, through Python's imaplib: é written as one code point and
// as e with U+0301 find each other in a subject and a body, e finds both,
// the ligature ﬁ and fullwidth letters are the letters they stand for;
// indexed and with the index dropped (every message scanned) alike.
func TestImaplibSearchDecomposed(t *testing.T) {
	t.Parallel()
	python := needTool(t, "python3")
	r := newRig(t)
	d := r.device("a")
	msgs := []string{
		"From: a@example.org\r\nSubject: Café crème\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe ﬁnal ＲＥＰＯＲＴ, un café ici.\r\n",
		"From: b@example.org\r\nSubject: =?utf-8?q?Cafe=CC=81_noir?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUn cafe\u0301 ici.\r\n",
		"From: c@example.org\r\nSubject: cafe society\r\n\r\nA final report.\r\n",
	}
	var pos uint64
	for _, m := range msgs {
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	if _, left, err := d.store.IndexPending(context.Background(), 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	want := map[string]string{
		"subject-nfc": "1 2", "subject-nfd": "1 2", "subject-prefix": "1 2 3", "subject-upper-nfd": "1 2",
		"body-nfc": "1 2", "body-nfd": "1 2", "body-ligature": "1 3", "body-fullwidth": "1 3", "body-fullwidth-needle": "1 3",
		"accept-subject-nfd": "1 2", "accept-body-nfc": "1 2", "accept-fullwidth": "1 3", "accept-ligature": "1 3",
	}
	imaplibSearch(t, "indexed", python, "testdata/imaplib_search_decomposed.py", d.addr, want)
	if err := d.store.Reindex(context.Background()); err != nil {
		t.Fatal(err)
	}
	imaplibSearch(t, "index dropped", python, "testdata/imaplib_search_decomposed.py", d.addr, want)
}
