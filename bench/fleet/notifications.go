package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The notification count (-notifications): how many NOTIFYs a mode sends, by
// channel. PostgreSQL signals every backend that listens in the database at
// each notifying commit, whatever the channel, so each one costs a wake-up of
// every listening coordinator's backend: the count per acquisition, times
// the coordinators, is the fan-out the server pays.

// notifyChannels are the channels pgcoord notifies on.
var notifyChannels = []string{"pgcoord_free", "pgcoord_queue", "pgcoord_leader", "pgcoord_group"}

// countNotifications listens on notifyChannels until ctx ends and returns the
// notifications seen by channel ("(targeted)" when the payload names a member).
// ready is closed once the LISTENs are in place.
func countNotifications(ctx context.Context, base string, ready chan<- struct{}) (map[string]int64, error) {
	conn, err := pgx.Connect(context.Background(), base)
	if err != nil {
		close(ready)
		return nil, err
	}
	defer conn.Close(context.Background())
	for _, ch := range notifyChannels {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			close(ready)
			return nil, err
		}
	}
	close(ready)
	counts := map[string]int64{}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return counts, nil
			}
			return counts, err
		}
		k := n.Channel
		if strings.Contains(n.Payload, " ") {
			k += " (targeted)"
		}
		counts[k]++
	}
}

// printNotifications prints counts per channel and per acquisition.
func printNotifications(mode string, counts map[string]int64, acquired int64) {
	per := float64(max(acquired, 1))
	var total int64
	keys := make([]string, 0, len(counts))
	for k, v := range counts {
		keys = append(keys, k)
		total += v
	}
	slices.Sort(keys)
	fmt.Fprintf(os.Stderr, "%s: %d notifications (%.2f per acquisition; %d acquisitions)", mode, total, float64(total)/per, acquired)
	for _, k := range keys {
		fmt.Fprintf(os.Stderr, "; %s %d (%.2f)", k, counts[k], float64(counts[k])/per)
	}
	fmt.Fprintln(os.Stderr)
}
