package api

import (
	"net"
	"testing"
	"time"
)

// TestRefusalDelay: the refusals of one address are answered at once up
// to the burst (twice the rate), then each waits for its token, one more
// 1/rate each, and the debt stops growing at maxRefusalDelay: a refusal
// that would wait longer waits maxRefusalDelay and takes no token. Time
// given back pays the debt at the rate. On a real TCP connection's
// address, with the clock given.
func TestRefusalDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	const rate = 4 // a second: a token every 250 ms, a burst of 8
	l := newConnLimiter(8, rate, 0)
	lc := l.admit(sc, nil)
	if lc == nil {
		t.Fatal("the first connection of an address was not admitted")
	}
	defer lc.Close()
	remote := sc.RemoteAddr().String()
	now := time.Unix(1_700_000_000, 0)
	var want []time.Duration
	for range 2 * rate {
		want = append(want, 0)
	}
	for i := 1; i < 8; i++ {
		want = append(want, time.Duration(i)*250*time.Millisecond)
	}
	want = append(want, maxRefusalDelay, maxRefusalDelay) // capped, no token taken
	for i, w := range want {
		if got := l.refusalDelay(remote, now); got != w {
			t.Fatalf("refusal %d at one instant waits %v; want %v (all: %v)", i+1, got, w, want)
		}
	}
	// 500 ms later two tokens came back: the debt of seven is five.
	if got, w := l.refusalDelay(remote, now.Add(500*time.Millisecond)), 1500*time.Millisecond; got != w {
		t.Errorf("a refusal 500 ms later waits %v; want %v", got, w)
	}
}
