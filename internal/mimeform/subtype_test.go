package mimeform

import (
	"fmt"
	"strings"
	"testing"
)

// TestMultipartWithoutSubtypeBounded: a Content-Type of "multipart" with
// no subtype is a multipart to the structure (as to the library), and so
// to the walk that holds a message to MaxPartDepth and MaxParts: nested
// deeper than MaxPartDepth, the message is Simplified, as one of
// "multipart/mixed" is. The walk took it for no multipart, and the
// structure's recursion went as deep as the message, a reader and 4 KiB
// of buffer a level.
func TestMultipartWithoutSubtypeBounded(t *testing.T) {
	nested := func(typ string, n int) []byte {
		var b strings.Builder
		b.WriteString("Subject: deep\r\n")
		for i := range n {
			fmt.Fprintf(&b, "Content-Type: %s; boundary=b%d\r\n\r\n--b%d\r\n", typ, i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nx\r\n")
		for i := n - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		return []byte(b.String())
	}
	for _, c := range []struct {
		typ    string
		n      int
		status Status
	}{
		{"multipart/mixed", MaxPartDepth + 4, Simplified},
		{"multipart", MaxPartDepth + 4, Simplified},
		{"MultiPart", MaxPartDepth + 4, Simplified},
		{"multipart", 3, Parsed},
	} {
		p, err := Parse(nested(c.typ, c.n))
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != c.status {
			t.Errorf("%q nested %d deep: status %d, want %d", c.typ, c.n, p.Status, c.status)
		}
	}
}
