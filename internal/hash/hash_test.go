package hash

import (
	"crypto/sha256"
	"testing"
)

// Pinned vectors: changing the hash would silently split every deployed lock
// in two (old and new processes would use different keys for one name).
// The values come from Python's hashlib, an independent implementation;
// the root package checks the same names against pgcoord.lock_key.
var vectors = []struct {
	name string
	key  int64
}{
	{"", -2039914840885289964},
	{"a", -3848465438864589366},
	{"volume-1", -3371852915421774632},
	{"pgcoord", 5129766090713379017},
	{"日本語のロック", -222753044876531681},
	{"openstack-cinder-volume-7f3c", -3616159854421853047},
}

func TestKeyVectors(t *testing.T) {
	for _, v := range vectors {
		if got := Key(v.name); got != v.key {
			t.Errorf("Key(%q) = %d, want %d", v.name, got, v.key)
		}
	}
}

func TestMemberKeyHalves(t *testing.T) {
	key, hi, lo := MemberKey("m1")
	if int64(hi)<<32|int64(uint32(lo)) != key {
		t.Fatalf("halves %d,%d do not rebuild %d", hi, lo, key)
	}
	if key == Key("m1") {
		t.Fatal("member key must differ from the lock key of the same text")
	}
}

// FuzzKey checks Key against a reference written another way: streaming
// SHA-256 over the name in two pieces and assembling the int64 by hand.
func FuzzKey(f *testing.F) {
	f.Add("volume-1", 3)
	f.Add("", 0)
	f.Add("日本語のロック", 5)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		if cut < 0 || cut > len(s) {
			cut = len(s) / 2
		}
		h := sha256.New()
		h.Write([]byte(s[:cut]))
		h.Write([]byte(s[cut:]))
		sum := h.Sum(nil)
		var u uint64
		for _, b := range sum[:8] {
			u = u<<8 | uint64(b)
		}
		if got, want := Key(s), int64(u); got != want {
			t.Fatalf("Key(%q) = %d, reference %d", s, got, want)
		}
	})
}
