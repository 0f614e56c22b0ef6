package imapd

import (
	"strings"
	"testing"
)

// TestFormSwap: the framer puts the stored values in place of those the
// library wrote, found by the response's grammar, however the library's
// output is cut into writes: ENVELOPE's first field, the envelopes of
// message/rfc822 parts in BODY and BODYSTRUCTURE in order, and the
// body-fld-md5 of the single parts of BODYSTRUCTURE (basic, text and
// message/rfc822 parts, nested ones included) in order; a string that
// looks like a date elsewhere, BODY's parts (no MD5 there), a literal,
// and the sections after are left as they are. Output that is not as
// expected goes as it came.
func TestFormSwap(t *testing.T) {
	inner := `("message" "rfc822" NIL NIL NIL "7bit" 120 (NIL "x" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7bit" 3 1) 5)`
	tests := []struct {
		name   string
		env    string
		nested []string // "" for nil
		md5s   []string // "" for nil
		in     string
		want   string
	}{
		{
			name: "envelope date",
			env:  `"Mon, 2 Dec 2024 10:00:00 +0100"`,
			in:   "* 1 FETCH (UID 5 FLAGS (\\Seen x) ENVELOPE (\"Mon, 02 Dec 2024 10:00:00 +0100\" \"Mon, 02 Dec 2024 10:00:00 +0100\" NIL NIL NIL NIL NIL NIL NIL NIL) BODY[HEADER] {9}\r\nENVELOPE ()\r\n",
			want: "* 1 FETCH (UID 5 FLAGS (\\Seen x) ENVELOPE (\"Mon, 2 Dec 2024 10:00:00 +0100\" \"Mon, 02 Dec 2024 10:00:00 +0100\" NIL NIL NIL NIL NIL NIL NIL NIL) BODY[HEADER] {9}\r\nENVELOPE ()\r\n",
		},
		{
			name: "a literal for NIL",
			env:  "{9}\r\nyesterday",
			in:   "* 12 FETCH (ENVELOPE (NIL {3}\r\nf\"o NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
			want: "* 12 FETCH (ENVELOPE ({9}\r\nyesterday {3}\r\nf\"o NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
		},
		{
			name:   "nested, in BODYSTRUCTURE",
			nested: []string{"", `"1 Jan 99 12:00 EST"`},
			in:     "* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"name\" {2}\r\n\xc3\xbc) NIL NIL \"7bit\" 3 1)" + inner + "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 9 (\"Fri, 01 Jan 1999 12:00:00 -0500\" NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1) 2) \"mixed\") BODY[] {2}\r\n()\r\n",
			want:   "* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"name\" {2}\r\n\xc3\xbc) NIL NIL \"7bit\" 3 1)" + inner + "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 9 (\"1 Jan 99 12:00 EST\" NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1) 2) \"mixed\") BODY[] {2}\r\n()\r\n",
		},
		{
			name:   "nested, in BODY and an envelope",
			env:    `""`,
			nested: []string{`"x"`},
			in:     "* 3 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) BODY " + inner + ")\r\n",
			want:   "* 3 FETCH (ENVELOPE (\"\" NIL NIL NIL NIL NIL NIL NIL NIL NIL) BODY " + strings.Replace(inner, "(NIL \"x\"", "(\"x\" \"x\"", 1) + ")\r\n",
		},
		{
			name:   "not as many nested envelopes",
			nested: []string{`"x"`, `"y"`},
			in:     "* 3 FETCH (BODYSTRUCTURE " + inner + ")\r\n",
			want:   "* 3 FETCH (BODYSTRUCTURE " + inner + ")\r\n",
		},
		{
			name: "MD5s, in BODYSTRUCTURE",
			md5s: []string{`"a"`, "", "{1}\r\n\xff", `"c"`, `"d"`},
			in: "* 4 FETCH (UID 9 BODYSTRUCTURE ((\"image\" \"png\" NIL NIL NIL \"base64\" 4 NIL NIL NIL NIL)(\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)" +
				"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 9 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)(\"text\" \"html\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"x\") NIL NIL NIL) 2 NIL (\"inline\" NIL) NIL NIL) \"mixed\" NIL NIL NIL NIL) BODY[1] {4}\r\nNIL )\r\n",
			want: "* 4 FETCH (UID 9 BODYSTRUCTURE ((\"image\" \"png\" NIL NIL NIL \"base64\" 4 \"a\" NIL NIL NIL)(\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)" +
				"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 9 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 \"c\" NIL NIL NIL)(\"text\" \"html\" NIL NIL NIL \"7bit\" 3 1 \"d\" NIL NIL NIL) \"mixed\" (\"boundary\" \"x\") NIL NIL NIL) 2 {1}\r\n\xff (\"inline\" NIL) NIL NIL) \"mixed\" NIL NIL NIL NIL) BODY[1] {4}\r\nNIL )\r\n",
		},
		{
			name:   "MD5s and a nested date",
			nested: []string{`"x"`},
			md5s:   []string{`"m"`, `"t"`},
			in:     "* 5 FETCH (BODY " + inner + " BODYSTRUCTURE (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 120 (NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL) 5 NIL NIL NIL NIL))\r\n",
			want:   "* 5 FETCH (BODY " + strings.Replace(inner, "(NIL \"x\"", "(\"x\" \"x\"", 1) + " BODYSTRUCTURE (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 120 (\"x\" \"x\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 \"t\" NIL NIL NIL) 5 \"m\" NIL NIL NIL))\r\n",
		},
		{
			name: "MD5s in BODY, not extended",
			md5s: []string{`"a"`},
			in:   "* 6 FETCH (BODY (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1))\r\n",
			want: "* 6 FETCH (BODY (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1))\r\n",
		},
		{
			name: "not as many parts as MD5s",
			md5s: []string{`"a"`, `"b"`},
			in:   "* 7 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL))\r\n",
			want: "* 7 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL))\r\n",
		},
		{
			name: "an MD5 where NIL should be",
			md5s: []string{`"a"`},
			in:   "* 8 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 \"z\" NIL NIL NIL))\r\n",
			want: "* 8 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 \"z\" NIL NIL NIL))\r\n",
		},
		{
			name: "no FETCH response",
			env:  `"x"`,
			in:   "* 3 EXISTS\r\n* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
			want: "* 3 EXISTS\r\n* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
		},
	}
	for _, tc := range tests {
		var nested [][]byte
		for _, n := range tc.nested {
			if n == "" {
				nested = append(nested, nil)
			} else {
				nested = append(nested, []byte(n))
			}
		}
		var md5s [][]byte
		for _, n := range tc.md5s {
			if n == "" {
				md5s = append(md5s, nil)
			} else {
				md5s = append(md5s, []byte(n))
			}
		}
		var env []byte
		if tc.env != "" {
			env = []byte(tc.env)
		}
		for size := 1; size <= len(tc.in); size++ {
			s := &formSwap{storedValues: storedValues{env: env, nested: nested, md5s: md5s}}
			var out []byte
			for i := 0; i < len(tc.in); i += size {
				p := []byte(tc.in[i:min(i+size, len(tc.in))])
				if s.done {
					out = append(out, p...)
					continue
				}
				if q, whole := s.feed(p); whole {
					out = append(out, q...)
				}
			}
			if !s.done {
				out = append(out, s.held...) // endFormSwap
			}
			if string(out) != tc.want {
				t.Fatalf("%s, in writes of %d bytes:\n got  %q\n want %q", tc.name, size, out, tc.want)
			}
		}
	}
}

