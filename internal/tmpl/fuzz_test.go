package tmpl

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzData is the sample data the fuzzer formats against: a struct that
// reaches maps, slices, methods, nil pointers and cyclic values.
type fuzzData struct {
	Volume  *Volume
	Vol     Volume
	Holder  Holder
	M       map[string]any
	Cyclic  map[string]any
	SelfPtr any
	NilVol  *Volume
	Items   []string
	Panic   panicStringer
	Named   NamedMap
}

func newFuzzData() *fuzzData {
	cyclic := map[string]any{"x": 1}
	cyclic["self"] = cyclic
	var self any
	self = &self
	return &fuzzData{
		Volume:  testVolume(),
		Vol:     *testVolume(),
		Holder:  *testHolder(),
		M:       map[string]any{"a": map[string]any{"b": []any{1, "two", testVolume()}}, "0": "zero", "id": "m-id"},
		Cyclic:  cyclic,
		SelfPtr: self,
		Items:   []string{"i0", "i1"},
		Named:   NamedMap{"k": 1},
	}
}

// unescape is what a template without fields formats to.
var unescape = strings.NewReplacer("{{", "{", "}}", "}")

func FuzzParseFormat(f *testing.F) {
	for _, s := range []string{
		"", "plain", "{{", "}}", "{{}}", "a{{b}}c", "{", "}", "a}b", "{a", "{}", "{0}",
		"{a!r}", "{a!s}", "{a:>10}", "{a.}", "{a[]}", "{a[}", "{.a}", "{a[b]c}",
		"foo-{volume.id}", "{f_name}-{vol.id}-{snap[name]}", "{a.b[c].d}", "{items[0]}", "{m[key]}",
		"{volume.snaps[0].volume.ptrlabel}", "{vol.checked}-{vol.broken}-{vol.panics}",
		"{holder.byint[7]}", "{holder.byu8[300]}", "{holder.arr[1]}", "{holder.nested[a][b][1]}",
		"{holder.ps}", "{holder.color}", "{holder.u}", "{holder.float}", "{cyclic}", "{cyclic.self.self}",
		"{selfptr}", "{selfptr.x}", "{nilvol.id}", "{panic}", "{named.count}", "{m[a][b][2].id}",
		"{m.0}", "{holder.bystr[}]}", "ключ-{id}-日本語", "x\xffy", "{{{f_name}}}", "{e.name}",
	} {
		f.Add(s)
	}
	extra := map[string]any{"f_name": "do_it", "vol": testVolume(), "snap": map[string]string{"name": "sn"}}
	extraNames := []string{"f_name", "vol", "snap"}
	data := newFuzzData()
	types := []reflect.Type{nil, reflect.TypeFor[*fuzzData](), reflect.TypeFor[fuzzData](), reflect.TypeFor[any](),
		reflect.TypeFor[map[string]any](), reflect.TypeFor[int](), reflect.TypeFor[[]Volume]()}

	f.Fuzz(func(t *testing.T, s string) {
		tp, err := Parse(s)
		if err != nil {
			if tp != nil || !errors.Is(err, ErrTemplate) {
				t.Fatalf("Parse(%q) = %v, %v", s, tp, err)
			}
			return
		}
		if tp.String() != s {
			t.Fatalf("String() = %q, want %q", tp.String(), s)
		}
		names := tp.Fields()
		if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
			t.Fatalf("Fields() = %q has duplicates", names)
		}
		if len(names) == 0 {
			got, err := tp.Format(nil, nil)
			if want := unescape.Replace(s); err != nil || got != want {
				t.Fatalf("Format(%q) = %q, %v; want %q", s, got, err, want)
			}
		}
		for _, d := range []any{data, nil, *data, data.M} {
			got, err := tp.Format(extra, d)
			if err != nil {
				if !errors.Is(err, ErrTemplate) {
					t.Fatalf("Format(%q): error %v does not wrap ErrTemplate", s, err)
				}
				continue
			}
			// Check must accept whatever Format could resolve.
			if cerr := tp.Check(extraNames, reflect.TypeOf(d)); cerr != nil {
				t.Fatalf("Format(%q) = %q but Check rejects %T: %v", s, got, d, cerr)
			}
		}
		for _, typ := range types {
			if err := tp.Check(extraNames, typ); err != nil && !errors.Is(err, ErrTemplate) {
				t.Fatalf("Check(%q, %v): error %v does not wrap ErrTemplate", s, typ, err)
			}
		}
	})
}
