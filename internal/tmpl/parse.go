package tmpl

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// ErrTemplate is wrapped by every error from this package.
var ErrTemplate = errors.New("pgcoord: bad lock-name template")

// Template is a parsed template; safe for concurrent use.
//
// A Template is immutable once parsed, apart from small per-step lookup
// caches that are updated atomically.
type Template struct {
	src    string
	segs   []segment
	fields []*field // in order of appearance; one entry per replacement field
	names  []string // distinct top-level names, in order of first use
	lit    string   // the whole unescaped text, used when there are no fields
	litLen int      // total length of the literal text, for sizing Format's buffer
}

// segment is either literal text (f == nil) or a replacement field.
type segment struct {
	lit string
	f   *field
}

// field is one replacement field. steps[0] is the top-level name.
type field struct {
	text  string // the source text between the braces
	steps []*step
}

// step is one link of a field's path: the name, an ".attr" or a "[key]".
// Steps are pointers because they hold an atomic cache, which must not be
// copied.
type step struct {
	key    string
	index  bool // "[key]" rather than a name or ".attr"
	digits bool // key is all ASCII digits
	n      int  // key as an int when digits and it fits, else -1
	end    int  // offset in field.text just past this step, for error messages
	// keyVal is reflect.ValueOf(key), made once so that string-keyed map
	// lookups in Format do not allocate.
	keyVal reflect.Value
	// cache remembers the last struct field or method this step resolved
	// to, keyed by type. One entry per step keeps it bounded while making
	// the common case (one data type per template) skip the lookup.
	cache atomic.Pointer[memberCache]
}

type memberCache struct {
	typ  reflect.Type
	addr bool
	m    member
}

// at returns the path text before step i, naming the value step i is
// applied to.
func (f *field) at(i int) string {
	if i == 0 {
		return "data"
	}
	return f.text[:f.steps[i-1].end]
}

// Parse parses s. Syntax errors (braces, empty fields, !r/!s/:spec,
// positional fields) are reported here.
func Parse(s string) (*Template, error) {
	if !utf8.ValidString(s) {
		return nil, syntaxErr(s, "invalid UTF-8 at offset %d", invalidAt(s))
	}
	t := &Template{src: s}
	var lit strings.Builder // literal text since the last field
	flush := func() {
		if lit.Len() > 0 {
			t.segs = append(t.segs, segment{lit: lit.String()})
			t.litLen += lit.Len()
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				lit.WriteByte('{')
				i += 2
				continue
			}
			f, next, err := parseField(s, i)
			if err != nil {
				return nil, err
			}
			flush()
			t.segs = append(t.segs, segment{f: f})
			t.fields = append(t.fields, f)
			if name := f.steps[0].key; !contains(t.names, name) {
				t.names = append(t.names, name)
			}
			i = next
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				lit.WriteByte('}')
				i += 2
				continue
			}
			return nil, syntaxErr(s, "single '}' at offset %d (write '}}' for a literal brace)", i)
		default:
			j := strings.IndexAny(s[i:], "{}")
			if j < 0 {
				j = len(s) - i
			}
			lit.WriteString(s[i : i+j])
			i += j
		}
	}
	flush()
	if len(t.fields) == 0 {
		for _, sg := range t.segs {
			t.lit += sg.lit // at most one segment: no field splits the text
		}
	}
	return t, nil
}

// parseField parses the field whose "{" is at s[open]. It returns the field
// and the offset just past its closing "}".
func parseField(s string, open int) (*field, int, error) {
	start := open + 1
	bad := func(format string, args ...any) error {
		return syntaxErr(s, "field %q: %s", fieldShown(s, open), fmt.Sprintf(format, args...))
	}
	f := &field{}
	j := scanName(s, start)
	name := s[start:j]
	if j >= len(s) {
		return nil, 0, syntaxErr(s, "unclosed '{' at offset %d", open)
	}
	switch {
	case name == "" && s[j] == '}':
		return nil, 0, bad("empty field: fields must be named, like {volume_id}")
	case name == "":
		return nil, 0, bad("field must start with a name")
	case isDigits(name):
		return nil, 0, bad("positional field %q: fields must be named, like {volume_id}", name)
	}
	f.steps = append(f.steps, newStep(name, false, j-start))
	for {
		if j >= len(s) {
			return nil, 0, syntaxErr(s, "unclosed '{' at offset %d", open)
		}
		switch c := s[j]; c {
		case '}':
			f.text = s[start:j]
			return f, j + 1, nil
		case '.':
			k := scanName(s, j+1)
			if k == j+1 {
				return nil, 0, bad("empty attribute name after '.' at offset %d", j)
			}
			f.steps = append(f.steps, newStep(s[j+1:k], false, k-start))
			j = k
		case '[':
			k := strings.IndexByte(s[j+1:], ']')
			if k < 0 {
				return nil, 0, bad("missing ']' for '[' at offset %d", j)
			}
			if k == 0 {
				return nil, 0, bad("empty key '[]' at offset %d", j)
			}
			end := j + 1 + k + 1 // just past the ']'
			f.steps = append(f.steps, newStep(s[j+1:end-1], true, end-start))
			j = end
			if j < len(s) && !strings.ContainsRune(".[}!:", rune(s[j])) {
				return nil, 0, bad("only '.' or '[' may follow ']' (offset %d)", j)
			}
		case '!':
			return nil, 0, bad("conversions like !r and !s are not supported (offset %d)", j)
		case ':':
			return nil, 0, bad("format specs like :>10 are not supported (offset %d)", j)
		default: // '{' or ']'
			return nil, 0, bad("unexpected %q at offset %d", c, j)
		}
	}
}

func newStep(key string, index bool, end int) *step {
	st := &step{key: key, index: index, end: end, n: -1, keyVal: reflect.ValueOf(key)}
	if isDigits(key) {
		st.digits = true
		if n, err := strconv.Atoi(key); err == nil {
			st.n = n
		}
	}
	return st
}

// scanName returns the offset of the first byte at or after i that ends a
// name or attribute, or len(s).
func scanName(s string, i int) int {
	if k := strings.IndexAny(s[i:], ".[]!:{}"); k >= 0 {
		return i + k
	}
	return len(s)
}

// fieldShown returns the field starting at s[open] as it appears in s, up to
// its closing brace if there is one, for error messages.
func fieldShown(s string, open int) string {
	if k := strings.IndexByte(s[open:], '}'); k >= 0 {
		return s[open : open+k+1]
	}
	return s[open:]
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func invalidAt(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return len(s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func syntaxErr(src, format string, args ...any) error {
	return fmt.Errorf("%w: template %q: %s", ErrTemplate, src, fmt.Sprintf(format, args...))
}

// String returns the source text.
func (t *Template) String() string { return t.src }

// Fields returns the distinct top-level names used (e.g.
// ["f_name","vol","snap"]) in order of first use. It returns nil for a
// template without fields. The slice is a copy; callers may modify it.
func (t *Template) Fields() []string {
	if len(t.names) == 0 {
		return nil
	}
	return append([]string(nil), t.names...)
}
