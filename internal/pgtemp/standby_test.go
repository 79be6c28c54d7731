package pgtemp

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// queryRow runs sql on url and scans its one row into dest.
func queryRow(t *testing.T, url, sql string, dest ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// A pair streams from primary to standby; the standby is a read-only hot
// standby of the same cluster; a failover stops the primary at once and
// promotes the standby, which then takes writes on a new timeline; a new
// standby can follow it; Close removes every directory.
func TestPairFailover(t *testing.T) {
	began := time.Now()
	p, err := StartPair(Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("StartPair: %v", err)
	}
	t.Logf("StartPair took %s", time.Since(began).Round(time.Millisecond))
	closed := false
	defer func() {
		if !closed {
			_ = p.Close()
		}
	}()
	primary, standby := p.Primary(), p.Standby()
	if primary.Port() == standby.Port() || primary.Dir() == standby.Dir() {
		t.Fatalf("primary and standby share port %d or dir %s", primary.Port(), primary.Dir())
	}

	var inRecovery bool
	var sysP, sysS int64
	if err := queryRow(t, primary.URL(), `SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system())`, &inRecovery, &sysP); err != nil || inRecovery {
		t.Fatalf("primary: in recovery %v, err %v", inRecovery, err)
	}
	if err := queryRow(t, standby.URL(), `SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system())`, &inRecovery, &sysS); err != nil || !inRecovery {
		t.Fatalf("standby: in recovery %v, err %v", inRecovery, err)
	}
	if sysP != sysS {
		t.Fatalf("system identifiers differ: primary %d, standby %d", sysP, sysS)
	}
	if err := execSQL(standby.URL(), `CREATE TABLE refused (id int)`); err == nil {
		t.Fatal("the standby took a write")
	}

	// Streaming: a row committed on the primary shows up on the standby.
	if err := execSQL(primary.URL(), `CREATE TABLE t (id int); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	streaming := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := queryRow(t, standby.URL(), `SELECT count(*) FROM t`, &n)
		if err == nil && n == 1 {
			t.Logf("the row reached the standby after %s", time.Since(streaming).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the row never reached the standby: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	oldPrimary := primary
	failing := time.Now()
	newPrimary, err := p.Failover()
	if err != nil {
		t.Fatalf("Failover: %v", err)
	}
	t.Logf("Failover took %s", time.Since(failing).Round(time.Millisecond))
	if newPrimary != standby || p.Primary() != standby || p.Standby() != nil {
		t.Fatal("after Failover the standby must be the primary, with no standby left")
	}
	if tcpAccepts(oldPrimary.Port()) {
		t.Fatal("the old primary still accepts connections")
	}
	var timeline int
	if err := queryRow(t, newPrimary.URL(), `SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())`, &inRecovery, &timeline); err != nil || inRecovery {
		t.Fatalf("promoted standby: in recovery %v, err %v", inRecovery, err)
	}
	if err := execSQL(newPrimary.URL(), `INSERT INTO t VALUES (2)`); err != nil {
		t.Fatalf("the promoted standby refused a write: %v", err)
	}

	// A new standby follows the new primary.
	next, err := p.AddStandby()
	if err != nil {
		t.Fatalf("AddStandby: %v", err)
	}
	if err := queryRow(t, next.URL(), `SELECT pg_is_in_recovery()`, &inRecovery); err != nil || !inRecovery {
		t.Fatalf("new standby: in recovery %v, err %v", inRecovery, err)
	}

	dirs := []string{oldPrimary.Dir(), newPrimary.Dir(), next.Dir()}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	for _, d := range dirs {
		if exists(d) {
			t.Errorf("%s left behind", d)
		}
	}
	if _, err := os.Stat(oldPrimary.DataDir()); err == nil {
		t.Error("old primary's data dir left behind")
	}
}

// A standby needs pg_basebackup and pg_ctl next to the server binaries;
// without them StartStandby says so with ErrNoBinaries.
func TestStandbyWithoutTools(t *testing.T) {
	primary := start(t, Options{})
	dir := t.TempDir()
	for _, name := range []string{"initdb", "postgres"} {
		if err := os.Symlink(filepath.Join(primary.BinDir(), name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := StartStandby(primary, Options{BinDir: dir})
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "pg_basebackup") {
		t.Fatalf("StartStandby without pg_basebackup: %v", err)
	}
}

// Server packages without pg_basebackup (the npm ones of the version
// matrix) get a standby from a copy taken under the backup API: it streams
// from the primary and takes over in a failover like one from
// pg_basebackup.
func TestStandbyByCopy(t *testing.T) {
	primary := start(t, Options{})
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the server user runs from it
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"initdb", "postgres", "pg_ctl"} {
		if err := os.Symlink(filepath.Join(primary.BinDir(), name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, primary.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE before_backup (n int); INSERT INTO before_backup VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	standby, err := StartStandby(primary, Options{BinDir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatalf("StartStandby without pg_basebackup: %v", err)
	}
	defer standby.Close()
	if _, err := conn.Exec(ctx, "CREATE TABLE after_backup (n int); INSERT INTO after_backup VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	var inRecovery bool
	if err := queryRow(t, standby.URL(), "SELECT pg_is_in_recovery()", &inRecovery); err != nil || !inRecovery {
		t.Fatalf("standby: in recovery %v, err %v", inRecovery, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var n int
	for queryRow(t, standby.URL(), "SELECT (SELECT n FROM before_backup) + (SELECT n FROM after_backup)", &n) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("rows written before and after the backup never reached the standby; its log:\n%s", standby.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n != 3 {
		t.Fatalf("standby sees %d, want 3", n)
	}
	if err := primary.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	if err := queryRow(t, standby.URL(), "INSERT INTO after_backup VALUES (3) RETURNING n", &n); err != nil || n != 3 {
		t.Fatalf("promoted standby takes no writes: %v", err)
	}
}
