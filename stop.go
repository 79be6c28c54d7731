package pgcoord

// Stop: every hold released before the member is marked stopped, every
// session closed whatever ctx says, and nothing of the coordinator's left
// running when it returns.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/db"
)

// Stop releases every held lock (others see them free when Stop returns),
// marks the member stopped and closes every session. Holds released this way
// count as lost: their Lost channels close, since the critical sections they
// guarded are no longer protected. Stop is idempotent.
//
// Called while Start is under way, Stop makes it give up (Start returns an
// error wrapping ErrNotStarted and leaves nothing open) rather than wait
// for it to end.
//
// ctx bounds the polite part: unlocking, waiting for the backends of broken
// sessions to exit, marking the member row stopped (when ctx has no
// deadline, an internal bound of 5s plus two heartbeats applies). Sessions
// are closed whatever happens, which frees their locks on the server too,
// but when ctx ends first, only once the server has noticed: a lock may
// then still look held for a moment after Stop returns.
func (c *Coordinator) Stop(ctx context.Context) error {
	c.askStop()
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.state.Load() != stateStarted {
		c.state.Store(stateStopped)
		return nil
	}
	c.state.Store(stateStopped)
	c.active.Store(false)
	c.cancelRun()
	c.control.interrupt()
	c.waits.interruptLight()
	<-c.hbDone
	<-c.pruneDone
	<-c.since.done
	<-c.notifier.done
	c.stopDeadlocks()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opTimeout())
		defer cancel()
	}
	errs := c.closeSessions(ctx, c.waits.stop())
	// Whatever they still do fails at once on the closed sessions.
	c.bg.stop()
	// A ping in flight held its session's sem, which close waited for (or
	// closed the socket under): it is over or about to be.
	c.pings.Wait()
	c.log.Info("pgcoord: member stopped")
	return errors.Join(errs...)
}

// closeSessions releases everything: lock and wait sessions first (so the
// locks are free before the member is marked stopped), then the control
// session with the member row and member lock.
func (c *Coordinator) closeSessions(ctx context.Context, waits []*session) []error {
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	var exiting []int32
	all := append(append([]*session(nil), c.lockSs...), waits...)
	for _, s := range all {
		if s == nil {
			// A Start that failed part-way left later sessions unmade.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pid, err := s.close(ctx, errStopped)
			emu.Lock()
			defer emu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if pid != 0 {
				exiting = append(exiting, pid)
			}
		}()
	}
	wg.Wait()
	c.waits.closing.Wait()
	c.waitCleanups(ctx)
	if c.control != nil && c.registered.Swap(false) {
		err := c.control.do(ctx, func(ctx context.Context, conn *pgx.Conn) error {
			// Sessions whose locks went with their connection (it broke,
			// or Stop raced a statement on it) free them when their backend
			// has exited: wait for that, so that Stop returns with every
			// lock free for others.
			for _, pid := range exiting {
				c.control.awaitGone(ctx, conn, pid)
			}
			// Under the member lock, so that nothing a cancelled control
			// session still runs on the server can write the row after us.
			if err := c.q.LockMember(ctx, conn, db.LockMemberParams{Key1: c.memberHi, Key2: c.memberLo}); err != nil {
				return err
			}
			if err := c.q.MarkStopped(ctx, conn, c.memberID); err != nil {
				return err
			}
			c.forgetQueue(ctx, conn)
			c.forgetLongWaits(ctx, conn)
			// The control session holds only the member lock, perhaps
			// more than once (it is reentrant): release every level.
			return c.q.UnlockAll(ctx, conn)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("pgcoord: marking member stopped: %w", err))
		}
	}
	if c.control != nil {
		_, _ = c.control.close(ctx, errStopped)
	}
	return errs
}

// trackCleanup remembers a connection pgx is closing in the background (it
// sends a cancel request and drains the socket, for up to 15 s), so that
// Stop can wait for it instead of leaving its goroutine behind.
func (c *Coordinator) trackCleanup(done <-chan struct{}) {
	c.cleanupMu.Lock()
	defer c.cleanupMu.Unlock()
	kept := c.cleanups[:0]
	for _, d := range c.cleanups {
		select {
		case <-d:
		default:
			kept = append(kept, d)
		}
	}
	c.cleanups = append(kept, done)
}

// waitCleanups waits for the background closes, until ctx ends.
func (c *Coordinator) waitCleanups(ctx context.Context) {
	c.cleanupMu.Lock()
	pending := append([]<-chan struct{}(nil), c.cleanups...)
	c.cleanupMu.Unlock()
	for _, d := range pending {
		select {
		case <-d:
		case <-ctx.Done():
			c.log.Warn("pgcoord: Stop returns before pgx finished closing a broken connection")
			return
		}
	}
}

// errStopped is the loss cause of holds ended by Stop.
var errStopped = fmt.Errorf("%w: %w", ErrLockLost, ErrNotStarted)
