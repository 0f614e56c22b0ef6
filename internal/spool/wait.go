package spool

import (
	"context"
	"time"
)

// WaitFor waits up to d for user's log in st to hold an entry after pos,
// and reports whether it does (moved). A wait that ran out is not an
// error, nor is one that stop ended (when stop is not nil: a server
// shutting down ends its long-polls and answers with what there is); st
// failing (ErrClosed included) or ctx ending is. It is the long-poll of
// every reader that answers a read of the log: the HTTP API's server, the
// in-process source and the test spools, each of which reads again when
// the log moved.
func WaitFor(ctx context.Context, st Store, user string, after uint64, d time.Duration, stop context.Context) (moved bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if stop != nil {
		unhook := context.AfterFunc(stop, cancel)
		defer unhook()
	}
	err = st.Wait(wctx, user, after)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return false, nil // the wait ended: nothing new
	}
	return err == nil, err
}
