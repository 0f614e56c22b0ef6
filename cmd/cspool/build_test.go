package main

import (
	"debug/elf"
	"os"
	"runtime"
	"testing"
)

// TestStaticBuild checks that the binary built with CGO_ENABLED=0 (the one
// every test runs) is static: no program interpreter (PT_INTERP) and no
// dynamic section, so it runs on any Linux of its architecture without a C
// library (the SQLite driver is pure Go).
func TestStaticBuild(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("checks an ELF binary; runs on Linux")
	}
	bin := buildServerBinary(t) // built with CGO_ENABLED=0
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("reading the binary as ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("the binary has a program interpreter (PT_INTERP): it is dynamically linked")
		case elf.PT_DYNAMIC:
			t.Error("the binary has a dynamic section (PT_DYNAMIC)")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("imported libraries %v (%v), want none", libs, err)
	}
	if fi, err := os.Stat(bin); err == nil {
		t.Logf("static binary: %.1f MB", float64(fi.Size())/1e6)
	}
}
