// Package mimeform is the device's message format: what a message's bytes
// mean to IMAP. It parses a message into its header length, ENVELOPE and
// extended BODYSTRUCTURE (RFC 9051 section 7.5.2), encodes them in the
// form the mail store keeps, writes their IMAP forms, and defines the
// texts SEARCH BODY, TEXT and HEADER test (RFC 9051 section 6.4.4). It is
// the only package below the IMAP server that knows go-imap's and
// go-message's types: package mailstore stores and gives back the bytes
// made here, through its Parser interface, which Parser satisfies.
//
// Implementation notes and invariants (docs/MAILSTORE.md, "Parsing"):
//
//   - Pure: every function is a function of its arguments, with no I/O
//     and no state, safe for concurrent use. The same bytes give the same
//     result on every device, which the deterministic apply relies on.
//   - Parse never fails on a message's content. A message beyond the
//     bounds (MaxPartDepth, MaxParts, MaxNestedMessages) or whose MIME
//     structure is malformed is Simplified: its envelope is kept and its
//     structure is one text/plain part; a message whose header does not
//     parse is Unparsed. A panic of the library's extraction costs the
//     message its structure, never the caller. The work is linear in the
//     message's size.
//   - One stored encoding (codec.go, format version 1): JSON of types
//     that mirror go-imap's field for field, nil and empty kept apart, so
//     DecodeEnvelope and DecodeStructure give back exactly what was
//     extracted; a change of shape needs a migration of the stored values.
//   - The IMAP forms (wire.go) are made from the stored values, decoded,
//     and are byte for byte what go-imap's server writes for them; a value
//     that some connection would see written otherwise (a literal, 8-bit
//     text) has none, and FETCH has the library write the decoded value.
//   - Envelopes keep what go-imap drops: RFC 5322 groups become the RFC
//     3501 group markers, and an address without a domain gets
//     MISSING_DOMAIN (envelope.go).
package mimeform
