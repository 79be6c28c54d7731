package pgcoord

import (
	"fmt"
	"strings"

	"github.com/pgcoord/pgcoord/internal/hash"
)

// maxAppNameLen is PostgreSQL's cap on application_name (NAMEDATALEN - 1):
// the server truncates anything longer, and the held_locks view joins on
// the exact value, so the tag must fit.
const maxAppNameLen = 63

// sessionTagFor returns the application_name of every session of memberID:
// "pgcoord:" + the member id, cut to fit + "#" + 8 hex digits of its hash.
// pg_stat_activity then shows whose session it is, and the hash keeps two
// ids that read the same once cut (or once sanitised) apart. Bytes outside
// printable ASCII become '?' here, as the server would otherwise rewrite
// them and the stored tag would no longer match.
func sessionTagFor(memberID string) string {
	const head = "pgcoord:"
	tail := fmt.Sprintf("#%08x", uint64(hash.Key("session\x00"+memberID))>>32)
	room := maxAppNameLen - len(head) - len(tail)
	var b strings.Builder
	b.WriteString(head)
	for _, r := range memberID {
		if b.Len()-len(head) >= room {
			break
		}
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		b.WriteRune(r)
	}
	b.WriteString(tail)
	return b.String()
}
