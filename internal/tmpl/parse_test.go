package tmpl

import (
	"slices"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	cases := []struct {
		tmpl string
		err  string // substring of the error
	}{
		{"{", "unclosed '{'"},
		{"}", "single '}'"},
		{"a}b", "single '}' at offset 1"},
		{"{a", "unclosed '{'"},
		{"x{a.b", "unclosed '{' at offset 1"},
		{"{a[b]", "unclosed '{'"},
		{"{{{a", "unclosed '{' at offset 2"},
		{"{a!r}", "conversions"},
		{"{a!s}", "conversions"},
		{"{a!}", "conversions"},
		{"{!r}", "must start with a name"},
		{"{a:>10}", "format specs"},
		{"{a:}", "format specs"},
		{"{:}", "must start with a name"},
		{"{}", "empty field"},
		{"x-{}-y", `field "{}"`},
		{"{0}", "positional"},
		{"{12}", "positional"},
		{"{0.a}", "positional"},
		{"{0[a]}", "positional"},
		{"{a.}", "empty attribute"},
		{"{a..b}", "empty attribute"},
		{"{a.[b]}", "empty attribute"},
		{"{a[]}", "empty key"},
		{"{a[}", "missing ']'"},
		{"{a[b}", "missing ']'"},
		{"{.a}", "must start with a name"},
		{"{[0]}", "must start with a name"},
		{"{a[b]c}", "only '.' or '['"},
		{"{a{b}}", "unexpected '{'"},
		{"{a]}", "unexpected ']'"},
		{"x\xffy", "invalid UTF-8 at offset 1"},
		{"{a\xff}", "invalid UTF-8"},
		{"ok-{a}-}", "single '}' at offset 7"},
	}
	for _, tc := range cases {
		t.Run(tc.tmpl, func(t *testing.T) {
			tp, err := Parse(tc.tmpl)
			if tp != nil {
				t.Errorf("Parse(%q) returned a template along with error %v", tc.tmpl, err)
			}
			assertTemplateErr(t, err, tc.tmpl, tc.err)
		})
	}
}

func TestParseFields(t *testing.T) {
	cases := []struct {
		tmpl string
		want []string
	}{
		{"", nil},
		{"plain{{x}}", nil},
		{"{f_name}-{vol.id}-{snap[name]}", []string{"f_name", "vol", "snap"}},
		{"{vol.id}-{f_name}-{vol.size}-{vol[x]}", []string{"vol", "f_name"}},
		{"{a b}", []string{"a b"}}, // any text is a name, as in Python
		{"{-1}", []string{"-1"}},   // not all digits, so not positional
		{"{a.0}", []string{"a"}},   // digit attributes are fine after a name
		{"{ключ[ä]}", []string{"ключ"}},
	}
	for _, tc := range cases {
		tp, err := Parse(tc.tmpl)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.tmpl, err)
		}
		got := tp.Fields()
		if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("Parse(%q).Fields() = %#v, want %#v", tc.tmpl, got, tc.want)
		}
		if tp.String() != tc.tmpl {
			t.Errorf("String() = %q, want %q", tp.String(), tc.tmpl)
		}
	}
}

func TestFieldsIsACopy(t *testing.T) {
	tp, err := Parse("{a}-{b}")
	if err != nil {
		t.Fatal(err)
	}
	tp.Fields()[0] = "changed"
	if got := tp.Fields(); got[0] != "a" {
		t.Fatalf("Fields() shares its slice: got %v", got)
	}
}

func TestParseSteps(t *testing.T) {
	tp, err := Parse("{a.b[c d].e[0][}]}")
	if err != nil {
		t.Fatal(err)
	}
	f := tp.fields[0]
	var got []string
	for _, s := range f.steps {
		if s.index {
			got = append(got, "["+s.key+"]")
		} else {
			got = append(got, "."+s.key)
		}
	}
	want := []string{".a", ".b", "[c d]", ".e", "[0]", "[}]"}
	if !slices.Equal(got, want) {
		t.Fatalf("steps = %v, want %v", got, want)
	}
	if f.text != "a.b[c d].e[0][}]" {
		t.Fatalf("text = %q", f.text)
	}
	// Prefixes name the value each step applies to, for error messages.
	if at := f.at(4); at != "a.b[c d].e" {
		t.Fatalf("at(4) = %q", at)
	}
}

func TestParseLongName(t *testing.T) {
	name := strings.Repeat("n", 2048)
	tp, err := Parse("{" + name + "}")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.Format(map[string]any{name: "v"}, nil)
	if err != nil || got != "v" {
		t.Fatalf("Format = %q, %v", got, err)
	}
}
