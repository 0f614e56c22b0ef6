package archtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	realOnce  sync.Once
	realGraph Graph
	realErr   error
)

// loadReal loads the module's graph once for all tests.
func loadReal(t *testing.T) Graph {
	t.Helper()
	realOnce.Do(func() { realGraph, realErr = Load(filepath.Join("..", "..")) })
	if realErr != nil {
		t.Fatal(realErr)
	}
	return realGraph
}

func violations(g Graph) []Violation {
	return append(CheckFloors(g, Floors), Check(g, Rules)...)
}

func TestRealGraph(t *testing.T) {
	g := loadReal(t)
	n := len(sortedModule(g))
	if n < 20 {
		t.Fatalf("go list found %d packages of the module; expected the whole module", n)
	}
	for _, v := range violations(g) {
		t.Errorf("%v", v)
	}
}

// clone copies g deeply enough to add imports and uses to it.
func clone(g Graph) Graph {
	out := Graph{}
	for k, p := range g {
		q := *p
		q.Imports = slices.Clone(p.Imports)
		q.Deps = slices.Clone(p.Deps)
		q.Files = map[string]File{}
		for name, f := range p.Files {
			q.Files[name] = File{Imports: slices.Clone(f.Imports), Uses: slices.Clone(f.Uses)}
		}
		out[k] = &q
	}
	return out
}

// addImport makes file of pkg import to, as the go tool would list it.
func addImport(g Graph, pkg, file, to string) {
	p := g[pkg]
	p.Imports = append(p.Imports, to)
	p.Deps = append(p.Deps, to)
	if g[to] != nil {
		p.Deps = append(p.Deps, g[to].Deps...)
	}
	f := p.Files[file]
	f.Imports = append(f.Imports, to)
	p.Files[file] = f
	// Everything that depends on pkg now depends on to as well.
	for _, q := range g {
		if slices.Contains(q.Deps, pkg) {
			q.Deps = append(q.Deps, to)
			if g[to] != nil {
				q.Deps = append(q.Deps, g[to].Deps...)
			}
		}
	}
}

func addUse(g Graph, pkg, file, symbol string) {
	f := g[pkg].Files[file]
	f.Uses = append(f.Uses, symbol)
	g[pkg].Files[file] = f
}

// synthetic is a small module laid out like cspool, that keeps every rule.
func synthetic() Graph {
	g := Graph{}
	add := func(path string, module bool, imports ...string) {
		p := &Package{Path: path, Imports: imports, Module: module, Files: map[string]File{}}
		if module {
			p.Files["a.go"] = File{Imports: imports}
		}
		g[path] = p
	}
	add("net/http", false)
	add("os", false)
	add("crypto/sha256", false)
	add("cspool/internal/chain", true, "crypto/sha256")
	add("github.com/emersion/go-imap/v2", false)
	add("cspool/internal/keys", true)
	add("cspool/internal/command", true)
	add("cspool/internal/spool", true, "cspool/internal/chain")
	add("cspool/internal/devicedb", true)
	add("cspool/internal/entry", true, "cspool/internal/command", "cspool/internal/keys")
	add("cspool/internal/spool/sqlitestore", true, "cspool/internal/spool")
	add("github.com/emersion/go-message", false)
	add("cspool/internal/mimeform", true, "github.com/emersion/go-imap/v2", "github.com/emersion/go-message")
	add("cspool/internal/mailstore", true, "cspool/internal/chain", "cspool/internal/command", "cspool/internal/devicedb")
	add("cspool/internal/api", true, "cspool/internal/entry", "cspool/internal/spool", "net/http")
	add("cspool/internal/syncer", true, "cspool/internal/entry", "cspool/internal/mailstore", "cspool/internal/spool")
	add("cspool/internal/imapd", true, "cspool/internal/mailstore", "cspool/internal/mimeform", "cspool/internal/syncer")
	add("cspool/internal/statuspage", true, "cspool/internal/syncer", "net/http")
	add("cspool/cmd/cspool", true, "cspool/internal/api", "cspool/internal/imapd", "cspool/internal/spool/sqlitestore")
	g["cspool/cmd/cspool"].Files = map[string]File{
		"server.go":     {Imports: []string{"cspool/internal/api", "cspool/internal/spool/sqlitestore"}},
		"imapserver.go": {Imports: []string{"cspool/internal/imapd"}},
	}
	addUse(g, "cspool/internal/syncer", "a.go", "cspool/internal/entry.Open")
	// Deps: the transitive closure of Imports.
	var deps func(p string, into map[string]bool)
	deps = func(p string, into map[string]bool) {
		for _, imp := range g[p].Imports {
			if !into[imp] {
				into[imp] = true
				deps(imp, into)
			}
		}
	}
	for path, p := range g {
		set := map[string]bool{}
		deps(path, set)
		p.Deps = sortedKeys(set)
	}
	return g
}

