package pgcoord

import (
	"io/fs"
	"slices"
	"strconv"
)

// MigrationVersions returns the versions of the embedded migrations in
// ascending order: what Migrate applies, the last one being the version
// this package needs. `pgcoord migrate --status` compares it with the
// database's version.
func MigrationVersions() []int {
	entries, _ := fs.ReadDir(migrationFiles, "migrations")
	var vs []int
	for _, e := range entries {
		if !migrationName.MatchString(e.Name()) {
			continue // checkMigrationNames reports these on Migrate
		}
		v, _ := strconv.Atoi(e.Name()[:4])
		if len(vs) == 0 || vs[len(vs)-1] != v {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}
