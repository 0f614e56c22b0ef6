package mailstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

func leafTypes(bs imap.BodyStructure) []string {
	var out []string
	bs.Walk(func(path []int, part imap.BodyStructure) bool {
		if _, ok := part.(*imap.BodyStructureSinglePart); ok {
			out = append(out, part.MediaType())
		}
		return true
	})
	return out
}

// hasEmptyMultipart reports whether bs holds a multipart without parts,
// which no IMAP BODYSTRUCTURE can write (RFC 9051 section 9, body-type-mpart).
func hasEmptyMultipart(bs imap.BodyStructure) bool {
	empty := false
	bs.Walk(func(_ []int, p imap.BodyStructure) bool {
		if mp, ok := p.(*imap.BodyStructureMultiPart); ok && len(mp.Children) == 0 {
			empty = true
		}
		return true
	})
	return empty
}

// TestSampleMessages delivers every message in testdata/messages and
// checks what FETCH will serve: the bytes, ENVELOPE and BODYSTRUCTURE.
func TestSampleMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file      string
		status    mimeform.Status
		subject   string
		messageID string
		from      string // first From address
		leaves    []string
	}{
		{"nested-multipart.eml", mimeform.Parsed, "Nested multipart with a forwarded message", "nested-1@example.org", "alice@example.org",
			[]string{"text/plain", "text/html", "message/rfc822"}},
		{"attachment-base64.eml", mimeform.Parsed, "Report attached", "attach-1@example.org", "sender@example.org",
			[]string{"text/plain", "application/pdf"}},
		{"eightbit-body.eml", mimeform.Parsed, "Grüße", "8bit-1@example.de", "joerg@example.de", []string{"text/plain"}},
		{"rfc2047-headers.eml", mimeform.Parsed, "Hello, 世界 and café", "2047-1@example.fr", "francois@example.fr", []string{"text/plain"}},
		{"no-message-id.eml", mimeform.Parsed, "No Message-ID here", "", "robot@example.org", []string{"text/plain"}},
		{"duplicate-message-id-1.eml", mimeform.Parsed, "Same Message-ID, copy 1", "dup@example.org", "list@example.org", []string{"text/plain"}},
		{"duplicate-message-id-2.eml", mimeform.Parsed, "Same Message-ID, copy 2", "dup@example.org", "list@example.org", []string{"text/plain"}},
		{"broken-mime.eml", mimeform.Simplified, "Multipart that never opens its boundary", "broken-1@example.org", "broken@example.org", []string{"text/plain"}},
		{"lf-line-endings.eml", mimeform.Parsed, "LF only", "lf-1@example.org", "unix@example.org", []string{"text/plain", "text/html"}},
		{"nul-bytes.eml", mimeform.Parsed, "NUL bytes inside", "nul-1@example.org", "nul@example.org", []string{"text/plain"}},
		{"not-a-message.bin", mimeform.Unparsed, "", "", "", []string{"text/plain"}},
	}
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	var entries []Entry
	raw := map[command.ID][]byte{}
	for _, tc := range tests {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "messages", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		e := l.spool(&command.Command{Kind: command.Deliver, Date: 1700000000123, Body: b})
		entries = append(entries, e)
		raw[e.ID] = b
	}
	mustApply(t, s, entries...)
	for i, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			id := entries[i].ID
			m, err := s.MessageByID(ctx, id, WantEnvelope|WantStructure|WantHeader|WantRaw)
			if err != nil {
				t.Fatalf("MessageByID: %v", err)
			}
			want := raw[id]
			if !bytes.Equal(m.Raw, want) {
				t.Errorf("raw bytes: expected %d bytes as delivered, got %d different ones", len(want), len(m.Raw))
			}
			if m.Size != int64(len(want)) {
				t.Errorf("size: expected %d, got %d", len(want), m.Size)
			}
			if !m.InternalDate.Equal(time.UnixMilli(1700000000123)) {
				t.Errorf("internal date: expected %v, got %v", time.UnixMilli(1700000000123), m.InternalDate)
			}
			if !bytes.Equal(m.Header, want[:m.HeaderLen]) {
				t.Errorf("header: expected the first %d bytes, got %q", m.HeaderLen, m.Header)
			}
			if mimeform.Status(m.Parse) != tc.status {
				t.Errorf("parse status: expected %d, got %d", tc.status, m.Parse)
			}
			env, err := mimeform.DecodeEnvelope(m.Envelope)
			if err != nil {
				t.Fatal(err)
			}
			bs, err := mimeform.DecodeStructure(m.BodyStructure)
			if err != nil {
				t.Fatal(err)
			}
			if env.Subject != tc.subject || env.MessageID != tc.messageID {
				t.Errorf("envelope: expected subject %q, message id %q; got %q, %q", tc.subject, tc.messageID, env.Subject, env.MessageID)
			}
			var from string
			if len(env.From) > 0 {
				from = env.From[0].Addr()
			}
			if from != tc.from {
				t.Errorf("envelope from: expected %q, got %q", tc.from, from)
			}
			if got := leafTypes(bs); !reflect.DeepEqual(got, tc.leaves) {
				t.Errorf("body structure leaves: expected %v, got %v", tc.leaves, got)
			}
			if hasEmptyMultipart(bs) {
				t.Error("body structure has an empty multipart")
			}
			// Every single part has extended data (BODYSTRUCTURE, not BODY).
			bs.Walk(func(_ []int, p imap.BodyStructure) bool {
				switch p := p.(type) {
				case *imap.BodyStructureSinglePart:
					if p.Extended == nil {
						t.Errorf("part %s without extended data", p.MediaType())
					}
				case *imap.BodyStructureMultiPart:
					if p.Extended == nil {
						t.Errorf("multipart %s without extended data", p.MediaType())
					}
				}
				return true
			})
		})
	}
	if n := len(uidsOf(t, s, "INBOX")); n != len(tests) {
		t.Errorf("INBOX: expected %d messages, got %d", len(tests), n)
	}
}

