package archtest

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A document of the repository, as the reference check sees it.
type doc struct {
	name     string // slash path from the repository root
	text     string // white space folded to single spaces
	headings []string
	labels   []string // headings and bold lead-ins ("**At least once.**")
}

var (
	headingRE = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *#*$`)
	fenceRE   = regexp.MustCompile("(?ms)^ *```.*?^ *```")
	// [text](target), not an image, not inside code.
	linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// A file reference: docs/API.md, FORMAT.md; then optionally sections
	// (§3, section 3, §2, §3) or a quoted heading ("Login").
	fileRefRE = regexp.MustCompile(`\b((?:[\w.-]+/)*[A-Za-z][\w-]*\.md)\b((?:,? ?(?:and )?(?:§ ?|section )\d+(?:\.\d+)*)*)(\)?,? "([^"]+)")?`)
	sectionRE = regexp.MustCompile(`(?:§ ?|section )(\d+(?:\.\d+)*)`)
	rfcRE     = regexp.MustCompile(`RFC ?\d+,? (?:(?:§ ?|section )\d+(?:\.\d+)*(?:,? (?:and )?)?)+`)
	quotedRE  = regexp.MustCompile(`"([^"]{2,80})" (?:above|below)`)
	boldRE    = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	commentRE = regexp.MustCompile(`\n[ \t]*//`)
)

func loadDoc(root, name string) (*doc, error) {
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	text := string(b)
	d := &doc{name: name}
	if strings.HasSuffix(name, ".md") {
		text = fenceRE.ReplaceAllString(text, "")
		for _, m := range headingRE.FindAllStringSubmatch(text, -1) {
			d.headings = append(d.headings, m[1])
		}
		d.labels = slices.Clone(d.headings)
		for _, m := range boldRE.FindAllStringSubmatch(text, -1) {
			d.labels = append(d.labels, m[1])
		}
	} else {
		text = commentRE.ReplaceAllString(text, " ") // a comment's lines read as one text
	}
	d.text = strings.Join(strings.Fields(text), " ")
	return d, nil
}

// slug is the anchor GitHub gives a heading.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// hasSection reports whether d has a numbered heading "N. ..." (or
// "N.M ...").
func (d *doc) hasSection(n string) bool {
	return slices.ContainsFunc(d.headings, func(h string) bool {
		return strings.HasPrefix(h, n+". ") || strings.HasPrefix(h, n+" ")
	})
}

// hasHeading reports whether d has a heading, or a bold lead-in, that
// holds name (in any case).
func (d *doc) hasHeading(name string) bool {
	name = strings.ToLower(name)
	return slices.ContainsFunc(d.labels, func(h string) bool { return strings.Contains(strings.ToLower(h), name) })
}

func (d *doc) hasAnchor(a string) bool {
	return slices.ContainsFunc(d.headings, func(h string) bool { return slug(h) == a })
}

// references lists every reference in the named files that does not
// resolve: a relative link to a missing file or heading anchor, a mention
// of a document that does not exist, a section number or a quoted heading
// name the document does not have. root is the repository; docs are
// loaded as needed from there.
func references(root string, files []string) ([]string, error) {
	cache := map[string]*doc{}
	get := func(name string) *doc {
		if d, ok := cache[name]; ok {
			return d
		}
		d, err := loadDoc(root, name)
		if err != nil {
			d = nil
		}
		cache[name] = d
		return d
	}
	// resolve finds the document a reference in from names: a path with a
	// slash from the root (or from's folder), a bare name beside from or
	// in docs/.
	resolve := func(from, ref string) string {
		for _, cand := range []string{path.Join(path.Dir(from), ref), ref, path.Join("docs", ref)} {
			if get(cand) != nil {
				return cand
			}
		}
		return ""
	}
	var bad []string
	for _, name := range files {
		d := get(name)
		if d == nil {
			return nil, fmt.Errorf("reading %s", name)
		}
		isMD := strings.HasSuffix(name, ".md")
		text := d.text
		if isMD {
			for _, m := range linkRE.FindAllStringSubmatch(text, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				td := d
				if file != "" {
					p := path.Join(path.Dir(name), file)
					if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
						bad = append(bad, fmt.Sprintf("%s: link to %s: no such file", name, target))
						continue
					}
					td = get(p)
				}
				if anchor != "" && (td == nil || !td.hasAnchor(anchor)) {
					bad = append(bad, fmt.Sprintf("%s: link to %s: no heading with that anchor", name, target))
				}
			}
		}
		// File references, with their sections or quoted headings; they
		// are then cut out, so that what is left of § and "section" in a
		// document refers to itself.
		text = rfcRE.ReplaceAllString(linkRE.ReplaceAllString(text, "]"), "")
		for _, m := range fileRefRE.FindAllStringSubmatch(text, -1) {
			ref, sections, quoted := m[1], m[2], m[4]
			if !isMD && !strings.HasPrefix(ref, "docs/") {
				continue // code names other files (README.md of a tool, say) freely
			}
			if strings.Contains(ref, "://") {
				continue
			}
			target := resolve(name, ref)
			if target == "" {
				bad = append(bad, fmt.Sprintf("%s: mentions %s: no such file", name, ref))
				continue
			}
			td := get(target)
			for _, s := range sectionRE.FindAllStringSubmatch(sections, -1) {
				if !td.hasSection(s[1]) {
					bad = append(bad, fmt.Sprintf("%s: %s §%s: no such section", name, ref, s[1]))
				}
			}
			if quoted != "" && !td.hasHeading(quoted) {
				bad = append(bad, fmt.Sprintf("%s: %s, %q: no such heading", name, ref, quoted))
			}
		}
		if !isMD {
			continue
		}
		rest := fileRefRE.ReplaceAllString(text, "")
		for _, s := range sectionRE.FindAllStringSubmatch(rest, -1) {
			if !d.hasSection(s[1]) {
				bad = append(bad, fmt.Sprintf("%s: section %s: no such section here", name, s[1]))
			}
		}
		for _, q := range quotedRE.FindAllStringSubmatch(rest, -1) {
			if !d.hasHeading(q[1]) {
				bad = append(bad, fmt.Sprintf("%s: %q: no such heading here", name, q[1]))
			}
		}
	}
	return bad, nil
}

