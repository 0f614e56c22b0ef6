package spool

import (
	"errors"
	"testing"
)

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"read ok", CheckRead("u", 1, 0), nil},
		{"read empty user", CheckRead("", 1, 0), ErrInvalidUser},
		{"read zero count", CheckRead("u", 0, 10), ErrInvalidArgument},
		{"read negative bytes", CheckRead("u", 1, -1), ErrInvalidArgument},
		{"user with NUL", CheckUser("\x00"), nil},
	} {
		if !errors.Is(tc.err, tc.want) || (tc.want == nil) != (tc.err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	size, err := CheckAppend("u", [][]byte{[]byte("ab"), nil, []byte("c")})
	if err != nil || size != 3 {
		t.Errorf("CheckAppend: %d, %v; want 3, nil", size, err)
	}
	if _, err := CheckAppend("u", nil); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("CheckAppend(nil): %v, want ErrEmptyBatch", err)
	}
	if _, err := CheckAppend("", [][]byte{nil}); !errors.Is(err, ErrInvalidUser) {
		t.Errorf("CheckAppend(empty user): %v, want ErrInvalidUser", err)
	}
}
