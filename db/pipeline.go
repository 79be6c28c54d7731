// This file is written by hand, not by sqlc: the lock sessions pipeline
// tries and unlocks from many goroutines into one pgx.Batch, which needs the
// statements' text. The text itself stays in queries/locks.sql, generated
// into the constants below.

package db

// TryLockSQL is the text of TryLock, for queueing in a pgx.Batch. It takes
// the key and returns the fencing token, 0 when the lock is busy.
const TryLockSQL = tryLock

// UnlockSQL is the text of Unlock, for queueing in a pgx.Batch. It takes the
// key and returns whether the session held it.
const UnlockSQL = unlock
