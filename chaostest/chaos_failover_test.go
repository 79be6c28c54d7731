package chaostest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/chaos"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// chaosFailover is the chaos suite's failover fault: the primary stops at
// once (pg_ctl stop -m immediate), the asynchronous standby is promoted,
// and the proxy every coordinator connects through is pointed at it, as
// HAProxy in front of Patroni would be. Every session of every member ends
// with the old primary. It returns the new primary and an admin pool on
// it (the old pool is closed), and starts a standby of the new primary for
// the next failover.
func chaosFailover(t *testing.T, pair *pgtemp.Pair, admin *pgxpool.Pool, proxy *chaosProxy, j *chaos.Journal) (*pgtemp.Server, *pgxpool.Pool) {
	// The old primary's sessions end while it stops (the postmaster waits
	// for every backend to exit); nobody can take a lock on the new one
	// before the promotion that follows.
	if err := pair.Primary().StopImmediate(); err != nil {
		t.Errorf("chaos failover: stopping the primary: %v", err)
	}
	at := time.Now()
	primary, err := pair.Failover()
	if err != nil {
		t.Errorf("chaos failover: %v", err)
		return pair.Primary(), admin
	}
	if err := proxy.retarget(fmt.Sprintf("%s:%d", primary.Host(), primary.Port())); err != nil {
		t.Errorf("chaos failover: pointing the proxy at the new primary: %v", err)
	}
	j.AddFault(chaos.Fault{Kind: "failover", At: at, Kills: true, All: true})
	admin.Close()
	admin, err = pgxpool.New(context.Background(), primary.URL())
	if err != nil {
		t.Fatalf("chaos failover: admin pool on the new primary: %v", err)
	}
	if _, err := pair.AddStandby(); err != nil {
		t.Errorf("chaos failover: a standby of the new primary: %v", err)
	}
	return primary, admin
}

// retarget points the proxy at another server (a failover's new primary):
// every connection through it ends, as the old server's have, and new ones
// go to target.
func (p *chaosProxy) retarget(target string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("chaos proxy closed")
	}
	// Stop waits for the accept loop, so nothing reads Upstream until
	// Start runs a new one.
	p.proxy.Stop()
	for _, c := range p.allConns() {
		c.sever()
	}
	p.proxy.Upstream = target
	return p.proxy.Start()
}
