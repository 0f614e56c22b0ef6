package main

import (
	"flag"
	"fmt"
	"strings"

	"cspool/internal/termtext"
)

// A flag that takes one value, given twice on the command line with two
// values, is refused: the flag package keeps the last one, so that
// `cspool deliver --user alice ... --user bob` delivered to bob, and a
// daemon given two --spool-server URLs synced with the second, without a
// word. The same value twice is taken. Flags that take many values
// (--identity, export's --mailbox) are marked repeatable and pass.

// repeatable marks a flag.Value that keeps every value it is given.
type repeatable interface{ repeatable() }

func (*listFlag) repeatable() {}

// listFunc is a repeatable flag that hands each value to a function.
type listFunc func(string) error

func (f listFunc) String() string     { return "" }
func (f listFunc) Set(s string) error { return f(s) }
func (listFunc) repeatable()          {}

// givenValues records, during one Parse, the values each single-valued
// flag was given.
type givenValues struct {
	fs     *flag.FlagSet
	values map[string][]string
	orig   map[string]flag.Value
	order  []string
}

// onceValue stands in for a single-valued flag's Value during Parse.
type onceValue struct {
	flag.Value
	name  string
	given *givenValues
}

func (v *onceValue) Set(s string) error {
	g := v.given
	if _, ok := g.values[v.name]; !ok {
		g.order = append(g.order, v.name)
	}
	g.values[v.name] = append(g.values[v.name], s)
	return v.Value.Set(s)
}

// IsBoolFlag keeps a boolean flag standing alone (--debug) while it is
// watched.
func (v *onceValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// watchRepeats puts a recording Value in front of every single-valued
// flag of fs until restore.
func watchRepeats(fs *flag.FlagSet) *givenValues {
	g := &givenValues{fs: fs, values: map[string][]string{}, orig: map[string]flag.Value{}}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(repeatable); ok {
			return
		}
		g.orig[f.Name] = f.Value
		f.Value = &onceValue{Value: f.Value, name: f.Name, given: g}
	})
	return g
}

// restore gives every flag its own Value back, so that whatever reads the
// flags later (the config file, type assertions) sees them as declared.
func (g *givenValues) restore() {
	for name, v := range g.orig {
		g.fs.Lookup(name).Value = v
	}
}

// repeated is a usage error naming the first flag given two different
// values, or nil.
func (g *givenValues) repeated() error {
	for _, name := range g.order {
		vals := g.values[name]
		for _, v := range vals[1:] {
			if v != vals[0] {
				if valueHidden(name) {
					// A secret: the error goes to the journal, which
					// keeps it after the command line is gone.
					return usagef("--%s given %d times on the command line (values not shown): it takes one value, and which one was meant cannot be told; give it once",
						name, len(vals))
				}
				quoted := make([]string, len(vals))
				for i, s := range vals {
					quoted[i] = fmt.Sprintf("%q", termtext.WithoutUserinfo(s))
				}
				return usagef("--%s given %d times on the command line (%s): it takes one value, and which one was meant cannot be told; give it once",
					name, len(vals), strings.Join(quoted, ", "))
			}
		}
	}
	return nil
}
