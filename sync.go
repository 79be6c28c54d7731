package pgcoord

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pgcoord/pgcoord/internal/tmpl"
)

// SyncOption configures Synchronized and Synchronize.
type SyncOption func(*syncOptions)

type syncOptions struct {
	blocking Blocking
	c        *Coordinator
	names    []string
	shared   bool
}

// WithBlocking sets how each lock is waited for. Default Wait. A Timeout is
// one budget for all the locks together.
func WithBlocking(b Blocking) SyncOption { return func(o *syncOptions) { o.blocking = b } }

// WithCoordinator sets the coordinator. Default: Default() at call time.
func WithCoordinator(c *Coordinator) SyncOption { return func(o *syncOptions) { o.c = c } }

// WithShared makes Synchronized (or the Synchronize wrapper) take its locks
// shared (Lock.AcquireShared): any number of callers run at once, but never
// while an exclusive holder holds one of the names.
func WithShared() SyncOption { return func(o *syncOptions) { o.shared = true } }

// WithNames adds more lock-name templates, like Cinder's
// synchronized(*lock_names): every lock is held while fn runs.
func WithNames(more ...string) SyncOption {
	return func(o *syncOptions) { o.names = append(o.names, more...) }
}

func newSyncOptions(name string, opts []SyncOption) *syncOptions {
	o := &syncOptions{blocking: Wait, names: []string{name}}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

func (o *syncOptions) coordinator() (*Coordinator, error) {
	if o.c != nil {
		return o.c, nil
	}
	if c := Default(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w: no coordinator given and no default set (SetDefault)", ErrNotStarted)
}

func parseAll(names []string) ([]*tmpl.Template, error) {
	ts := make([]*tmpl.Template, len(names))
	for i, n := range names {
		t, err := tmpl.Parse(n)
		if err != nil {
			return nil, err
		}
		ts[i] = t
	}
	return ts, nil
}

func formatAll(ts []*tmpl.Template, fname string, data any) ([]string, error) {
	extra := map[string]any{"f_name": fname}
	out := make([]string, len(ts))
	for i, t := range ts {
		s, err := t.Format(extra, data)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// Synchronized runs fn while holding the lock named by the template name
// (and those added by WithNames), formatted with data; f_name is fn's short
// name. All templates are formatted first: a template error (wrapping
// ErrTemplate) takes no lock and does not run fn. Names are de-duplicated and
// acquired in sorted order, so two callers never deadlock on each other's
// locks. When a lock cannot be taken (busy under NoWait, timed out, or an
// error) the locks already taken are released, fn does not run, and the
// error wraps ErrLockAcquireFailed and names the lock; unlike Cinder, fn
// never runs unlocked.
//
// fn's ctx is cancelled with cause ErrLockLost when any of its locks is lost;
// Synchronized then returns an error wrapping ErrLockLost even when fn
// returned nil. The locks are released when fn returns or panics (the panic
// goes on after the release). A nil fn is a programming error: Synchronized
// panics before it formats a name or takes a lock.
func Synchronized(ctx context.Context, name string, data any, fn func(ctx context.Context) error, opts ...SyncOption) error {
	if fn == nil {
		panic(errNilFunc("Synchronized"))
	}
	o := newSyncOptions(name, opts)
	ts, err := parseAll(o.names)
	if err != nil {
		return err
	}
	names, err := formatAll(ts, funcName(fn), data)
	if err != nil {
		return err
	}
	c, err := o.coordinator()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLockAcquireFailed, err)
	}
	return c.synchronized(ctx, o.blocking, o.shared, names, fn)
}

// Synchronize wraps fn so that each call runs under the locks named by the
// templates, formatted with f_name (fn's short name) and the fields of arg,
// as Synchronized does. The templates are parsed and checked against the
// type A here, when the wrapper is built: an unknown field or bad syntax
// panics now, at start-up, not on the first call; so does a nil fn.
func Synchronize[A any](name string, fn func(ctx context.Context, arg A) error, opts ...SyncOption) func(ctx context.Context, arg A) error {
	if fn == nil {
		panic(errNilFunc("Synchronize"))
	}
	o := newSyncOptions(name, opts)
	ts, err := parseAll(o.names)
	if err != nil {
		panic(err)
	}
	typ := reflect.TypeFor[A]()
	for _, t := range ts {
		if err := t.Check([]string{"f_name"}, typ); err != nil {
			panic(err)
		}
	}
	fname := funcName(fn)
	return func(ctx context.Context, arg A) error {
		names, err := formatAll(ts, fname, arg)
		if err != nil {
			return err
		}
		c, err := o.coordinator()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrLockAcquireFailed, err)
		}
		return c.synchronized(ctx, o.blocking, o.shared, names, func(ctx context.Context) error { return fn(ctx, arg) })
	}
}