// syntheticRules are the real rules, less their exceptions (the synthetic
// module needs none, and an unused exception is itself a violation).
func syntheticRules() []Rule {
	var out []Rule
	for _, r := range Rules {
		r.Except = nil
		out = append(out, r)
	}
	return out
}

// TestRulesCatchWrongImports breaks each rule on purpose in a made-up
// module, and requires the check to name exactly that break.
func TestRulesCatchWrongImports(t *testing.T) {
	if vs := append(CheckFloors(synthetic(), Floors), Check(synthetic(), syntheticRules())...); len(vs) != 0 {
		t.Fatalf("the synthetic module keeps every rule, yet: %v", vs)
	}
	cases := []struct {
		name string
		brk  func(g Graph)
		want []string // "rule: from reaches to", each in one violation
	}{
		{
			name: "a store imports the mail store",
			brk:  func(g Graph) { addImport(g, "cspool/internal/spool/sqlitestore", "a.go", "cspool/internal/mailstore") },
			want: []string{
				"the server side depends on nothing of the device side: cspool/internal/spool/sqlitestore reaches cspool/internal/mailstore",
				"the server's subcommands depend on nothing of the device side: cspool/cmd/cspool/server.go reaches cspool/internal/mailstore (through cspool/internal/spool/sqlitestore)",
				"a package imports only lower floors: cspool/internal/spool/sqlitestore (state) reaches cspool/internal/mailstore (state)",
			},
		},
		{
			name: "the API depends on the syncer through the entry package",
			brk:  func(g Graph) { addImport(g, "cspool/internal/entry", "a.go", "cspool/internal/syncer") },
			want: []string{
				"the server side depends on nothing of the device side: cspool/internal/api reaches cspool/internal/syncer (through cspool/internal/entry)",
				"the server's subcommands depend on nothing of the device side: cspool/cmd/cspool/server.go reaches cspool/internal/syncer (through cspool/internal/api -> cspool/internal/entry)",
				"a package imports only lower floors: cspool/internal/entry (sealing) reaches cspool/internal/syncer (roles)",
			},
		},
		{
			name: "the server's subcommand imports imapd",
			brk:  func(g Graph) { addImport(g, "cspool/cmd/cspool", "server.go", "cspool/internal/imapd") },
			want: []string{
				"the server's subcommands depend on nothing of the device side: cspool/cmd/cspool/server.go reaches cspool/internal/imapd",
			},
		},
		{
			name: "the status page opens entries",
			brk:  func(g Graph) { addUse(g, "cspool/internal/statuspage", "a.go", "cspool/internal/entry.Open") },
			want: []string{"only the syncer opens entries: cspool/internal/statuspage/a.go reaches cspool/internal/entry.Open"},
		},
		{
			name: "a command opens an entry to show it (allowed)",
			brk:  func(g Graph) { addUse(g, "cspool/cmd/cspool", "server.go", "cspool/internal/entry.Open") },
		},
		{
			name: "the mail store imports an HTTP library",
			brk:  func(g Graph) { addImport(g, "cspool/internal/mailstore", "a.go", "net/http") },
			want: []string{"mailstore speaks no protocol: cspool/internal/mailstore reaches net/http"},
		},
		{
			name: "the mail store imports an IMAP library through the devicedb",
			brk:  func(g Graph) { addImport(g, "cspool/internal/devicedb", "a.go", "github.com/emersion/go-imap/v2") },
			want: []string{"mailstore speaks no protocol: cspool/internal/mailstore reaches github.com/emersion/go-imap/v2 (through cspool/internal/devicedb)"},
		},
		{
			name: "the mail store parses messages itself",
			brk:  func(g Graph) { addImport(g, "cspool/internal/mailstore", "a.go", "cspool/internal/mimeform") },
			want: []string{
				"mailstore speaks no protocol: cspool/internal/mailstore reaches github.com/emersion/go-imap/v2 (through cspool/internal/mimeform)",
				"mailstore knows no message format: cspool/internal/mailstore reaches cspool/internal/mimeform",
			},
		},
		{
			name: "the MIME parser reads a file",
			brk:  func(g Graph) { addImport(g, "cspool/internal/mimeform", "a.go", "os") },
			want: []string{"mimeform does no I/O: cspool/internal/mimeform reaches os"},
		},
		{
			name: "the chain reads a file",
			brk:  func(g Graph) { addImport(g, "cspool/internal/chain", "a.go", "os") },
			want: []string{"chain does no I/O: cspool/internal/chain reaches os"},
		},
		{
			name: "the chain speaks HTTP",
			brk:  func(g Graph) { addImport(g, "cspool/internal/chain", "a.go", "net/http") },
			want: []string{
				"chain does no I/O: cspool/internal/chain reaches net/http",
				"mailstore speaks no protocol: cspool/internal/mailstore reaches net/http (through cspool/internal/chain)",
			},
		},
		{
			name: "the mail store imports the spool's vocabulary",
			brk:  func(g Graph) { addImport(g, "cspool/internal/mailstore", "a.go", "cspool/internal/spool") },
			want: []string{"mailstore knows nothing of the spool: cspool/internal/mailstore reaches cspool/internal/spool"},
		},
		{
			name: "the mail store reaches the spool through the devicedb",
			brk:  func(g Graph) { addImport(g, "cspool/internal/devicedb", "a.go", "cspool/internal/spool") },
			want: []string{
				"mailstore knows nothing of the spool: cspool/internal/mailstore reaches cspool/internal/spool (through cspool/internal/devicedb)",
				"a package imports only lower floors: cspool/internal/devicedb (vocabulary) reaches cspool/internal/spool (vocabulary)",
			},
		},
		{
			name: "imapd imports a store",
			brk:  func(g Graph) { addImport(g, "cspool/internal/imapd", "a.go", "cspool/internal/spool/sqlitestore") },
			want: []string{"imapd reaches the spool only through the syncer: cspool/internal/imapd reaches cspool/internal/spool/sqlitestore"},
		},
		{
			name: "imapd imports the spool's vocabulary",
			brk:  func(g Graph) { addImport(g, "cspool/internal/imapd", "a.go", "cspool/internal/spool") },
			want: []string{"imapd reaches the spool only through the syncer: cspool/internal/imapd reaches cspool/internal/spool"},
		},
		{
			name: "a package on no floor",
			brk: func(g Graph) {
				g["cspool/internal/newthing"] = &Package{Path: "cspool/internal/newthing", Module: true}
			},
			want: []string{"every package is on a floor: cspool/internal/newthing reaches no floor"},
		},
		{
			name: "production imports test support",
			brk: func(g Graph) {
				g["cspool/internal/testproc"] = &Package{Path: "cspool/internal/testproc", Module: true, Files: map[string]File{}}
				addImport(g, "cspool/internal/syncer", "a.go", "cspool/internal/testproc")
			},
			want: []string{
				"test support stays out of production: cspool/internal/syncer reaches cspool/internal/testproc",
				"a package imports only lower floors: cspool/internal/syncer (roles) reaches cspool/internal/testproc (test support)",
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := synthetic()
			c.brk(g)
			var got []string
			for _, v := range append(CheckFloors(g, Floors), Check(g, syntheticRules())...) {
				got = append(got, v.String())
			}
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

// TestExceptions checks that an exception silences its violation, and that
// one matching nothing is reported.
func TestExceptions(t *testing.T) {
	rule := Rule{
		Name:   "only the syncer opens entries",
		Symbol: "cspool/internal/entry.Open",
		Only:   []string{"cspool/internal/syncer"},
		Except: []Exception{{From: "cspool/internal/statuspage", To: "cspool/internal/entry.Open", Why: "a reason"}},
	}
	g := synthetic()
	if got := Check(g, []Rule{rule}); len(got) != 1 || !strings.Contains(got[0].String(), "an exception that matches nothing") {
		t.Errorf("an unused exception gives %v, want it reported", got)
	}
	addUse(g, "cspool/internal/statuspage", "a.go", "cspool/internal/entry.Open")
	if got := Check(g, []Rule{rule}); len(got) != 0 {
		t.Errorf("an excepted use gives %v, want nothing", got)
	}
}

// TestRealGraphCatchesWrongImport breaks the real module's graph the way a
// careless change would, and requires the check to see it.
func TestRealGraphCatchesWrongImport(t *testing.T) {
	g := clone(loadReal(t))
	addImport(g, "cspool/internal/imapd", "server.go", "cspool/internal/spool/sqlitestore")
	addUse(g, "cspool/internal/imapd", "server.go", "cspool/internal/entry.Open")
	addImport(g, "cspool/internal/api", "server.go", "cspool/internal/syncer")
	addImport(g, "cspool/internal/chain", "chain.go", "os")
	addImport(g, "cspool/internal/mailstore", "apply.go", "cspool/internal/spool")
	addImport(g, "cspool/internal/mailstore", "prepare.go", "cspool/internal/mimeform")
	var got []string
	for _, v := range violations(g) {
		got = append(got, v.String())
	}
	for _, want := range []string{
		"imapd reaches the spool only through the syncer: cspool/internal/imapd reaches cspool/internal/spool/sqlitestore",
		"only the syncer opens entries: cspool/internal/imapd/server.go reaches cspool/internal/entry.Open",
		"the server side depends on nothing of the device side: cspool/internal/api reaches cspool/internal/syncer",
		"the server's subcommands depend on nothing of the device side: cspool/cmd/cspool/server.go reaches cspool/internal/syncer (through cspool/internal/api)",
		"a package imports only lower floors: cspool/internal/api (roles) reaches cspool/internal/syncer (roles)",
		"chain does no I/O: cspool/internal/chain reaches os",
		"mailstore knows nothing of the spool: cspool/internal/mailstore reaches cspool/internal/spool",
		"mailstore knows no message format: cspool/internal/mailstore reaches cspool/internal/mimeform",
		"mailstore speaks no protocol: cspool/internal/mailstore reaches github.com/emersion/go-imap/v2 (through cspool/internal/mimeform)",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing violation %q; got:\n  %s", want, strings.Join(got, "\n  "))
		}
	}
}

// TestDocsNameEveryPackageAndRule requires the README's layout and
// docs/ARCHITECTURE.md to name every package of the module (the benchmark
// commands as bench/), and docs/ARCHITECTURE.md to state every rule and
// exception.
func TestDocsNameEveryPackageAndRule(t *testing.T) {
	g := loadReal(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme, arch := read("README.md"), read("docs/ARCHITECTURE.md")
	flat := strings.Join(strings.Fields(arch), " ")
	layout, _, _ := strings.Cut(readme[strings.Index(readme, "## Layout"):], "\n## ")
	for _, p := range sortedModule(g) {
		rel := strings.TrimPrefix(p.Path, "cspool/")
		if strings.HasPrefix(rel, "bench/") {
			rel = "bench/"
		}
		if !strings.Contains(layout, rel) {
			t.Errorf("the README's layout does not name %s", rel)
		}
		if !strings.Contains(arch, rel) {
			t.Errorf("docs/ARCHITECTURE.md does not name %s", rel)
		}
	}
	for _, r := range Rules {
		if !strings.Contains(flat, r.Name) {
			t.Errorf("docs/ARCHITECTURE.md does not state the rule %q", r.Name)
		}
		for _, e := range r.Except {
			if !strings.Contains(flat, e.Why) {
				t.Errorf("docs/ARCHITECTURE.md does not give the reason for the exception %s -> %s: %q", e.From, e.To, e.Why)
			}
		}
	}
}
