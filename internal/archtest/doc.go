// Package archtest holds the rules of the map of cspool's packages as data
// (rules.go) and the check that the code keeps them: the floors (a package
// imports only packages on floors below its own), the two sides (the spool
// server depends on nothing of the device), who may open entries, what
// the mail store may speak and how the IMAP server reaches the spool.
// docs/ARCHITECTURE.md explains each rule and each exception. Its tests
// also hold the documents to the code: the README's layout and
// docs/ARCHITECTURE.md name every package, and every link, document,
// section number and quoted heading cited in README.md, docs/ and the
// code's comments resolves (docs_test.go).
//
// Implementation notes:
//
//   - The graph comes from `go list -deps -json` run in the module (so the
//     check sees what the build sees, build tags included) and, for rules
//     about single files or symbols, from parsing each non-test file of the
//     module's packages. Only production code is checked: tests may import
//     and call whatever they need to set up and check.
//   - Check and CheckFloors are pure functions of a graph, so the tests run
//     them on made-up graphs with deliberately wrong imports as well as on
//     the real one.
//   - An exception that matches nothing is itself reported, so the list of
//     exceptions only shrinks.
package archtest
