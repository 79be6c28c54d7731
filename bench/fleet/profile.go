package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
)

// profileEnv names a directory: the first child process of a mode writes
// its CPU and block profiles there (<mode>.cpu.pprof, <mode>.block.pprof),
// to see where one process of the fleet spends its time and where its
// goroutines wait (go tool pprof -top).
const profileEnv = "FLEET_PROFILE_DIR"

// startProfiles starts the profiles of child proc when profileEnv is set,
// and returns the func that writes them.
func startProfiles(mode string, proc int) func() {
	dir := os.Getenv(profileEnv)
	if dir == "" || proc != 0 {
		return func() {}
	}
	cpu, err := os.Create(filepath.Join(dir, mode+".cpu.pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		cpu.Close()
		return func() {}
	}
	runtime.SetBlockProfileRate(int(1e6)) // a sample per ms blocked
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		f, err := os.Create(filepath.Join(dir, mode+".block.pprof"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			return
		}
		defer f.Close()
		_ = pprof.Lookup("block").WriteTo(f, 0)
	}
}