// docFiles lists README.md, every Markdown file under docs/, and every Go
// file of the module (whose comments cite docs/ by file and section).
func docFiles(root string) ([]string, error) {
	files := []string{"README.md"}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if e.IsDir() && (strings.HasPrefix(e.Name(), ".") && rel != "." || e.Name() == "testdata") {
			return filepath.SkipDir
		}
		if rel == "internal/archtest" {
			return filepath.SkipDir // its tests name made-up documents
		}
		if !e.IsDir() && (strings.HasPrefix(rel, "docs/") && strings.HasSuffix(rel, ".md") || strings.HasSuffix(rel, ".go")) {
			files = append(files, rel)
		}
		return nil
	})
	return files, err
}

// TestDocReferences requires every relative link in README.md and docs/, and
// every mention of a document of docs/ there and in the code's comments,
// with its section number ("§3", "section 3") or quoted heading name, to
// resolve; a bare "section N" in a document must be one of its own.
func TestDocReferences(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := docFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found only %d files to check", len(files))
	}
	bad, err := references(root, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}
}

// TestDocReferencesCatchBreaks runs the check on a made-up repository with
// one broken reference of each kind.
func TestDocReferencesCatchBreaks(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/A.md", "# A\n\n## 1. Keys\n\n## 2. Entry format\n\n### Padding\n\nSee section 1 and \"Padding\" above.\n")
	write("README.md", "See [A](docs/A.md), [keys](docs/A.md#1-keys), docs/A.md §2 and docs/A.md, \"Padding\".\n")
	write("x/x.go", "// x follows docs/A.md §1 and docs/A.md section 2 (RFC 9051 section 6.3.6).\npackage x\n")
	files := []string{"README.md", "docs/A.md", "x/x.go"}
	if bad, err := references(root, files); err != nil || len(bad) != 0 {
		t.Fatalf("the sound repository gives %v, %v", bad, err)
	}
	write("docs/B.md", strings.Join([]string{
		"# B",
		"[gone](C.md) [no anchor](A.md#9-nothing) [here](#nowhere)",
		"A.md §3, docs/A.md section 4, docs/A.md, \"Quotas\", D.md.",
		"as section 7 says, and \"Limits\" below; RFC 5321 section 4.5.2 is fine.",
	}, "\n\n"))
	write("y/y.go", "// y follows docs/A.md §5 and docs/E.md.\npackage y\n")
	bad, err := references(root, append(files, "docs/B.md", "y/y.go"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"docs/B.md: link to C.md: no such file",
		"docs/B.md: link to A.md#9-nothing: no heading with that anchor",
		"docs/B.md: link to #nowhere: no heading with that anchor",
		"docs/B.md: A.md §3: no such section",
		"docs/B.md: docs/A.md §4: no such section",
		`docs/B.md: docs/A.md, "Quotas": no such heading`,
		"docs/B.md: mentions D.md: no such file",
		"docs/B.md: section 7: no such section here",
		`docs/B.md: "Limits": no such heading here`,
		"y/y.go: docs/A.md §5: no such section",
		"y/y.go: mentions docs/E.md: no such file",
	}
	slices.Sort(bad)
	slices.Sort(want)
	if !slices.Equal(bad, want) {
		t.Errorf("broken references found:\n  %s\nwant:\n  %s", strings.Join(bad, "\n  "), strings.Join(want, "\n  "))
	}
}
