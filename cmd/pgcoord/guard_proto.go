package main

import (
	"encoding/binary"
	"io"
)

// The guard's pipe protocol: pgcoord and its watchdog process ("pgcoord
// __guard", see guard_watchdog.go) exchange fixed-size records over two
// pipes, fd 3 (pgcoord to watchdog) and fd 4 (watchdog to pgcoord) of the
// watchdog. A pipe's end closing is news too: the watchdog reading EOF
// means pgcoord died (the kernel closes every fd of a killed process), so
// the command must die at once; pgcoord reading EOF before a done record
// means the watchdog died.

// Records from pgcoord to the watchdog.
const (
	// opBeat: the guard (lock or leadership) was valid when pgcoord read
	// the monotonic clock at a-(beat lead). a: when to send SIGTERM if no
	// further beat comes; b: by when every process of the command must be
	// dead (SIGKILL), both CLOCK_MONOTONIC nanoseconds.
	opBeat = 1
	// opSignal: forward signal a to the command's process group.
	opSignal = 2
	// opStop: the guard was lost; SIGTERM now, SIGKILL a nanoseconds later.
	opStop = 3
)

// Records from the watchdog to pgcoord.
const (
	evStarted    = 1 // a: the command's pid (and process group)
	evNotStarted = 2 // a: pgcoord's exit code (126, 127; 75: a stop came first); the watchdog said why
	evDone       = 3 // a: the command's wait status; b: guardFlags; every process is gone
)

// guardFlags say in evDone why the watchdog stopped the command.
const (
	// flagSilent: pgcoord sent no beat in time (frozen or starved), so the
	// watchdog stopped the command before pgcoord's lease could run out.
	flagSilent = 1 << iota
	// flagLeftovers: the command exited and left processes behind, which
	// were stopped before the lock was released.
	flagLeftovers
)

// guardRecord is one record: an op and two arguments.
type guardRecord struct {
	op   uint64
	a, b int64
}

const guardRecordSize = 24

func writeRecord(w io.Writer, r guardRecord) error {
	var buf [guardRecordSize]byte
	binary.LittleEndian.PutUint64(buf[0:], r.op)
	binary.LittleEndian.PutUint64(buf[8:], uint64(r.a))
	binary.LittleEndian.PutUint64(buf[16:], uint64(r.b))
	_, err := w.Write(buf[:])
	return err
}

// readRecords sends the records read from r to ch and closes ch at EOF or
// on any error.
func readRecords(r io.Reader, ch chan<- guardRecord) {
	defer close(ch)
	var buf [guardRecordSize]byte
	for {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return
		}
		ch <- guardRecord{
			op: binary.LittleEndian.Uint64(buf[0:]),
			a:  int64(binary.LittleEndian.Uint64(buf[8:])),
			b:  int64(binary.LittleEndian.Uint64(buf[16:])),
		}
	}
}
