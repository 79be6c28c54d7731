package pgcoord

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// Several processes starting at once on an empty database all succeed.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 3 {
		wg.Add(2)
		go func() { defer wg.Done(); errs <- Migrate(context.Background(), dbURL) }()
		go func() {
			defer wg.Done()
			c, err := New(Config{ConnString: dbURL, Logger: quietLogger()})
			if err == nil {
				if err = c.Start(context.Background()); err == nil {
					err = c.Stop(context.Background())
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	conn := connect(t, dbURL)
	var version int64
	var dirty bool
	require.NoError(t, conn.QueryRow(ctx(t), `SELECT version, dirty FROM pgcoord.schema_migrations`).Scan(&version, &dirty))
	require.EqualValues(t, schemaVersion, version)
	require.False(t, dirty)
	var publicTables int
	require.NoError(t, conn.QueryRow(ctx(t),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&publicTables))
	require.Zero(t, publicTables, "the app's schema is never touched")
}

func TestMigrateBadConnString(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, Migrate(ctx(t), "postgres://%zz"), ErrInvalidConfig)
}

func TestMigrationFilesAreWellNamed(t *testing.T) {
	t.Parallel()
	require.NoError(t, checkMigrationNames(migrationFiles))
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	require.NoError(t, err)
	highest := 0
	ups, downs := 0, 0
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name()[:4])
		require.NoError(t, err)
		highest = max(highest, n)
		if strings.HasSuffix(e.Name(), ".up.sql") {
			ups++
		} else {
			downs++
		}
	}
	require.Equal(t, schemaVersion, highest, "schemaVersion must name the newest migration")
	require.Equal(t, ups, downs, "every up migration has a down")

	bad := fstest.MapFS{"migrations/1_init.up.sql": {Data: []byte("SELECT 1")}}
	require.ErrorContains(t, checkMigrationNames(bad), `"1_init.up.sql"`)
}
