package pgtemp

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// reaperScript runs as `sh -c reaperScript pgtemp-reaper DIR DATADIR` with
// its stdin on a pipe whose only writer is the owning process. It blocks on
// that pipe; EOF comes when Close closes it or when the owner dies in any way
// (the kernel closes the owner's descriptors even on SIGKILL). Then it stops
// the postmaster, whichever pid it has now (Restart changes it), and deletes
// DIR. It ignores terminal and termination signals so that it outlives
// whatever killed its owner.
const reaperScript = `
trap '' HUP INT QUIT TERM PIPE
dir=$1
data=$2
cat >/dev/null 2>&1
# Pids get reused: only signal a live process whose command line names our
# data directory. A zombie has an empty command line, so it counts as gone.
ours() {
	[ -r "/proc/$1/cmdline" ] && tr '\000' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$data"
}
for f in "$data/postmaster.pid" "$dir/owner-postmaster.pid"; do
	pid=$(head -n 1 "$f" 2>/dev/null)
	case "$pid" in ''|*[!0-9]*) continue ;; esac
	ours "$pid" || continue
	kill -QUIT "$pid" 2>/dev/null
	i=0
	while ours "$pid" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
	ours "$pid" && kill -KILL "$pid" 2>/dev/null
done
i=0
while [ -e "$dir" ] && [ "$i" -lt 50 ]; do
	rm -rf -- "$dir" 2>/dev/null
	[ -e "$dir" ] && sleep 0.1
	i=$((i+1))
done
exit 0
`

// startReaper starts the cleanup watchdog described at reaperScript. It runs
// as ourselves (root may signal the postgres-owned postmaster and delete its
// files) in its own process group, so a signal sent to our group (go test's
// timeout, Ctrl-C) does not take it down along with us.
func (s *Server) startReaper() error {
	r, w, err := os.Pipe() // both ends close-on-exec: no other child inherits w
	if err != nil {
		return fmt.Errorf("pgtemp: reaper pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", reaperScript, "pgtemp-reaper", s.dir, s.dataDir)
	cmd.Stdin = r
	// Stdout/stderr stay /dev/null: a pipe to our (dead) stdout would
	// SIGPIPE or block the reaper.
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return fmt.Errorf("pgtemp: start reaper: %w", err)
	}
	s.reaper = cmd
	s.reaperW = w
	s.reaperDone = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.reaperDone)
	}()
	return nil
}