// FuzzFormSwap: any output of the library, in any two writes, goes on
// whole and in order: as it came where it holds no envelope or body
// structure to put a stored value in, and never held back.
func FuzzFormSwap(f *testing.F) {
	f.Add("* 1 FETCH (UID 5 ENVELOPE (\"Mon, 02 Dec 2024 10:00:00 +0100\" NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n", 7)
	f.Add("* 2 FETCH (BODYSTRUCTURE ((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 9 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1) 2) \"mixed\"))\r\n", 30)
	f.Add("* 3 FETCH (ENVELOPE ({3}\r\nabc NIL) BODY[] {4}\r\n(((()\r\n", 12)
	f.Add("* 4 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)(\"image\" \"png\" NIL NIL NIL \"base64\" 4 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL))\r\n", 40)
	f.Fuzz(func(t *testing.T, in string, cut int) {
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		s := &formSwap{storedValues: storedValues{env: []byte(`"d"`), nested: [][]byte{[]byte(`"n"`)}, md5s: [][]byte{[]byte(`"m"`), nil}}}
		var out []byte
		for _, p := range []string{in[:cut], in[cut:]} {
			if s.done {
				out = append(out, p...)
			} else if q, whole := s.feed([]byte(p)); whole {
				out = append(out, q...)
			}
		}
		if !s.done {
			out = append(out, s.held...)
		}
		if !strings.Contains(in, "ENVELOPE") && !strings.Contains(in, "BODY") && string(out) != in {
			t.Fatalf("%q went on as %q", in, out)
		}
		if len(out) < len(in)-len(in)/2 && !strings.Contains(in, "(") {
			t.Fatalf("%q went on as %q", in, out)
		}
	})
}