// synchronized is the shared body of Synchronized and Synchronize.
func (c *Coordinator) synchronized(ctx context.Context, b Blocking, shared bool, names []string, fn func(ctx context.Context) error) (err error) {
	slices.Sort(names)
	names = slices.Compact(names)
	locks := make([]*Lock, len(names))
	for i, n := range names {
		locks[i] = c.newLock(n)
		if locks[i].err != nil {
			return fmt.Errorf("%w: %q: %w", ErrLockAcquireFailed, n, locks[i].err)
		}
	}

	var deadline time.Time
	if b.mode == blockTimeout {
		deadline = time.Now().Add(b.timeout)
	}
	var taken []*Lock
	releaseAll := func() error {
		var errs []error
		for i := len(taken) - 1; i >= 0; i-- {
			if err := taken[i].Release(ctx); err != nil && !errors.Is(err, ErrLockLost) {
				errs = append(errs, err)
			}
		}
		taken = nil
		return errors.Join(errs...)
	}
	for _, l := range locks {
		lb := b
		if !deadline.IsZero() {
			lb = Timeout(time.Until(deadline))
		}
		ok, err := l.acquireMode(ctx, lb, shared)
		if !ok {
			relErr := releaseAll()
			if err == nil {
				err = fmt.Errorf("busy (%v)", b)
			}
			return errors.Join(fmt.Errorf("%w: %q: %w", ErrLockAcquireFailed, l.name, err), relErr)
		}
		taken = append(taken, l)
	}

	cancelCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// fn's ctx looks at the leases of its holds whenever fn looks at it.
	fnCtx := &leaseCtx{Context: cancelCtx, c: c}
	var lostMu sync.Mutex
	var lostName string
	for _, l := range locks {
		l.mu.Lock()
		h := l.hold
		l.mu.Unlock()
		if h == nil {
			continue
		}
		fnCtx.holds = append(fnCtx.holds, h)
		c.onLoss(h, func(error) {
			lostMu.Lock()
			if lostName == "" {
				lostName = l.name
			}
			lostMu.Unlock()
			cancel(ErrLockLost)
		})
	}
	// A plain defer releases on panic too, and the panic then goes on.
	defer func() {
		relErr := releaseAll()
		lostMu.Lock()
		lost := lostName
		lostMu.Unlock()
		if lost != "" {
			err = errors.Join(fmt.Errorf("%w: %q was lost while the function ran", ErrLockLost, lost), err)
		}
		if relErr != nil {
			err = errors.Join(err, relErr)
		}
	}()
	return fn(fnCtx)
}

// funcName returns the short name of fn, for the f_name template field:
// "pkg.(*VolumeManager).DeleteVolume-fm" becomes "DeleteVolume". A closure
// is named after the function it was written in ("pkg.extend.func1" becomes
// "extend"): "func1" would tell nobody anything.
func funcName(fn any) string {
	f := runtime.FuncForPC(reflect.ValueOf(fn).Pointer())
	if f == nil {
		return ""
	}
	name := f.Name()
	name = name[strings.LastIndexByte(name, '/')+1:]
	name = strings.TrimSuffix(name, "-fm")
	name = strings.ReplaceAll(name, "[...]", "") // generic instantiations
	parts := strings.Split(name, ".")[1:]        // drop the package
	for len(parts) > 1 && isClosurePart(parts[len(parts)-1]) {
		parts = parts[:len(parts)-1]
	}
	if len(parts) == 0 {
		return ""
	}
	return parts[len(parts)-1]
}

// isClosurePart reports whether p is a compiler-made closure name part
// ("func1", or "2" in "func1.2" for nested closures).
func isClosurePart(p string) bool {
	p = strings.TrimPrefix(p, "func")
	if p == "" {
		return false
	}
	for _, r := range p {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// errNilFunc is the panic value of Synchronized and Synchronize given a nil
// function: without it the locks were taken (and the name registered)
// before the call of nil panicked.
func errNilFunc(who string) string {
	return "pgcoord: " + who + " given a nil function"
}
