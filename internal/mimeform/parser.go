package mimeform

import "iter"

// Parser is the message format of a mail store: it gives package
// mailstore, which knows none, what it stores of a message (it satisfies
// mailstore.Parser; cmd/cspool hands it to the store it opens). Its
// methods are this package's functions, with the store's plain types.
type Parser struct{}

// Parse is Parse, its Message taken apart.
func (Parser) Parse(raw []byte) (headerLen int64, status uint8, envelope, structure []byte, err error) {
	m, err := Parse(raw)
	return m.HeaderLen, uint8(m.Status), m.Envelope, m.Structure, err
}

// ParseForms is ParseForms, its Message taken apart
// (mailstore.FormsParser).
func (Parser) ParseForms(raw []byte) (headerLen int64, status uint8, envelope, structure, envelopeForm, structureForm []byte, err error) {
	m, ef, sf, err := ParseForms(raw)
	return m.HeaderLen, uint8(m.Status), m.Envelope, m.Structure, ef, sf, err
}

// Forms is Forms.
func (Parser) Forms(envelope, structure []byte) (envelopeForm, structureForm []byte, err error) {
	return Forms(envelope, structure)
}

// BodyTexts is BodyTexts.
func (Parser) BodyTexts(raw []byte, headerLen int64) []string { return BodyTexts(raw, headerLen) }

// HeaderTexts is HeaderTexts.
func (Parser) HeaderTexts(header []byte) iter.Seq2[string, []string] { return HeaderTexts(header) }
