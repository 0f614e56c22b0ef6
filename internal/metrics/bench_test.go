package metrics

import (
	"testing"
	"time"
)

// The hooks run on every LMTP recipient, every API request and every
// append: BenchmarkHooks measures what they add to those paths.
func BenchmarkHooks(b *testing.B) {
	s := NewSpool(NewRegistry(), Known{})
	lmtp, api := s.LMTP(), s.HTTP()
	b.Run("lmtp-delivery", func(b *testing.B) {
		for b.Loop() {
			lmtp.Delivery("ok")
		}
	})
	b.Run("http-request", func(b *testing.B) {
		for b.Loop() {
			api.Request("POST", "/v1/users/{user}/entries", 200)
		}
	})
	b.Run("http-append", func(b *testing.B) {
		for b.Loop() {
			api.StoreAppend(3*time.Millisecond, nil)
			api.Delivery(200)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				lmtp.Delivery("ok")
				api.Request("POST", "/v1/users/{user}/entries", 200)
				api.StoreAppend(3*time.Millisecond, nil)
			}
		})
	})
}
