package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// decls is what the module's production code declares, by package name:
// functions, types, constants and variables ("Name"), and methods and
// struct or interface fields ("Type.Name").
type decls map[string]map[string]bool

func (d decls) add(pkg, name string) {
	if d[pkg] == nil {
		d[pkg] = map[string]bool{}
	}
	d[pkg][name] = true
}

// has reports whether ref, as docs/ARCHITECTURE.md writes it ("Name",
// "Type.Name", "pkg.Name", "pkg.Type.Name", or a package's name), is
// declared: in package pkg when it is named, else in any package of the
// module. A method or field counts under its name alone too.
func (d decls) has(ref string) bool {
	if d[ref] != nil {
		return true
	}
	parts := strings.Split(ref, ".")
	if len(parts) > 1 && d[parts[0]] != nil && (d[parts[0]][strings.Join(parts[1:], ".")] || len(parts) == 2 && d[parts[0]][parts[1]]) {
		return true
	}
	for _, names := range d {
		if names[ref] {
			return true
		}
	}
	return false
}

func collectDecls(root string, files []string) (decls, error) {
	d := decls{}
	for _, name := range files {
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, filepath.FromSlash(name)), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		pkg := f.Name.Name
		for _, decl := range f.Decls {
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				if decl.Recv == nil {
					d.add(pkg, decl.Name.Name)
					continue
				}
				t := decl.Recv.List[0].Type
				if s, ok := t.(*ast.StarExpr); ok {
					t = s.X
				}
				if g, ok := t.(*ast.IndexExpr); ok {
					t = g.X
				}
				if g, ok := t.(*ast.IndexListExpr); ok {
					t = g.X
				}
				if id, ok := t.(*ast.Ident); ok {
					d.add(pkg, id.Name+"."+decl.Name.Name)
					d.add(pkg, decl.Name.Name) // a walk may name a method alone
				}
			case *ast.GenDecl:
				for _, spec := range decl.Specs {
					switch spec := spec.(type) {
					case *ast.ValueSpec:
						for _, n := range spec.Names {
							d.add(pkg, n.Name)
						}
					case *ast.TypeSpec:
						d.add(pkg, spec.Name.Name)
						var fields *ast.FieldList
						switch t := spec.Type.(type) {
						case *ast.StructType:
							fields = t.Fields
						case *ast.InterfaceType:
							fields = t.Methods
						}
						if fields == nil {
							continue
						}
						for _, f := range fields.List {
							for _, n := range f.Names {
								d.add(pkg, spec.Name.Name+"."+n.Name)
								d.add(pkg, n.Name)
							}
						}
					}
				}
			}
		}
	}
	return d, nil
}

var (
	codeSpanRE = regexp.MustCompile("`([^`]+)`")
	goRefRE    = regexp.MustCompile(`^(?:[a-z][a-z0-9]*\.)?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?$`)
)

// walkRefs checks the walks of docs/ARCHITECTURE.md (the sections whose
// heading starts with "Walk"): every Go file they name exists (a path
// without a folder is taken in the folder last named), and every
// identifier in code spans ("Name", "Type.Method", "pkg.Name") is declared
// in the module's production code. It returns what does not hold.
func walkRefs(root, doc string, d decls) []string {
	var bad []string
	walk := false
	dir := ""
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			walk = strings.Contains(line, "Walk")
			dir = ""
			continue
		}
		if !walk {
			continue
		}
		for _, m := range codeSpanRE.FindAllStringSubmatch(line, -1) {
			span := m[1]
			switch {
			case strings.HasSuffix(span, ".go"):
				p := span
				if !strings.Contains(p, "/") {
					p = path.Join(dir, p)
				} else if !strings.HasPrefix(p, "internal/") && !strings.HasPrefix(p, "cmd/") {
					p = path.Join("internal", p) // sqlitestore/read.go is short for internal/spool/sqlitestore/read.go
					if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
						p = path.Join("internal/spool", span)
					}
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
					bad = append(bad, "no file "+span+" (as "+p+")")
					continue
				}
				dir = path.Dir(p)
			case goRefRE.MatchString(span) && !strings.HasPrefix(span, "internal") && !strings.HasPrefix(span, "cmd"):
				if !d.has(span) {
					bad = append(bad, "nothing declares "+span)
				}
			}
		}
	}
	return bad
}

// TestWalksMatchTheCode keeps the walks of docs/ARCHITECTURE.md true: a
// renamed function or a moved file fails here until the walk says it too.
func TestWalksMatchTheCode(t *testing.T) {
	root := filepath.Join("..", "..")
	files, err := docFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	d, err := collectDecls(root, files)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range walkRefs(root, string(doc), d) {
		t.Errorf("docs/ARCHITECTURE.md, walks: %s", b)
	}
	// The check itself: a renamed function and a moved file are caught.
	broken := strings.Replace(string(doc), "`Syncer.readApply`", "`Syncer.readAndApply`", 1)
	broken = strings.Replace(broken, "`internal/deliver/lmtp.go`", "`internal/deliver/lmtpd.go`", 1)
	got := walkRefs(root, broken, d)
	for _, want := range []string{"nothing declares Syncer.readAndApply", "no file internal/deliver/lmtpd.go (as internal/deliver/lmtpd.go)"} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("a broken walk gives %q, missing %q", got, want)
		}
	}
}
