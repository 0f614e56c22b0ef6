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
	return waitWithin(ctx, d, stop, func(wctx context.Context) error { return st.Wait(wctx, user, after) })
}

// waitWithin runs wait with a context that ends after d or when stop ends,
// and reports what WaitFor reports.
func waitWithin(ctx context.Context, d time.Duration, stop context.Context, wait func(context.Context) error) (moved bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if stop != nil {
		unhook := context.AfterFunc(stop, cancel)
		defer unhook()
	}
	err = wait(wctx)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return false, nil // the wait ended: nothing new
	}
	return err == nil, err
}

// WaitForTip is WaitFor, and when the wait ran out (or stop ended it)
// with nothing new and st is a TipWaiter, the Tip its wait read last
// (ok): what answers the long-poll, read no more than the notices that
// wake waits allow to be old (TipWaiter).
func WaitForTip(ctx context.Context, st Store, user string, after uint64, d time.Duration, stop context.Context) (moved bool, tip Tip, ok bool, err error) {
	tw, can := st.(TipWaiter)
	if !can {
		moved, err = WaitFor(ctx, st, user, after, d, stop)
		return moved, Tip{}, false, err
	}
	moved, err = waitWithin(ctx, d, stop, func(wctx context.Context) error {
		var err error
		tip, ok, err = tw.WaitTip(wctx, user, after)
		return err
	})
	if moved || err != nil || !ok || tip.Head > after {
		return moved, Tip{}, false, err
	}
	return false, tip, true, nil
}
