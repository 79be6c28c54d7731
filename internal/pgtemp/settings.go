package pgtemp

import (
	"os"
	"sort"
	"strings"
)

// serverSettings returns the -c arguments: fast, non-durable defaults for a
// throwaway server, then the caller's settings in a stable order.
func serverSettings(extra map[string]string) []string {
	defaults := [][2]string{
		{"listen_addresses", host},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"max_connections", "300"},
		{"shared_buffers", "64MB"},
		{"password_encryption", "scram-sha-256"},
	}
	var args []string
	for _, kv := range defaults {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+extra[k])
	}
	return args
}

// childEnv is our environment minus libpq/server variables (PGDATA, PGPORT,
// PGHOST...) that would steer initdb or postgres elsewhere, with a C locale
// and a HOME the server user can reach.
func childEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") && !strings.HasPrefix(name, "PGCOORD_") {
			continue
		}
		switch name {
		case "HOME", "LANG", "LANGUAGE", "LC_ALL":
			continue
		}
		if strings.HasPrefix(name, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "LANG=C", "LC_ALL=C")
}
