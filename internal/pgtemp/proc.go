package pgtemp

import (
	"bytes"
	"errors"
	"os"
	"strconv"
)

// ProcessAlive reports whether pid is running, as opposed to a zombie
// waiting to be reaped: after an external SIGKILL the waiter goroutine may
// lag a little, and StartServer must not mistake the corpse for a server.
// The HA harness (internal/hastack) uses it for its processes too.
func ProcessAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// No /proc: trust the waiter goroutine; a reaped pid has no entry.
		return !errors.Is(err, os.ErrNotExist) || !procMounted()
	}
	// The state follows the parenthesised command name, which may itself
	// contain parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return false
	}
	return true
}

func procMounted() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}
