package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Rule is one rule of the map. Either it forbids imports (Forbid: what
// Packages, or the Files of them, may not import, or with Transitive not
// depend on at all), or it reserves a symbol (Symbol: of the Packages, or
// of all when Packages is empty, only the Only packages may refer to it). Rules speak of production code: tests may
// import and call what they need to set up and check.
type Rule struct {
	Name string
	// Packages the rule is about (patterns).
	Packages []string
	// Files, when set, narrows the rule to the files of Packages whose
	// base names match one of these globs (path.Match).
	Files      []string
	Transitive bool
	Forbid     []string
	// Symbol is "importpath.Name"; Only lists the packages that may use it.
	Symbol string
	Only   []string
	Except []Exception
}

// Exception lets From reach To despite the rule; Why is the reason, which
// docs/ARCHITECTURE.md repeats.
type Exception struct {
	From, To string
	Why      string
}

// Package is what the check knows of one package: its production code's
// direct imports, all its dependencies, and per file what the file
// imports and which symbols of module packages it refers to.
type Package struct {
	Path    string
	Imports []string
	Deps    []string
	Files   map[string]File
	Module  bool // in this module (std and third-party packages are not checked)
}

// File is one non-test source file.
type File struct {
	Imports []string
	Uses    []string // "importpath.Name" for every qualified identifier
}

// Graph is the packages by import path.
type Graph map[string]*Package

// Violation is one place the code breaks a rule (or an exception that no
// longer matches anything).
type Violation struct {
	Rule string
	From string // a package, or package/file.go
	To   string // what it reaches
	Via  []string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s: %s reaches %s", v.Rule, v.From, v.To)
	if len(v.Via) > 2 {
		s += " (through " + strings.Join(v.Via[1:len(v.Via)-1], " -> ") + ")"
	}
	return s
}

// Match reports whether import path p matches pattern pat.
func Match(pat, p string) bool {
	if base, ok := strings.CutSuffix(pat, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pat
}

func matchAny(pats []string, p string) bool {
	return slices.ContainsFunc(pats, func(pat string) bool { return Match(pat, p) })
}

// CheckFloors reports every module package on no floor, and every import of
// a package on a floor that is not below the importer's.
func CheckFloors(g Graph, floors []Floor) []Violation {
	floorOf := func(p string) int {
		for i, f := range floors {
			if matchAny(f.Packages, p) {
				return i
			}
		}
		return -1
	}
	var out []Violation
	for _, p := range sortedModule(g) {
		fp := floorOf(p.Path)
		if fp < 0 {
			out = append(out, Violation{Rule: "every package is on a floor", From: p.Path, To: "no floor"})
			continue
		}
		for _, imp := range p.Imports {
			if fi := floorOf(imp); fi >= fp {
				out = append(out, Violation{
					Rule: "a package imports only lower floors",
					From: p.Path + " (" + floors[fp].Name + ")",
					To:   imp + " (" + floors[fi].Name + ")",
				})
			}
		}
	}
	return out
}

// Check reports every violation of rules in g.
func Check(g Graph, rules []Rule) []Violation {
	var out []Violation
	for _, r := range rules {
		used := make([]bool, len(r.Except))
		excepted := func(from, to string) bool {
			for i, e := range r.Except {
				if Match(e.From, from) && Match(e.To, to) {
					used[i] = true
					return true
				}
			}
			return false
		}
		for _, p := range sortedModule(g) {
			if r.Symbol != "" {
				if matchAny(r.Only, p.Path) || len(r.Packages) > 0 && !matchAny(r.Packages, p.Path) {
					continue
				}
				for _, name := range sortedKeys(p.Files) {
					if slices.Contains(p.Files[name].Uses, r.Symbol) && !excepted(p.Path, r.Symbol) {
						out = append(out, Violation{Rule: r.Name, From: p.Path + "/" + name, To: r.Symbol})
					}
				}
				continue
			}
			if !matchAny(r.Packages, p.Path) {
				continue
			}
			if len(r.Files) == 0 {
				out = append(out, r.reach(g, p.Path, p.Path, p.Imports, excepted)...)
				continue
			}
			for _, name := range sortedKeys(p.Files) {
				if slices.ContainsFunc(r.Files, func(glob string) bool { ok, _ := path.Match(glob, name); return ok }) {
					out = append(out, r.reach(g, p.Path, p.Path+"/"+name, p.Files[name].Imports, excepted)...)
				}
			}
		}
		for i, e := range r.Except {
			if !used[i] {
				out = append(out, Violation{Rule: r.Name, From: e.From, To: e.To + ": an exception that matches nothing (remove it)"})
			}
		}
	}
	return out
}

// reach checks what from (a package, or one of its files with imports)
// reaches against r.Forbid: its direct imports, or with r.Transitive
// everything they depend on.
func (r Rule) reach(g Graph, pkg, from string, imports []string, excepted func(from, to string) bool) []Violation {
	var out []Violation
	seen := map[string]bool{}
	for _, imp := range imports {
		targets := []string{imp}
		if r.Transitive && g[imp] != nil {
			targets = append(targets, g[imp].Deps...)
		}
		for _, t := range targets {
			if seen[t] || !matchAny(r.Forbid, t) {
				continue
			}
			seen[t] = true
			chain := shortestPath(g, imp, t)
			if slices.ContainsFunc(chain[:len(chain)-1], func(p string) bool { return matchAny(r.Forbid, p) }) {
				continue // reported where the chain first crosses
			}
			if excepted(pkg, t) {
				continue
			}
			out = append(out, Violation{Rule: r.Name, From: from, To: t, Via: append([]string{from}, chain...)})
		}
	}
	return out
}

// shortestPath is an import chain from a to b (both included), or just
// [a, b] if the graph does not hold one.
func shortestPath(g Graph, a, b string) []string {
	prev := map[string]string{a: ""}
	queue := []string{a}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == b {
			var chain []string
			for ; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		if g[p] == nil {
			continue
		}
		for _, imp := range g[p].Imports {
			if _, ok := prev[imp]; !ok {
				prev[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

func sortedModule(g Graph) []*Package {
	var out []*Package
	for _, p := range g {
		if p.Module {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Package) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Load builds the graph of the module that holds dir, with `go list -deps
// -json` (production code only: no test files) and the Go parser for what
// each file of the module's packages refers to.
func Load(dir string) (Graph, error) {
	cmd := exec.Command("go", "list", "-deps", "-e", "-json=ImportPath,Name,Dir,GoFiles,Imports,Deps,Module,Error", "./...")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v: %s", err, stderr.Bytes())
	}
	type listed struct {
		ImportPath, Name, Dir string
		GoFiles, Imports      []string
		Deps                  []string
		Module                *struct{ Main bool }
		Error                 *struct{ Err string }
	}
	var all []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %v", err)
		}
		if l.Error != nil {
			return nil, fmt.Errorf("go list: %s: %s", l.ImportPath, l.Error.Err)
		}
		all = append(all, l)
	}
	names := map[string]string{}
	for _, l := range all {
		names[l.ImportPath] = l.Name
	}
	g := Graph{}
	for _, l := range all {
		p := &Package{Path: l.ImportPath, Imports: l.Imports, Deps: l.Deps, Module: l.Module != nil && l.Module.Main}
		g[l.ImportPath] = p
		if !p.Module {
			continue
		}
		p.Files = map[string]File{}
		for _, name := range l.GoFiles {
			f, err := parseFile(filepath.Join(l.Dir, name), names)
			if err != nil {
				return nil, err
			}
			p.Files[name] = f
		}
	}
	return g, nil
}

// parseFile lists what a file imports and the qualified identifiers it
// uses, by import path.
func parseFile(filename string, names map[string]string) (File, error) {
	fset := token.NewFileSet()
	af, err := parser.ParseFile(fset, filename, nil, parser.SkipObjectResolution)
	if err != nil {
		return File{}, err
	}
	var f File
	local := map[string]string{}
	for _, spec := range af.Imports {
		p, err := strconv.Unquote(spec.Path.Value)
		if err != nil {
			return File{}, fmt.Errorf("%s: import %s: %v", filename, spec.Path.Value, err)
		}
		f.Imports = append(f.Imports, p)
		name := names[p]
		if spec.Name != nil {
			name = spec.Name.Name
		}
		if name != "" && name != "_" && name != "." {
			local[name] = p
		}
	}
	seen := map[string]bool{}
	ast.Inspect(af, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok {
			if p, ok := local[id.Name]; ok {
				use := p + "." + sel.Sel.Name
				if !seen[use] {
					seen[use] = true
					f.Uses = append(f.Uses, use)
				}
			}
		}
		return true
	})
	return f, nil
}
