package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// outputFlags are the --json and -o/--output flags of the listing commands
// (members, locks; leader will take the same).
type outputFlags struct {
	json   *bool
	format *string
}

// addOutputFlags adds --json and -o/--output to fs.
func addOutputFlags(fs *flag.FlagSet) outputFlags {
	o := outputFlags{json: fs.Bool("json", false, "print JSON (the same as -o json)")}
	o.format = fs.String("output", "table", "output `format`: table or json")
	fs.StringVar(o.format, "o", "table", "short for --output")
	return o
}

// isJSON resolves the flags; a format other than table and json is a usage
// error.
func (o outputFlags) isJSON() (bool, error) {
	switch *o.format {
	case "json":
		return true, nil
	case "table", "":
		return *o.json, nil
	}
	return false, fmt.Errorf("unknown output format %q (table or json)", *o.format)
}

// writeJSON prints v as indented JSON followed by a newline: the one JSON
// writer of every command, so that all print alike.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jsonTime is a timestamp in JSON: RFC 3339 in UTC with the server's
// microseconds, or null when the column is null.
type jsonTime struct{ pgtype.Timestamptz }

// MarshalJSON prints RFC 3339 in UTC, whatever the process's zone.
func (t jsonTime) MarshalJSON() ([]byte, error) {
	if !t.Valid {
		return []byte("null"), nil
	}
	return json.Marshal(t.Time.UTC().Format(time.RFC3339Nano))
}
