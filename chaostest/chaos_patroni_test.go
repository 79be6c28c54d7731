package chaostest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/chaos"
	"github.com/pgcoord/pgcoord/internal/hastack"
	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// chaosPatroniEnv runs the chaos suite on a Patroni stack (internal/hastack:
// etcd, two PostgreSQL nodes under Patroni with ttl 10s, HAProxy routing to
// the leader by Patroni's REST /primary) instead of a primary and a standby
// promoted by hand. Its failover fault is then Patroni's: the leader node's
// Patroni and postgres killed -9, a new leader promoted by Patroni once the
// leader key expires, HAProxy following it, and the killed node started
// again to rejoin as a replica (pg_rewind when it must) before the next
// one. The restart fault becomes that failover too (the server is Patroni's
// to restart). Off by default: it needs scripts/install-ha.sh, and a
// failover costs a ttl; run it as
//
//	cd chaostest && PGCOORD_CHAOS_PATRONI=1 PGCOORD_CHAOS_LONG=1 PGCOORD_CHAOS_DURATION=3m go test -run TestChaosShort -v .
const chaosPatroniEnv = "PGCOORD_CHAOS_PATRONI"

// chaosDB is the database the chaos suite runs on: a pgtemp primary and
// standby, or a Patroni stack.
type chaosDB struct {
	pair *pgtemp.Pair
	srv  *pgtemp.Server // the pair's primary; nil under Patroni

	st       *hastack.Stack
	rejoined chan struct{} // closed once the node the last failover killed is a replica again
	rejoins  sync.WaitGroup
}

func startChaosDB(t *testing.T) *chaosDB {
	if os.Getenv(chaosPatroniEnv) == "1" {
		st, err := hastack.Start(hastack.Options{Logf: t.Logf})
		require.NoError(t, err, "the Patroni chaos run needs scripts/install-ha.sh")
		return &chaosDB{st: st}
	}
	pair, err := pgtemp.StartPair(pgtemp.Options{})
	require.NoError(t, err)
	return &chaosDB{pair: pair, srv: pair.Primary()}
}

// url is a superuser URL of the primary (through HAProxy under Patroni).
func (d *chaosDB) url() string {
	if d.st != nil {
		return d.st.HAProxyURL()
	}
	return d.srv.URL()
}

// addr is where the chaos proxy forwards to.
func (d *chaosDB) addr() string {
	if d.st != nil {
		return fmt.Sprintf("127.0.0.1:%d", d.st.HAProxyPort())
	}
	return fmt.Sprintf("127.0.0.1:%d", d.srv.Port())
}

// kind maps a fault to what this database can do.
func (d *chaosDB) kind(k string) string {
	if d.st != nil && k == "restart" {
		return "failover"
	}
	return k
}

// failover injects the failover fault and returns the admin pool to use
// from then on.
func (d *chaosDB) failover(t *testing.T, admin *pgxpool.Pool, proxy *chaosProxy, j *chaos.Journal) *pgxpool.Pool {
	if d.st == nil {
		d.srv, admin = chaosFailover(t, d.pair, admin, proxy, j)
		return admin
	}
	d.patroniFailover(t, j)
	return admin // through HAProxy, it follows the leader
}

// patroniFailover kills the leader node, once the node killed before is
// back as a replica; in the background the killed node is started again
// once a new leader leads.
func (d *chaosDB) patroniFailover(t *testing.T, j *chaos.Journal) {
	if d.rejoined != nil {
		select {
		case <-d.rejoined:
		case <-time.After(2 * time.Minute):
			t.Errorf("chaos patroni failover: the node killed last time is not a replica after 2m")
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leader, err := d.st.WaitLeader(ctx, nil)
	if err != nil {
		t.Errorf("chaos patroni failover: %v", err)
		return
	}
	at := time.Now()
	if err := leader.Kill(); err != nil {
		t.Errorf("chaos patroni failover: killing %s: %v", leader.Name(), err)
		return
	}
	// Every session on the leader ended with it.
	j.AddFault(chaos.Fault{Kind: "patroni-failover", At: at, Kills: true, All: true})
	done := make(chan struct{})
	d.rejoined = done
	d.rejoins.Go(func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := d.st.WaitLeader(ctx, leader); err != nil {
			t.Errorf("chaos patroni failover: no new leader: %v", err)
			return
		}
		if err := leader.StartPatroni(); err != nil {
			t.Errorf("chaos patroni failover: restarting %s: %v", leader.Name(), err)
			return
		}
		if err := d.st.WaitReplicas(ctx); err != nil {
			t.Errorf("chaos patroni failover: %s does not rejoin: %v", leader.Name(), err)
		}
	})
}

func (d *chaosDB) close() {
	if d.st != nil {
		d.rejoins.Wait()
		_ = d.st.Close()
		return
	}
	_ = d.pair.Close()
}
