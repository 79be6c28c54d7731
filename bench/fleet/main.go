// Command fleet measures pgcoord at fleet scale, on a throwaway PostgreSQL
// (or DATABASE_URL):
//
//	fleet run         many coordinators in several processes contending for
//	                  shared names, against one dedicated connection per
//	                  holder or waiter (make fleet)
//	fleet heartbeat   what a fleet's heartbeats do to pgcoord.members
//	                  (make heartbeat)
//	fleet starvation  goroutines on several coordinators contending for one
//	                  name: does everyone get it, and how long is the
//	                  longest wait (make fleet runs it too)
//
// It lives in the bench module, out of the library's go.mod.
package main

import (
	"fmt"
	"os"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// urlEnv names a server to use instead of a throwaway one.
const urlEnv = "DATABASE_URL"

func main() {
	if mode := os.Getenv(childModeEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleet run|heartbeat|starvation [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = fleetMain(os.Args[2:])
	case "heartbeat":
		err = heartbeatMain(os.Args[2:])
	case "starvation":
		err = starvationMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// throwawayServer starts a PostgreSQL with settings (or uses DATABASE_URL).
func throwawayServer(settings map[string]string) (string, func(), error) {
	return pgtemp.FromEnv(urlEnv, pgtemp.Options{Settings: settings})
}
