package imapd

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// The odd messages (testdata/odd) read part by part, as the odd
// multiparts are (fetchOddParts): their answers are recorded in
// testdata/odd/parts-cspool.txt, and Dovecot 2.3.19's in
// testdata/odd/parts-dovecot.txt (docs/IMAP.md, "Odd messages, part by
// part"). CSPOOL_ODD_RECORD=1 writes the files from the answers instead
// of comparing.

// oddByPartsDifferences are the answers where cspool and Dovecot differ,
// beyond the odd messages' own (oddDifferences, which hold here too),
// each with the decision taken.
var oddByPartsDifferences = map[[2]string]string{
	{"bare-lf", "BODY.PEEK[HEADER]"}:                              "both: as bare-lf's BODYSTRUCTURE: a bare LF served as delivered (Dovecot CRLF)",
	{"bare-lf", "BODY.PEEK[TEXT]"}:                                "as BODY.PEEK[HEADER]",
	{"bare-lf", "BODY.PEEK[TEXT]<0.100>"}:                         "as BODY.PEEK[HEADER]",
	{"bare-lf", "BODY.PEEK[1]"}:                                   "as BODY.PEEK[HEADER]",
	{"bare-lf", "BODY.PEEK[1]<0.100>"}:                            "as BODY.PEEK[HEADER]",
	{"bare-lf", "BODY.PEEK[1.MIME]"}:                              "as BODY.PEEK[HEADER]",
	{"bare-lf", "BINARY.PEEK[1]"}:                                 "as BODY.PEEK[HEADER]",
	{"mixed-line-ends", "BODY.PEEK[HEADER]"}:                      "as bare-lf",
	{"mixed-line-ends", "BODY.PEEK[TEXT]"}:                        "as bare-lf",
	{"mixed-line-ends", "BODY.PEEK[TEXT]<0.100>"}:                 "as bare-lf",
	{"mixed-line-ends", "BODY.PEEK[1]"}:                           "as bare-lf: the LF before the CRLF delimiter is the part's",
	{"mixed-line-ends", "BODY.PEEK[1]<0.100>"}:                    "as BODY.PEEK[1]",
	{"mixed-line-ends", "BINARY.PEEK[1]"}:                         "as BODY.PEEK[1]",
	{"multipart-no-boundary", "BODY.PEEK[1]"}:                     "as BODYSTRUCTURE",
	{"multipart-no-boundary", "BODY.PEEK[1]<0.100>"}:              "as BODYSTRUCTURE",
	{"multipart-no-boundary", "BINARY.PEEK[1]"}:                   "as BODYSTRUCTURE",
	{"nested-rfc822", "BODY.PEEK[2]"}:                             "as BODYSTRUCTURE",
	{"nested-rfc822", "BODY.PEEK[2.TEXT]"}:                        "as BODYSTRUCTURE",
	{"nested-rfc822", "BINARY.PEEK[2]"}:                           "as BODYSTRUCTURE",
	{"nested-rfc822", "BINARY.SIZE[2]"}:                           "as BODYSTRUCTURE",
	{"nul-body", "BODY.PEEK[TEXT]"}:                               "cspool right: the bytes as delivered; Dovecot writes a NUL as 0x80 (as nul-header's subject)",
	{"nul-body", "BODY.PEEK[TEXT]<0.100>"}:                        "as BODY.PEEK[TEXT]",
	{"nul-body", "BODY.PEEK[1]"}:                                  "as BODY.PEEK[TEXT]",
	{"nul-body", "BODY.PEEK[1]<0.100>"}:                           "as BODY.PEEK[TEXT]",
	{"nul-header", "BODY.PEEK[HEADER]"}:                           "as nul-body",
	{"nul-header", "BODY.PEEK[1.MIME]"}:                           "as nul-body",
	{"rfc822-base64", "BINARY.PEEK[1]"}:                           "cspool right: the part decoded (as its BINARY.SIZE[1]); Dovecot serves the base64",
	{"rfc822-base64", "BODY.PEEK[1.HEADER.FIELDS.NOT (SUBJECT)]"}: "both: the base64 text is no field, left out as in any header (mimeform.Lenient); Dovecot takes it for one",
}

// TestOddMessagesPartByPart delivers the odd messages to a device and
// reads them part by part: every answer is the one recorded, and where it
// is not Dovecot's the difference is one decided on.
func TestOddMessagesPartByPart(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "odd")
	w := deliveredWire(t, ms)
	got := fetchOddParts(t, w, ms)
	rec := partsRecord(t, filepath.Join("testdata", "odd", "parts-cspool.txt"), got)
	compareOddParts(t, "cspool", got, rec)
	dove := partsRecord(t, filepath.Join("testdata", "odd", "parts-dovecot.txt"), nil)
	if os.Getenv("CSPOOL_ODD_RECORD") == "1" {
		return
	}
	differences := maps.Clone(oddByPartsDifferences)
	for k, v := range oddDifferences {
		if _, ok := got[k]; ok {
			differences[k] = v
		}
	}
	compareWithDovecot(t, got, dove, "oddByPartsDifferences", differences)
}

// TestOddMessagesPartByPartDovecot appends the odd messages to a private
// Dovecot, reads them part by part and checks its answers are the ones
// recorded in parts-dovecot.txt. It skips when Dovecot is not installed,
// outside CI.
func TestOddMessagesPartByPartDovecot(t *testing.T) {
	t.Parallel()
	ms := corpus(t, "odd")
	w := dovecotWire(t)
	appendBinary(w, ms)
	got := fetchOddParts(t, w, ms)
	rec := partsRecord(t, filepath.Join("testdata", "odd", "parts-dovecot.txt"), got)
	compareOddParts(t, "dovecot", got, rec)
	w.ok("LOGOUT")
}