func TestTortureMessages(t *testing.T) {
	t.Parallel()
	deep := func(n int) []byte {
		var b strings.Builder
		b.WriteString("Subject: deep\r\n")
		for i := range n {
			b.WriteString("Content-Type: multipart/mixed; boundary=b" + strconv.Itoa(i) + "\r\n\r\n--b" + strconv.Itoa(i) + "\r\n")
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
		return []byte(b.String())
	}
	wide := func(n int) []byte {
		var b strings.Builder
		b.WriteString("Subject: wide\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n")
		for range n {
			b.WriteString("--w\r\nContent-Type: text/plain\r\n\r\nx\r\n")
		}
		b.WriteString("--w--\r\n")
		return []byte(b.String())
	}
	nestedMessages := func(n int) []byte {
		var b strings.Builder
		b.WriteString("Subject: russian doll\r\n")
		for range n {
			b.WriteString("Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n")
		}
		b.WriteString("\r\ncore\r\n")
		return []byte(b.String())
	}
	tests := []struct {
		name   string
		body   []byte
		status mimeform.Status
		leaves int
	}{
		{"nesting within bounds", deep(mimeform.MaxPartDepth - 1), mimeform.Parsed, 1},
		{"10000-deep multipart", deep(10000), mimeform.Simplified, 1},
		{"parts within bounds", wide(mimeform.MaxParts), mimeform.Parsed, mimeform.MaxParts},
		{"10000 parts", wide(10000), mimeform.Simplified, 1},
		{"1000 nested messages", nestedMessages(1000), mimeform.Simplified, 1},
		{"an empty message", nil, mimeform.Parsed, 1},
	}
	s := openTest(t)
	var l testLog
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := l.spool(&command.Command{Kind: command.Deliver, Date: 1, Body: tc.body})
			mustApply(t, s, e)
			m, err := s.MessageByID(context.Background(), e.ID, WantStructure|WantRaw)
			if err != nil {
				t.Fatalf("MessageByID: %v", err)
			}
			if mimeform.Status(m.Parse) != tc.status {
				t.Errorf("parse status: expected %d, got %d", tc.status, m.Parse)
			}
			bs, err := mimeform.DecodeStructure(m.BodyStructure)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(leafTypes(bs)); n != tc.leaves {
				t.Errorf("leaf parts: expected %d, got %d", tc.leaves, n)
			}
			if !bytes.Equal(m.Raw, tc.body) {
				t.Errorf("raw bytes: expected %d bytes back, got %d", len(tc.body), len(m.Raw))
			}
		})
	}
}
