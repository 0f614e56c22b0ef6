package mimeform

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// paramCount is how many parameters the Content-Type and
// Content-Disposition fields of bs's parts give it together.
func paramCount(bs imap.BodyStructure) int {
	n := 0
	switch x := bs.(type) {
	case *imap.BodyStructureMultiPart:
		for _, c := range x.Children {
			n += paramCount(c)
		}
		if x.Extended != nil {
			n += len(x.Extended.Params)
			if d := x.Extended.Disposition; d != nil {
				n += len(d.Params)
			}
		}
	case *imap.BodyStructureSinglePart:
		n += len(x.Params)
		if x.Extended != nil && x.Extended.Disposition != nil {
			n += len(x.Extended.Disposition.Params)
		}
		if m := x.MessageRFC822; m != nil {
			n += paramCount(m.BodyStructure)
		}
	}
	return n
}

// TestParamsBounded: the parts of a message give its structure maxParams
// parameters together, in the order of their headers, and each part
// keeps its boundary, charset, filename and name past them. 30 parts of
// 500 parameters in each of their Content-Type and Content-Disposition
// fields (30,000; 990 parts of 990 each, within MaxParts and
// MaxFieldSemicolons, made a structure of 26 MB) give 10,000 and the
// four a part keeps; the first ten parts keep all of theirs.
func TestParamsBounded(t *testing.T) {
	var many strings.Builder
	for i := range 497 {
		fmt.Fprintf(&many, ";\r\n p%03d=v", i)
	}
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: parameters\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n")
	const parts = 30
	for i := range parts {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain; charset=utf-8; name=n%d.txt%s\r\n"+
			"Content-Disposition: attachment; filename=f%d.txt; size=3%s\r\n\r\npart %d\r\n", i, many.String(), i, many.String(), i)
	}
	b.WriteString("--b--\r\n")
	m, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := DecodeStructure(m.Structure)
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := bs.(*imap.BodyStructureMultiPart)
	if m.Status != Parsed || !ok || len(mp.Children) != parts {
		t.Fatalf("status %d, structure %T: want a parsed multipart of %d parts", m.Status, bs, parts)
	}
	if n := paramCount(bs); n > maxParams+len(keptParams)*2*parts {
		t.Errorf("the structure gives %d parameters, want at most %d and the kept ones", n, maxParams)
	}
	if mp.Extended.Params["boundary"] != "b" {
		t.Errorf("the multipart's parameters: %q, want its boundary", mp.Extended.Params)
	}
	for i, c := range mp.Children {
		p := c.(*imap.BodyStructureSinglePart)
		d := p.Extended.Disposition
		if p.Params["charset"] != "utf-8" || p.Params["name"] != fmt.Sprintf("n%d.txt", i) || d == nil || d.Params["filename"] != fmt.Sprintf("f%d.txt", i) {
			t.Errorf("part %d lost a parameter a client reads: %q, %v", i+1, p.Params, d)
		}
		if full := 499; i < 10 && (len(p.Params) != full || len(d.Params) != full) {
			t.Errorf("part %d: %d and %d parameters, want all %d of each", i+1, len(p.Params), len(d.Params), full)
		}
	}
}
