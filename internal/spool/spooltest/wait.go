package spooltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"cspool/internal/spool"
)

// startWait runs st.Wait in a goroutine and returns the channel its result
// arrives on.
func startWait(ctx context.Context, st spool.Store, user string, after uint64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- st.Wait(ctx, user, after) }()
	return done
}

// expectWake waits for a Wait result within the suite's wake timeout.
func (s *suite) expectWake(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(s.opts.WakeTimeout):
		t.Fatalf("%s: Wait did not return within %v", what, s.opts.WakeTimeout)
		return nil
	}
}

// expectBlocked checks that Wait is still blocked after a short pause.
func expectBlocked(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: Wait returned early (%v)", what, err)
	case <-time.After(150 * time.Millisecond):
	}
}

func (s *suite) testWaitWakesInProcess(t *testing.T) {
	st := s.store(t)
	mustAppend(t, st, "ivy", []byte("1"))
	done := startWait(ctxT(t), st, "ivy", 1)
	expectBlocked(t, done, "before the append")
	mustAppend(t, st, "ivy", []byte("2"))
	if err := s.expectWake(t, done, "append in the same process"); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	// A waiter on an unknown user wakes on its first append.
	done = startWait(ctxT(t), st, "newcomer", 0)
	expectBlocked(t, done, "before the first append")
	mustAppend(t, st, "newcomer", []byte("hi"))
	if err := s.expectWake(t, done, "first append"); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func (s *suite) testWaitAlreadyPast(t *testing.T) {
	st := s.store(t)
	mustAppend(t, st, "jay", []byte("1"), []byte("2"))
	for _, after := range []uint64{0, 1} {
		if err := s.expectWake(t, startWait(ctxT(t), st, "jay", after), "head already past"); err != nil {
			t.Fatalf("Wait(after %d) with head 2: %v", after, err)
		}
	}
}

func (s *suite) testWaitOtherUser(t *testing.T) {
	st := s.store(t)
	done := startWait(ctxT(t), st, "kim", 0)
	mustAppend(t, st, "kimberly", []byte("not for kim"))
	mustAppend(t, st, "lee", []byte("not for kim"))
	expectBlocked(t, done, "appends to other users")
	mustAppend(t, st, "kim", []byte("for kim"))
	if err := s.expectWake(t, done, "append to kim"); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func (s *suite) testWaitCancel(t *testing.T) {
	st := s.store(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := startWait(ctx, st, "max", 0)
	expectBlocked(t, done, "before cancel")
	cancel()
	if err := s.expectWake(t, done, "cancel"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithTimeout(ctxT(t), 100*time.Millisecond)
	defer dcancel()
	if err := s.expectWake(t, startWait(dctx, st, "max", 0), "deadline"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline: %v, want context.DeadlineExceeded", err)
	}
}

func (s *suite) testWaitClose(t *testing.T) {
	st := s.open(t)
	done := startWait(ctxT(t), st, "ned", 0)
	expectBlocked(t, done, "before Close")
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.expectWake(t, done, "Close"); !errors.Is(err, spool.ErrClosed) {
		t.Fatalf("Wait across Close: %v, want ErrClosed", err)
	}
}

func (s *suite) testWaitWakesFromSecondHandle(t *testing.T) {
	st := s.store(t)
	other := s.reopen(t, st)
	for i := 0; i < 5; i++ {
		after := uint64(i)
		done := startWait(ctxT(t), st, "olga", after)
		if i == 0 {
			expectBlocked(t, done, "before the other handle appends")
		}
		start := time.Now()
		mustAppend(t, other, "olga", []byte("from elsewhere"))
		if err := s.expectWake(t, done, "append through the second handle"); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		t.Logf("woke %v after the other handle's append", time.Since(start))
		// And the other way round.
		done = startWait(ctxT(t), other, "paul", after)
		mustAppend(t, st, "paul", []byte("from here"))
		if err := s.expectWake(t, done, "append through the first handle"); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
}
