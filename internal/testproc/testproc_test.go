package testproc

import (
	"fmt"
	"net"
	"testing"
)

func TestFreeDistinctBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < low || p >= low+span {
			t.Fatalf("port %d outside %d-%d", p, low, low+span-1)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		ln.Close()
	}
}
