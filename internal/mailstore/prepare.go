package mailstore

import (
	"bytes"
	"crypto/sha256"
	"iter"

	"cspool/internal/command"
)

// Parser is what the store needs of a message format: the parse of a
// message's bytes into the forms it keeps, the IMAP forms of what it kept,
// and the texts SEARCH tests (search.go). Package mimeform implements it;
// the store knows no message format of its own, and keeps and gives back
// the bytes the parser made (Message.Envelope, Message.BodyStructure,
// Message.Parse).
type Parser interface {
	// Parse returns the header's length in raw (its blank line
	// included), how much of raw parsed (stored, and given back as
	// Message.Parse), and the envelope and the body structure as stored.
	// It fails only when it cannot encode what it parsed, never on what
	// raw holds.
	Parse(raw []byte) (headerLen int64, status uint8, envelope, structure []byte, err error)
	// Forms returns the IMAP forms, as a FETCH response writes them, of
	// a stored envelope and body structure (Message.EnvelopeWire and
	// Message.StructureWire); nil where one has none.
	Forms(envelope, structure []byte) (envelopeForm, structureForm []byte, err error)
	// BodyTexts returns the texts SEARCH BODY tests in a message whose
	// header is raw[:headerLen].
	BodyTexts(raw []byte, headerLen int64) []string
	// HeaderTexts returns each field of a raw header with the texts
	// SEARCH HEADER tests in its value.
	HeaderTexts(header []byte) iter.Seq2[string, []string]
}

// FormsParser is the optional capability of a Parser to make the IMAP
// forms in the same call as the parse (mimeform.Parser.ParseForms),
// without decoding the stored envelope and body structure again: its
// forms are those Forms gives of the stored bytes it returns.
type FormsParser interface {
	ParseForms(raw []byte) (headerLen int64, status uint8, envelope, structure, envelopeForm, structureForm []byte, err error)
}

// Versioned is the optional capability of a Parser to name the version
// of its derivation (mimeform.FormsVersion): what Parse, ParseForms and
// Forms make of a message's bytes. The store keeps it beside each body
// (bodies.forms_version) and UpgradeForms parses again, in the
// background, the bodies an earlier version made. A Parser without it is
// version 0, whose bodies are never parsed again.
type Versioned interface {
	FormsVersion() int
}

// formsVersion returns p's version: 0 unless p is Versioned.
func formsVersion(p Parser) int {
	if v, ok := p.(Versioned); ok {
		return v.FormsVersion()
	}
	return 0
}

// TextsVersioned is the optional capability of a Parser to name the
// version of the texts SEARCH tests (mimeform.TextsVersion): what
// BodyTexts and HeaderTexts make of a message's bytes. The store keeps it
// beside each body it indexes (bodies.texts_version) and UpgradeTexts
// has the bodies an earlier version indexed indexed again, in the
// background. A Parser without it is version 0, whose bodies are never
// indexed again.
type TextsVersioned interface {
	TextsVersion() int
}

// textsVersion returns the version of the texts the index holds, as made
// by p and folded by foldCase: p's texts version plus foldVersion, which
// grows when either does; 0 unless p is TextsVersioned.
func textsVersion(p Parser) int {
	if v, ok := p.(TextsVersioned); ok {
		return v.TextsVersion() + foldVersion
	}
	return 0
}

// foldVersion is the version of foldCase, which a change of the fold of
// some text raises by one (textsVersion): 0 for strings.ToLower alone, 1
// with final sigma folded as sigma, 2 with each code point folded as the
// lower case of its upper case and the text decomposed (NFKD), so that a
// body indexed before is indexed again and found by a needle written
// decomposed, or composed, as the other (TestFoldVersionGolden).
const foldVersion = 2

// parsedMessage is what apply stores about a message's bytes.
type parsedMessage struct {
	status    uint8
	headerLen int64
	envelope  []byte // as the parser stores it
	structure []byte // as the parser stores it
	// envelopeWire is the envelope's IMAP form, made from the envelope
	// as stored, so that it is what FETCH wrote from it; nil when it has
	// none.
	envelopeWire []byte
	// structureWire is the body structure's IMAP form, the same way.
	structureWire []byte
}

// parseMessage parses b with p, and makes the IMAP forms of what it
// stores.
func parseMessage(p Parser, b []byte) (parsedMessage, error) {
	var m parsedMessage
	var err error
	if fp, ok := p.(FormsParser); ok {
		if m.headerLen, m.status, m.envelope, m.structure, m.envelopeWire, m.structureWire, err = fp.ParseForms(b); err != nil {
			return m, err
		}
	} else {
		if m.headerLen, m.status, m.envelope, m.structure, err = p.Parse(b); err != nil {
			return m, err
		}
		if m.envelopeWire, m.structureWire, err = p.Forms(m.envelope, m.structure); err != nil {
			return m, err
		}
	}
	// As the forms wait for the apply (a batch of them, and the next one
	// read ahead), they keep only their own bytes: a Prepared of a 2 KB
	// message holds 0.82 KB instead of 1.19 KB with forms written into
	// buffers that grow by doubling. Those at their size already
	// (mimeform's) are not copied again.
	m.envelopeWire, m.structureWire = atSize(m.envelopeWire), atSize(m.structureWire)
	return m, nil
}

// atSize returns b, or a copy of b at its size when b has room beyond it.
func atSize(b []byte) []byte {
	if cap(b) == len(b) {
		return b
	}
	return bytes.Clone(b)
}

// Prepared is the work on a message's bytes that depends on them alone:
// the SHA-256 that names the stored body and the MIME parse. Made by
// Prepare before Apply, on any goroutine (the sync loop makes it on every
// core while the batch before applies), it keeps that work out of the
// apply's transaction; Apply does it itself for an entry without it.
type Prepared struct {
	body   []byte
	digest [sha256.Size]byte
	parsed parsedMessage
}

// Prepare does the work on c's message for Apply: c must not change
// until it is applied. It returns nil for a command that carries no
// message (only Deliver and Append store one). It is safe for concurrent
// use, with Apply too.
func (s *Store) Prepare(c *command.Command) *Prepared {
	if c == nil || (c.Kind != command.Deliver && c.Kind != command.Append) {
		return nil
	}
	p, err := parseMessage(s.parser, c.Body)
	if err != nil {
		return nil // Apply parses again and reports it
	}
	return &Prepared{body: c.Body, digest: sha256.Sum256(c.Body), parsed: p}
}

// of returns p when it was made for exactly the bytes b (the same slice),
// else nil: work made for other bytes is never used.
func (p *Prepared) of(b []byte) *Prepared {
	if p == nil || len(p.body) != len(b) || (len(b) > 0 && &p.body[0] != &b[0]) {
		return nil
	}
	return p
}
