//go:build !linux

package main

import (
	"syscall"
	"time"
)

// monoNow is the wall clock in nanoseconds: outside Linux there is no
// machine-wide monotonic clock in package syscall, so a wall-clock step
// while a command runs can make the watchdog stop it early or late.
func monoNow() int64 { return time.Now().UnixNano() }

// becomeSubreaper is Linux-only: elsewhere orphans go to PID 1 and only
// those still in the command's process group are reached.
func becomeSubreaper() error { return nil }

// commandAttr starts the command in its own process group.
func commandAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// descendants is Linux-only (it reads /proc).
func descendants(int) []int { return nil }
