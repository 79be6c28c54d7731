package pgcoord

import "fmt"

// MaxElectionValueLen is the largest value, in bytes, that Campaign and
// Proclaim take. The value travels on the control session, which carries
// the member's liveness, as group capabilities do (see MaxCapabilitiesLen,
// the same bound for the same reason): a value that took the server longer
// than the session's statement bound to store would close that session and
// the member lock with it, and every observer reads the value again at
// every change.
const MaxElectionValueLen = 1 << 20

// checkElectionValue refuses, before any I/O, a value PostgreSQL's text
// cannot store (a NUL, bytes that are not UTF-8: the server's answer would
// be an untyped error, and Campaign's only after it won the lock) or one
// longer than MaxElectionValueLen.
func checkElectionValue(value string) error {
	if len(value) > MaxElectionValueLen {
		return fmt.Errorf("%w: %d bytes, more than MaxElectionValueLen (%d)", ErrInvalidValue, len(value), MaxElectionValueLen)
	}
	if fault := textFault(value); fault != "" {
		return fmt.Errorf("%w: %s", ErrInvalidValue, fault)
	}
	return nil
}
