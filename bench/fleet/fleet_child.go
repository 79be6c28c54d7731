package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// runChildProcess runs conf in a re-executed copy of this binary and reads
// its result.
func runChildProcess(ctx context.Context, conf childConf) (childResult, error) {
	var r childResult
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	js, err := json.Marshal(conf)
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childModeEnv+"=fleet", childConfEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("child %d: %w", conf.Proc, err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("child %d: %w: %q", conf.Proc, err, out)
	}
	return r, nil
}

// runChild is a child process's main.
func runChild(mode string) int {
	if mode != "fleet" {
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return 2
	}
	var conf childConf
	if err := json.Unmarshal([]byte(os.Getenv(childConfEnv)), &conf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var r childResult
	var err error
	stop := startProfiles(conf.Mode, conf.Proc)
	defer stop()
	if conf.Mode == "baseline" {
		r, err = runBaseline(conf)
	} else {
		r, err = runPgcoord(conf)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

// worker loops acquire, hold, release until the run ends, recording waits.
type worker struct {
	mu sync.Mutex
	r  childResult
}

func (w *worker) record(wait time.Duration, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.r.Errors++
		if w.r.FirstErr == "" {
			w.r.FirstErr = err.Error()
		}
		if w.r.ErrKinds == nil {
			w.r.ErrKinds = map[string]int64{}
		}
		w.r.ErrKinds[errKind(err)]++
		return
	}
	w.r.Acquired++
	w.r.Waits = append(w.r.Waits, wait)
}
