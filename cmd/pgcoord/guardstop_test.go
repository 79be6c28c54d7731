package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatchdogStopBeforeStart: a stop (the guard lost) that reaches the
// watchdog before the command started, behind beats it read too late to
// start on (a loaded machine, a ^Z during startup), is answered: the
// command never runs, and pgcoord is told to exit 75. Before, the watchdog
// passed the stop over like a stale beat and waited for a fresh one that
// never came (pgcoord beats no more once the guard is lost), and pgcoord
// waited for the watchdog's answer, both for ever.
func TestWatchdogStopBeforeStart(t *testing.T) {
	t.Parallel()
	ctlR, ctlW, err := os.Pipe()
	require.NoError(t, err)
	evR, evW, err := os.Pipe()
	require.NoError(t, err)
	marker := filepath.Join(t.TempDir(), "started")
	exe, err := os.Executable()
	require.NoError(t, err)
	wd := exec.Command(exe, "__guard", "--tool", "run", "--grace", "1s", "--", "sh", "-c", `echo > "$0"; sleep 100`, marker)
	wd.Env = append(os.Environ(), cliEnv+"=1")
	wd.ExtraFiles = []*os.File{ctlR, evW} // fds 3 and 4
	require.NoError(t, wd.Start())
	_, _ = ctlR.Close(), evW.Close()
	t.Cleanup(func() {
		_ = ctlW.Close()
		_ = wd.Process.Kill()
		_ = wd.Wait()
		_ = evR.Close()
	})

	now := monoNow()
	require.NoError(t, writeRecord(ctlW, guardRecord{op: opBeat, a: now - 1, b: now - 1})) // read too late
	require.NoError(t, writeRecord(ctlW, guardRecord{op: opStop, a: int64(time.Second)}))
	events := make(chan guardRecord, 4)
	go readRecords(evR, events)
	select {
	case e := <-events:
		require.EqualValues(t, evNotStarted, e.op)
		require.EqualValues(t, exitLockLost, e.a)
	case <-time.After(10 * time.Second):
		t.Fatal("the watchdog never answered a stop that came before the start")
	}
	require.NoFileExists(t, marker, "the command ran")
}
