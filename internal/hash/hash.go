// Package hash turns lock names into PostgreSQL advisory-lock keys.
//
// A key is the first 8 bytes of SHA-256 of the UTF-8 name, read big-endian as
// a signed int64. 64 bits make accidental collisions vanishingly rare (tooz's
// 16-bit keys collide after a few hundred names); the name registry catches
// the rest. The SQL function pgcoord.lock_key computes the same value.
package hash

import (
	"crypto/sha256"
	"encoding/binary"
)

// Key returns the advisory-lock key of the full lock name.
func Key(name string) int64 {
	sum := sha256.Sum256([]byte(name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// MemberKey returns the two int32 halves of the member lock for memberID. The
// member lock uses PostgreSQL's two-int advisory key space, which never
// conflicts with the one-bigint keys of named locks. The "member\x00" prefix
// keeps the value apart from Key of the same text.
func MemberKey(memberID string) (key int64, hi, lo int32) {
	key = Key("member\x00" + memberID)
	return key, int32(key >> 32), int32(key)
}
