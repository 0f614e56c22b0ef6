package loginguard

import "testing"

func TestCredentials(t *testing.T) {
	t.Parallel()
	c := NewCredentials("alice", "correct horse")
	for _, tc := range []struct {
		user, pass string
		userOK, ok bool
	}{
		{"alice", "correct horse", true, true},
		{"alice", "correct hors", true, false},
		{"alice", "correct horse ", true, false},
		{"alice", "", true, false},
		{"Alice", "correct horse", false, false},
		{"bob", "correct horse", false, false},
		{"", "", false, false},
	} {
		userOK, ok := c.Check(tc.user, tc.pass)
		if userOK != tc.userOK || ok != tc.ok {
			t.Errorf("Check(%q, %q) = %v, %v; want %v, %v", tc.user, tc.pass, userOK, ok, tc.userOK, tc.ok)
		}
	}
	// An empty password, set on purpose (docs/CONFIG.md), is the one taken.
	empty := NewCredentials("alice", "")
	if _, ok := empty.Check("alice", ""); !ok {
		t.Error("the empty password was refused where it is the password")
	}
	if _, ok := empty.Check("alice", "x"); ok {
		t.Error("a password was taken where the password is empty")
	}
}
