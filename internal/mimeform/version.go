package mimeform

// FormsVersion is the version of what Parse, ParseForms and Forms make
// of a message's bytes: its header length and status, its envelope and
// body structure as stored, and their IMAP forms. The mail store keeps it
// beside every body it parses (mailstore.Versioned) and parses again,
// in the background, every body stored by an earlier version
// (mailstore.Store.UpgradeForms; docs/MAILSTORE.md, "Forms made by an
// earlier cspool"), so that a message applied before a change of this
// package is served as one applied after it.
//
// A change that makes any of those bytes differ for some message raises
// it by one. A store's bodies of version 0 were stored before versions
// were kept; version 1 is the derivation as of schema version 30 of the
// store: the envelope's date_text, RFC 5322 groups and the obsolete
// zones, a text part's default charset, a single part's Content-MD5, RFC
// 2231 parameters in any charset, a multipart cut short or with mixed
// line ends. Version 2 bounds the addresses of the envelopes of a
// message's message/rfc822 parts together (maxNestedAddresses) and the
// language tags of its parts (maxLanguages), and takes a multipart's part
// of fields alone, its header ending at the next delimiter line with no
// blank line (fieldsalone.go), for a part of no body, where the parts
// from it on were left out. Version 3: a forwarded message's header (message/rfc822) is read as
// Lenient reads the message's own, a line that is no field left out
// (readLenientHeader), where its fields after such a line were read as
// its body: its envelope and its structure. Version 4: a Content-Type of
// "multipart" without a subtype is a multipart to the walk that holds a
// message to the bounds, as to the structure: one nested beyond them is
// Simplified. Version 5: it is no multipart, but one part whose type and
// subtype are "" (noSubtype), where the structure listed parts no
// section served. Version 6 bounds the parameters of the parts'
// Content-Type and Content-Disposition fields together (maxParams).
// Version 7: a forwarded message's header none of whose lines is a
// field runs to its blank line, or to the part's end (readLenientHeader),
// where its first line was the header and the rest the body. Version 8:
// "multipart/" followed by no subtype is one part as "multipart" is
// (noSubtype), where it was a multipart of no part and the message
// Simplified. Version 9: a message/global part in base64 or
// quoted-printable is one part of its bytes (encodedGlobal), where its
// encoded bytes were read as a message.
const FormsVersion = 9

// FormsVersion is FormsVersion (mailstore.Versioned).
func (Parser) FormsVersion() int { return FormsVersion }

// TextsVersion is the version of what BodyTexts and HeaderTexts make of
// a message's bytes: the texts SEARCH tests and the search index holds.
// The mail store keeps it beside every body it indexes
// (mailstore.TextsVersioned) and makes the texts again, in the
// background, of every body indexed by an earlier version
// (mailstore.Store.UpgradeTexts; docs/MAILSTORE.md, "Search texts made
// by an earlier cspool"), so that a message indexed before a change of
// this package is found as one indexed after it.
//
// A change that makes any of those texts differ for some message raises
// it by one. A store's bodies of version 0 were indexed before versions
// were kept (schema version 31 of the store); version 1 is the texts as
// of then: a multipart's text part in an unknown charset or transfer
// encoding searched as it is, and a header field in 8-bit bytes that are
// not UTF-8 also read as windows-1252. Version 2: an address field with a
// quoted string also has its addresses as ENVELOPE shows them, the names
// with their quoted-pairs undone (FieldTexts).
//
// The index holds the texts case-folded by the store, whose fold has a
// version of its own that the store adds to this one (mailstore's
// foldVersion).
const TextsVersion = 2

// TextsVersion is TextsVersion (mailstore.TextsVersioned).
func (Parser) TextsVersion() int { return TextsVersion }
