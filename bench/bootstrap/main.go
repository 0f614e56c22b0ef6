// Command bootstrap measures what a new device reads from the spool to
// build its mailbox, against the size of the live mailbox (the entries that
// hold the bodies of the messages still there): the least any device must
// read. It runs a real SQLite store behind the real HTTP API on loopback
// and real devices (mail store and sync loop over the API client), counting
// requests and bytes at the client's transport, in two cases:
//
//   - as a user would meet it: -n messages delivered, a first device syncs
//     them with the daemon's checkpoint rule (so it writes its checkpoint
//     during that first sync), then -flags flag changes and the expunge of
//     a quarter of the messages follow; a new device starts;
//
//   - after the first device wrote a checkpoint at the head (as it does
//     once the log since its last one outgrows the live messages); another
//     new device starts.
//
//     go run ./bench/bootstrap -n 10000 -flags 5000
//
// The flag changes and the expunge are another device's, appended to the
// log as such; with -own the expunge is the first device's own (a mail
// client's EXPUNGE on it), after which that device writes a checkpoint by
// its rule for mail deleted (docs/CONFIG.md, checkpoint-min).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"cspool/bench/internal/rig"
	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

func main() {
	n := flag.Int("n", 10000, "messages delivered")
	flags := flag.Int("flags", 5000, "flag changes after the first sync, one entry each")
	size := flag.Int("size", 10<<10, "message size")
	own := flag.Bool("own", false, "the quarter expunged on the first device itself")
	flag.Parse()
	if err := run(*n, *flags, *size, *own); err != nil {
		fmt.Fprintln(os.Stderr, "bootstrap:", err)
		os.Exit(1)
	}
}

func run(n, flagChanges, size int, own bool) error {
	ctx := context.Background()
	e, err := rig.New("cspool-bootstrap-")
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.Deliver(ctx, n, size, "bootstrap"); err != nil {
		return err
	}

	// The first device syncs as the daemon does, checkpoint rule included.
	a, msa, _, err := e.Device("a", e.URL, syncer.Config{})
	if err != nil {
		return err
	}
	runCtx, stopA := context.WithCancel(ctx)
	defer stopA()
	go a.Run(runCtx)
	head, err := e.Store.Head(ctx, rig.User)
	if err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}

	// Flag changes, one entry each, then a quarter of the messages expunged.
	mbox, err := msa.MailboxByName(ctx, "INBOX")
	if err != nil {
		return err
	}
	var ids []command.ID
	if err := msa.Scan(ctx, mbox.ID, 0, func(m *mailstore.Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		return err
	}
	cmds := e.Commands()
	for i := 0; i < flagChanges; i++ {
		if err := cmds.Add(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$Label" + fmt.Sprint(i%7)}, IDs: []command.ID{ids[i%len(ids)]}}); err != nil {
			return err
		}
	}
	expunge := &command.Command{Kind: command.Expunge, IDs: ids[:len(ids)/4]}
	if !own {
		if err := cmds.Add(ctx, expunge); err != nil {
			return err
		}
	}
	if err := cmds.Flush(ctx); err != nil {
		return err
	}
	if own {
		if head, err = e.Store.Head(ctx, rig.User); err != nil {
			return err
		}
		if err := a.WaitApplied(ctx, head); err != nil {
			return err
		}
		if _, err := a.Submit(ctx, expunge); err != nil {
			return err
		}
	}
	if head, err = e.Store.Head(ctx, rig.User); err != nil {
		return err
	}
	if err := a.WaitApplied(ctx, head); err != nil {
		return err
	}
	if own {
		// The device's loop looks at whether a checkpoint is due after
		// the step that applied its EXPUNGE.
		for deadline := time.Now().Add(30 * time.Second); a.Status().Checkpoint < head && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	stopA()

	newDevice := func(name, what string) error {
		cp, err := e.Store.LatestCheckpoint(ctx, rig.User)
		if err != nil {
			return err
		}
		sn, err := msa.Snapshot(ctx)
		if err != nil {
			return err
		}
		var live int64
		for _, p := range sn.Keep() {
			es, err := e.Store.Read(ctx, rig.User, p-1, 1, 0)
			if err != nil || len(es) != 1 || es[0].Pos != p {
				return fmt.Errorf("reading live entry %d: %v", p, err)
			}
			live += int64(len(es[0].Data))
		}
		d, _, cnt, err := e.Device(name, e.URL, syncer.Config{})
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := d.SyncOnce(ctx); err != nil {
			return err
		}
		took := time.Since(start)
		st := d.Status()
		fmt.Printf("%s: log of %d entries, newest checkpoint at %d (%.2f MB); live mailbox %d messages, %.1f MB of entries\n",
			what, head, cp.Pos, rig.MB(int64(len(cp.Data))), len(sn.Keep()), rig.MB(live))
		fmt.Printf("  new device: %d requests, %.1f MB read = %.2fx the live mailbox (%.2fx with the checkpoint counted in), %d entries applied after the checkpoint, %d restore(s), %.2f s\n",
			cnt.Requests(), rig.MB(cnt.Received()), float64(cnt.Received())/float64(live),
			float64(cnt.Received())/float64(live+int64(len(cp.Data))), st.Applied, st.Restores, took.Seconds())
		return nil
	}
	if err := newDevice("b", "as a user would meet it"); err != nil {
		return err
	}
	stats, pos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("the first device writes a checkpoint at %d: %d entries (%.1f MB) compacted away\n", pos, stats.Deleted, rig.MB(stats.Bytes))
	return newDevice("c", "after a checkpoint at the head")
}
