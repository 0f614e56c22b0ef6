package api

import (
	"sync"
	"time"
)

// memoUsers bounds the users a server's userMemo holds.
const memoUsers = 10000

// userMemo holds a value for each of at most max users, each for age
// after it was put; past max an arbitrary user's is dropped. The zero
// value holds nothing; safe for concurrent use.
type userMemo[T any] struct {
	max int
	age time.Duration
	mu  sync.Mutex
	m   map[string]memoed[T]
}

type memoed[T any] struct {
	v  T
	at time.Time
}

func newUserMemo[T any](max int, age time.Duration) *userMemo[T] {
	return &userMemo[T]{max: max, age: age, m: make(map[string]memoed[T])}
}

// get returns user's value if one was put less than age before now.
func (u *userMemo[T]) get(user string, now time.Time) (T, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.m[user]
	if !ok || now.Sub(e.at) >= u.age {
		var zero T
		return zero, false
	}
	return e.v, true
}

// put sets user's value as of now.
func (u *userMemo[T]) put(user string, v T, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.putLocked(user, v, now)
}

// claim puts v for user unless a value put less than age before now is
// there, and reports whether it did.
func (u *userMemo[T]) claim(user string, v T, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if e, ok := u.m[user]; ok && now.Sub(e.at) < u.age {
		return false
	}
	u.putLocked(user, v, now)
	return true
}

func (u *userMemo[T]) putLocked(user string, v T, now time.Time) {
	if _, ok := u.m[user]; !ok && len(u.m) >= u.max {
		for k := range u.m {
			delete(u.m, k)
			break
		}
	}
	u.m[user] = memoed[T]{v: v, at: now}
}

// forget drops user's value.
func (u *userMemo[T]) forget(user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, user)
}
