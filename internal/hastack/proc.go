package hastack

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgcoord/pgcoord/internal/pgtemp"
)

// proc is one process the stack started (etcd, HAProxy, a Patroni), in a
// process group of its own so that a signal aimed at the test binary does
// not hit it half-way and so that it can be killed with its children.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
}

// spawn starts bin with args as cred (nil: as ourselves), its output
// appended to logPath, in dir.
func spawn(name, dir, logPath string, env []string, cred *syscall.Credential, bin string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hastack: %s log: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hastack: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// pidsUnder returns the pids of live processes whose command line names a
// path under dir (etcd's data dir, a Patroni config, a postmaster's -D,
// HAProxy's config): every process of a stack, its postmasters included,
// which Patroni detaches from itself with setsid. Backends rename
// themselves ("postgres: ..."), so childrenOf finds those.
func pidsUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a zombie
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if a := string(arg); strings.HasPrefix(a, dir+"/") || strings.Contains(a, "="+dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// childrenOf returns the live children of pid (a postmaster's backends and
// auxiliary processes).
func childrenOf(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(child); ok && ppid == pid {
			kids = append(kids, child)
		}
	}
	return kids
}

// parentOf reads the parent pid from /proc/pid/stat; the command name in
// parentheses may itself hold spaces and parentheses.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// killAll SIGKILLs pids and waits up to timeout until none runs.
func killAll(pids []int, timeout time.Duration) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, pid := range pids {
			if pgtemp.ProcessAlive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hastack: processes %v still run %s after SIGKILL", left, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// postmasterPID reads the postmaster's pid from the data directory, 0 when
// there is none or it does not run.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || !pgtemp.ProcessAlive(pid) {
		return 0
	}
	return pid
}

// reaperScript runs as `sh -c reaperScript hastack-reaper DIR` with its
// stdin on a pipe whose only writer is the owning process: EOF comes when
// Close closes it or when the owner dies in any way (even SIGKILL). Then it
// asks every postmaster under DIR for an immediate shutdown, SIGKILLs every
// process whose command line names DIR (etcd, HAProxy, Patroni, the
// postmasters; backends die with their postmaster), and deletes DIR.
const reaperScript = `
trap '' HUP INT QUIT TERM PIPE
dir=$1
cat >/dev/null 2>&1
ours() {
	# One grep over every command line (the grep itself matches, and is
	# gone by the time it is killed).
	grep -lsaF -- "$dir/" /proc/[0-9]*/cmdline 2>/dev/null | while IFS=/ read -r _ _ pid _; do
		[ "$pid" != "$$" ] && echo "$pid"
	done
}
for f in "$dir"/*/data/postmaster.pid; do
	pid=$(head -n 1 "$f" 2>/dev/null)
	case "$pid" in ''|*[!0-9]*) continue ;; esac
	kill -QUIT "$pid" 2>/dev/null
done
i=0
while [ "$i" -lt 5 ]; do
	pids=$(ours)
	[ -z "$pids" ] && break
	kill -KILL $pids 2>/dev/null
	sleep 0.2
	i=$((i+1))
done
i=0
while [ -e "$dir" ] && [ "$i" -lt 50 ]; do
	rm -rf -- "$dir" 2>/dev/null
	[ -e "$dir" ] && sleep 0.1
	i=$((i+1))
done
exit 0
`

// startReaper starts the cleanup watchdog described at reaperScript, in its
// own process group so that whatever kills the test binary spares it.
func startReaper(dir string) (*proc, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("hastack: reaper pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", reaperScript, "hastack-reaper", dir)
	cmd.Stdin = r
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("hastack: start reaper: %w", err)
	}
	p := &proc{name: "reaper", cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, w, nil
}
