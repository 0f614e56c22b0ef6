package mimeform

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

func TestNestedMessageStructure(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "messages", "nested-multipart.eml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := DecodeStructure(p.Structure)
	if err != nil {
		t.Fatal(err)
	}
	outer, ok := bs.(*imap.BodyStructureMultiPart)
	if !ok || outer.Subtype != "mixed" || len(outer.Children) != 2 || outer.Extended.Params["boundary"] != "outer" {
		t.Fatalf("outer part: expected multipart/mixed with 2 parts and boundary outer, got %+v", bs)
	}
	fwd, ok := outer.Children[1].(*imap.BodyStructureSinglePart)
	if !ok || fwd.MessageRFC822 == nil || fwd.MessageRFC822.Envelope.Subject != "The forwarded one" {
		t.Fatalf("second part: expected a message/rfc822 with subject %q, got %+v", "The forwarded one", outer.Children[1])
	}
	if fwd.Extended.Disposition == nil || fwd.Extended.Disposition.Value != "inline" {
		t.Errorf("forwarded part disposition: expected inline, got %+v", fwd.Extended.Disposition)
	}
	env, err := DecodeEnvelope(p.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.To) != 2 || len(env.Cc) != 1 || !reflect.DeepEqual(env.InReplyTo, []string{"earlier@example.net"}) {
		t.Errorf("envelope: expected 2 To, 1 Cc, In-Reply-To earlier@example.net; got %+v", env)
	}
	if want := time.Date(2023, 11, 14, 9, 0, 0, 0, time.UTC); !env.Date.Equal(want) {
		t.Errorf("envelope date: expected %v, got %v", want, env.Date)
	}
}

// TestStoredFormsRoundTrip checks that the stored ENVELOPE and
// BODYSTRUCTURE give back what the extraction produced.
func TestStoredFormsRoundTrip(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "messages", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample messages: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		bs, err := DecodeStructure(p.Structure)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := encodeStructure(bs)
		if err != nil || !bytes.Equal(again, p.Structure) {
			t.Errorf("%s: body structure does not round trip:\n%s\n%s", f, p.Structure, again)
		}
		if p.Status == Parsed {
			direct := extractOf(b)
			if !reflect.DeepEqual(direct, bs) {
				a, _ := json.Marshal(direct)
				t.Errorf("%s: decoded body structure differs from the extracted one: %s", f, a)
			}
		}
		env, err := DecodeEnvelope(p.Envelope)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err = encodeEnvelope(env)
		if err != nil || !bytes.Equal(again, p.Envelope) {
			t.Errorf("%s: envelope does not round trip:\n%s\n%s", f, p.Envelope, again)
		}
	}
}
