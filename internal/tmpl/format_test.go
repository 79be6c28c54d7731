package tmpl

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func testVolume() *Volume {
	return &Volume{
		ID:   "v1",
		Name: "disk",
		Size: 10,
		Tags: map[string]string{"name": "t1", "0": "zero"},
		Snaps: []Snapshot{
			{ID: "s1", Volume: &Volume{ID: "v0"}},
		},
		Any: map[string]any{"k": "anyv"},
	}
}

func testHolder() *Holder {
	return &Holder{
		Vols:    []Volume{{ID: "a", Name: "first"}, {ID: "b"}},
		VolPtrs: []*Volume{nil, {ID: "p"}},
		Arr:     [2]string{"x", "y"},
		ByInt:   map[int]string{0: "zero", 7: "seven"},
		ByU8:    map[uint8]string{7: "u7"},
		ByStr:   map[string]string{"0": "s0", "a.b:c!d": "odd", "}": "brace", "[": "bracket"},
		ByFloat: map[float64]string{1.5: "f"},
		Nested:  map[string]map[string][]int{"a": {"b": {1, 2}}},
		Named:   NamedMap{"n": 1},
		Status:  "active",
		Color:   1,
		PS:      ptrStringer{N: 3},
		PSPtr:   &ptrStringer{N: 4},
		Float:   1.5,
		U:       math.MaxUint64,
		I8:      -5,
		Bool:    true,
		Iface:   Color(0),
	}
}

type formatCase struct {
	name  string
	tmpl  string
	extra map[string]any
	data  any
	want  string
	// err, when set, is a substring of the expected error; the error must
	// also wrap ErrTemplate and quote the template.
	err string
}

func runFormatCases(t *testing.T, cases []formatCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := Parse(tc.tmpl)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.tmpl, err)
			}
			got, err := tp.Format(tc.extra, tc.data)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Format(%q): unexpected error: %v", tc.tmpl, err)
				}
				if got != tc.want {
					t.Fatalf("Format(%q) = %q, want %q", tc.tmpl, got, tc.want)
				}
				return
			}
			assertTemplateErr(t, err, tc.tmpl, tc.err)
			if got != "" {
				t.Errorf("Format(%q) returned %q along with an error", tc.tmpl, got)
			}
		})
	}
}

// assertTemplateErr checks that err wraps ErrTemplate, quotes the template
// and contains want.
func assertTemplateErr(t *testing.T, err error, tmpl, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%q: no error, want one containing %q", tmpl, want)
	}
	if !errors.Is(err, ErrTemplate) {
		t.Errorf("%q: error %v does not wrap ErrTemplate", tmpl, err)
	}
	if !strings.Contains(err.Error(), strconv.Quote(tmpl)) {
		t.Errorf("%q: error %q does not quote the template", tmpl, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%q: error %q does not contain %q", tmpl, err, want)
	}
}

func TestFormatLiterals(t *testing.T) {
	long := strings.Repeat("x", 1500)
	runFormatCases(t, []formatCase{
		{name: "plain", tmpl: "plain-lock", want: "plain-lock"},
		{name: "empty", tmpl: "", want: ""},
		{name: "escaped braces", tmpl: "a{{b}}c", want: "a{b}c"},
		{name: "only escapes", tmpl: "{{}}", want: "{}"},
		{name: "escaped name", tmpl: "{{x}}", want: "{x}"},
		{name: "four braces", tmpl: "}}}}{{{{", want: "}}{{"},
		{name: "field inside escapes", tmpl: "{{{x}}}", extra: map[string]any{"x": 1}, want: "{1}"},
		{name: "utf8 literal", tmpl: "ключ-{id}-日本語", data: testVolume(), want: "ключ-v1-日本語"},
		{name: "utf8 name", tmpl: "{名前}", extra: map[string]any{"名前": "n"}, want: "n"},
		{name: "long literal", tmpl: long + "-{id}", data: testVolume(), want: long + "-v1"},
		{name: "long literal only", tmpl: long, want: long},
		{name: "data ignored without fields", tmpl: "x", data: 42, want: "x"},
		{name: "empty result", tmpl: "{s}", extra: map[string]any{"s": ""}, want: ""},
	})
}

func TestFormatPaths(t *testing.T) {
	vol := testVolume()
	h := testHolder()
	runFormatCases(t, []formatCase{
		{name: "cinder volume id", tmpl: "foo-{volume.id}", data: map[string]any{"volume": vol}, want: "foo-v1"},
		{
			name:  "cinder f_name",
			tmpl:  "{f_name}-{vol.id}-{snap[name]}",
			extra: map[string]any{"f_name": "delete_volume"},
			data:  map[string]any{"vol": vol, "snap": map[string]string{"name": "sn"}},
			want:  "delete_volume-v1-sn",
		},
		{
			name: "nested chain",
			tmpl: "{a.b[c].d}",
			data: map[string]any{"a": map[string]any{"b": map[string]any{"c": struct{ D int }{D: 4}}}},
			want: "4",
		},
		{name: "slice index", tmpl: "{items[0]}-{items[1]}", data: map[string]any{"items": []string{"x", "y"}}, want: "x-y"},
		{name: "map key", tmpl: "{m[key]}", data: map[string]any{"m": map[string]int{"key": 7}}, want: "7"},
		{name: "struct top level", tmpl: "{id}/{name}/{size}", data: vol, want: "v1/disk/10"},
		{name: "struct value top level", tmpl: "{id}", data: *vol, want: "v1"},
		{name: "case-insensitive field", tmpl: "{volume.id}", data: map[string]any{"volume": Volume{ID: "x"}}, want: "x"},
		{name: "long chain", tmpl: "{vols[0].snaps[0].volume.id}", data: map[string]any{"vols": []*Volume{vol}}, want: "v0"},
		{name: "map then attr", tmpl: "{tags.name}", data: vol, want: "t1"},
		{name: "map key via index", tmpl: "{tags[name]}", data: vol, want: "t1"},
		{name: "digits key on string map", tmpl: "{tags[0]}", data: vol, want: "zero"},
		{name: "digits attr on string map", tmpl: "{tags.0}", data: vol, want: "zero"},
		{name: "int map key", tmpl: "{byint[7]}", data: h, want: "seven"},
		{name: "uint8 map key", tmpl: "{byu8[7]}", data: h, want: "u7"},
		{name: "string map digits", tmpl: "{bystr[0]}", data: h, want: "s0"},
		{name: "key taken literally", tmpl: "{bystr[a.b:c!d]}", data: h, want: "odd"},
		{name: "brace key", tmpl: "{bystr[}]}", data: h, want: "brace"},
		{name: "bracket key", tmpl: "{bystr[[]}", data: h, want: "bracket"},
		{name: "array index", tmpl: "{arr[1]}", data: h, want: "y"},
		{name: "nested maps and slices", tmpl: "{nested[a][b][1]}", data: h, want: "2"},
		{name: "slice of pointers", tmpl: "{volptrs[1].id}", data: h, want: "p"},
		{name: "through any", tmpl: "{any.k}", data: vol, want: "anyv"},
		{name: "embedded promoted", tmpl: "{o.deep}-{o.x}", data: map[string]any{"o": Outer{Inner: Inner{Deep: "d"}, X: 1}}, want: "d-1"},
		{name: "embedded by name", tmpl: "{o.inner.deep}", data: map[string]any{"o": Outer{Inner: Inner{Deep: "d"}}}, want: "d"},
		{name: "promoted through unexported embed", tmpl: "{o.promoted}", data: map[string]any{"o": OuterUnexported{inner2{Promoted: "p"}}}, want: "p"},
		{name: "extra overrides data", tmpl: "{vol}", extra: map[string]any{"vol": "E"}, data: map[string]any{"vol": vol}, want: "E"},
		{name: "extra path", tmpl: "{vol.id}", extra: map[string]any{"vol": vol}, want: "v1"},
		{name: "extra with nil data", tmpl: "{f_name}", extra: map[string]any{"f_name": "f"}, want: "f"},
		{name: "extra non-string", tmpl: "{n}", extra: map[string]any{"n": 12}, want: "12"},
		{name: "data used when not in extra", tmpl: "{f_name}-{id}", extra: map[string]any{"f_name": "f"}, data: vol, want: "f-v1"},
		{name: "map in map any", tmpl: "{a.b}", data: map[string]map[string]string{"a": {"b": "c"}}, want: "c"},
	})
}

func TestFormatFieldsAndMethods(t *testing.T) {
	vol := testVolume()
	h := testHolder()
	runFormatCases(t, []formatCase{
		{name: "exact preferred", tmpl: "{e.Name}-{e.NAME}", data: map[string]any{"e": Exact{Name: "a", NAME: "b"}}, want: "a-b"},
		{name: "ambiguous case-insensitive", tmpl: "{e.name}", data: map[string]any{"e": Exact{}}, err: "ambiguous"},
		{name: "ambiguous ID Id", tmpl: "{a.id}", data: map[string]any{"a": Ambig{}}, err: "ambiguous"},
		{name: "ambiguous resolved exactly", tmpl: "{a.Id}", data: map[string]any{"a": Ambig{ID: "1", Id: "2"}}, want: "2"},
		{name: "unexported field", tmpl: "{v.secret}", data: map[string]any{"v": vol}, err: "unexported"},
		{name: "unexported field with accessor", tmpl: "{v.id}/{v.ID}", data: map[string]any{"v": Opaque{id: "o1"}}, want: "o1/o1"},
		{name: "unexported field with pointer accessor", tmpl: "{v.name}", data: map[string]any{"v": &Opaque{name: "n"}}, want: "n"},
		{name: "unexported embedded", tmpl: "{o.inner2}", data: map[string]any{"o": OuterUnexported{}}, err: "unexported"},
		{name: "unexported method not found", tmpl: "{v.unexportedMethod}", data: map[string]any{"v": vol}, err: `no field or method "unexportedMethod"`},
		{name: "value method", tmpl: "{v.label}", data: map[string]any{"v": *vol}, want: "vol-disk"},
		{name: "value method exact", tmpl: "{v.Label}", data: map[string]any{"v": vol}, want: "vol-disk"},
		{name: "pointer method via pointer", tmpl: "{v.ptrlabel}", data: map[string]any{"v": vol}, want: "ptr-disk"},
		{name: "pointer method on slice element", tmpl: "{vols[0].ptrlabel}", data: h, want: "ptr-first"},
		{name: "pointer method on field of pointer", tmpl: "{v.parent.ptrlabel}", data: map[string]any{"v": &Volume{Parent: &Volume{Name: "pa"}}}, want: "ptr-pa"},
		{name: "pointer method not addressable", tmpl: "{v.ptrlabel}", data: map[string]any{"v": *vol}, err: "pointer receiver"},
		{name: "method with nil error", tmpl: "{v.checked}", data: map[string]any{"v": vol}, want: "ok-v1"},
		{name: "method with error", tmpl: "{v.broken}", data: map[string]any{"v": vol}, err: "volume is broken"},
		{name: "method with args", tmpl: "{v.takes}", data: map[string]any{"v": vol}, err: "no arguments"},
		{name: "method with pointer args", tmpl: "{v.setname}", data: map[string]any{"v": vol}, err: "no arguments"},
		{name: "method two values", tmpl: "{v.twovalues}", data: map[string]any{"v": vol}, err: "no arguments"},
		{name: "method panics", tmpl: "{v.panics}", data: map[string]any{"v": vol}, err: "panicked"},
		{name: "method result chain", tmpl: "{v.child.id}", data: map[string]any{"v": vol}, want: "child-of-v1"},
		{name: "method result pointer chain", tmpl: "{v.childptr.ptrlabel}", data: map[string]any{"v": vol}, want: "ptr-"},
		{name: "method result not addressable", tmpl: "{v.child.ptrlabel}", data: map[string]any{"v": vol}, err: "pointer receiver"},
		{name: "method returns nil pointer", tmpl: "{v.nilpointer.id}", data: map[string]any{"v": vol}, err: "v.nilpointer is a nil *tmpl.Volume"},
		{name: "top-level method", tmpl: "{label}", data: vol, want: "vol-disk"},
		{name: "named map key before method", tmpl: "{m.n}", data: map[string]any{"m": h.Named}, want: "1"},
		{name: "named map method", tmpl: "{m.count}", data: map[string]any{"m": h.Named}, want: "42"},
		{name: "named map key shadows method", tmpl: "{m.count}", data: map[string]any{"m": NamedMap{"count": 5}}, want: "5"},
		{name: "named map missing", tmpl: "{m.zzz}", data: map[string]any{"m": h.Named}, err: `has no key "zzz"`},
	})
}

func TestFormatPrinting(t *testing.T) {
	h := testHolder()
	runFormatCases(t, []formatCase{
		{name: "named string", tmpl: "{status}", data: h, want: "active"},
		{name: "stringer", tmpl: "{color}", data: h, want: "green"},
		{name: "stringer in interface", tmpl: "{iface}", data: h, want: "red"},
		{name: "pointer stringer addressable", tmpl: "{ps}", data: h, want: "ps3"},
		{name: "pointer stringer not addressable", tmpl: "{ps}", data: *h, want: "{3}"},
		{name: "pointer stringer pointer", tmpl: "{psptr}", data: h, want: "ps4"},
		{name: "stringer top-level extra", tmpl: "{c}", extra: map[string]any{"c": Color(1)}, want: "green"},
		{name: "stringer panics", tmpl: "{p}", extra: map[string]any{"p": panicStringer{}}, err: "panicked"},
		{name: "uint64", tmpl: "{u}", data: h, want: "18446744073709551615"},
		{name: "int8", tmpl: "{i8}", data: h, want: "-5"},
		{name: "uint8", tmpl: "{b}", extra: map[string]any{"b": uint8(200)}, want: "200"},
		{name: "uintptr", tmpl: "{b}", extra: map[string]any{"b": uintptr(9)}, want: "9"},
		{name: "min int64", tmpl: "{b}", extra: map[string]any{"b": int64(math.MinInt64)}, want: "-9223372036854775808"},
		{name: "float", tmpl: "{float}", data: h, want: "1.5"},
		{name: "big float", tmpl: "{f}", extra: map[string]any{"f": 1e21}, want: "1e+21"},
		{name: "bool", tmpl: "{bool}", data: h, want: "true"},
		{name: "pointer to int", tmpl: "{p}", extra: map[string]any{"p": func() *int { v := 7; return &v }()}, want: "7"},
		{name: "slice printed", tmpl: "{s}", extra: map[string]any{"s": []int{1, 2}}, want: "[1 2]"},
		{name: "struct printed", tmpl: "{s}", extra: map[string]any{"s": struct{ A, B int }{1, 2}}, want: "{1 2}"},
		{name: "nil at end", tmpl: "{v.parent}", data: map[string]any{"v": &Volume{}}, err: "v.parent is a nil *tmpl.Volume"},
		{name: "nil extra value", tmpl: "{x}", extra: map[string]any{"x": nil}, err: "is nil"},
		{name: "nil interface field at end", tmpl: "{any}", data: &Volume{}, err: "is a nil interface"},
	})
}

func TestFormatErrors(t *testing.T) {
	vol := testVolume()
	h := testHolder()
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	cyclicSlice := []any{nil}
	cyclicSlice[0] = cyclicSlice
	var selfPtr any
	selfPtr = &selfPtr
	runFormatCases(t, []formatCase{
		{name: "unknown name map", tmpl: "{nope}", data: map[string]any{"vol": vol}, err: `has no key "nope"`},
		{name: "unknown name struct", tmpl: "{nope}", data: vol, err: `has no field or method "nope"`},
		{name: "unknown name no data", tmpl: "x-{nope}", err: `unknown name "nope"`},
		{name: "unknown attr", tmpl: "{v.idd}", data: map[string]any{"v": vol}, err: `field "{v.idd}"`},
		{name: "nil pointer on path", tmpl: "{v.parent.id}", data: map[string]any{"v": vol}, err: "v.parent is a nil *tmpl.Volume"},
		{name: "nil top-level pointer", tmpl: "{v.id}", data: map[string]any{"v": (*Volume)(nil)}, err: "v is a nil *tmpl.Volume"},
		{name: "nil data pointer", tmpl: "{id}", data: (*Volume)(nil), err: "data is a nil"},
		{name: "nil pointer in slice", tmpl: "{volptrs[0].id}", data: h, err: "volptrs[0] is a nil"},
		{name: "nil embedded pointer", tmpl: "{n.deep}", data: map[string]any{"n": NilEmbed{}}, err: "nil pointer"},
		{name: "nil map", tmpl: "{nilmap[x]}", data: h, err: "nil map"},
		{name: "nil map attr", tmpl: "{nilmap.x}", data: h, err: "nil map"},
		{name: "out of range", tmpl: "{items[5]}", data: map[string]any{"items": []string{"x"}}, err: "out of range"},
		{name: "array out of range", tmpl: "{arr[2]}", data: h, err: "out of range"},
		{name: "huge index", tmpl: "{arr[99999999999999999999999]}", data: h, err: "out of range"},
		{name: "non-numeric index", tmpl: "{arr[x]}", data: h, err: "not a number"},
		{name: "uint8 key out of range", tmpl: "{byu8[300]}", data: h, err: "out of range"},
		{name: "int map non-digit key", tmpl: "{byint[x]}", data: h, err: "not a number"},
		{name: "int map missing", tmpl: "{byint[3]}", data: h, err: `has no key "3"`},
		{name: "float map", tmpl: "{byfloat[1]}", data: h, err: "only maps with string or integer keys"},
		{name: "missing map key", tmpl: "{m[nope]}", data: map[string]any{"m": map[string]int{}}, err: `has no key "nope"`},
		{name: "index struct", tmpl: "{v[0]}", data: map[string]any{"v": vol}, err: "cannot be indexed"},
		{name: "index int", tmpl: "{size[0]}", data: vol, err: "cannot be indexed"},
		{name: "attr on int", tmpl: "{size.x}", data: vol, err: `has no field or method "x"`},
		{name: "attr on string", tmpl: "{id.x}", data: vol, err: `has no field or method "x"`},
		{name: "cyclic map printed", tmpl: "{m}", extra: map[string]any{"m": cyclic}, err: "cyclic"},
		{name: "cyclic slice printed", tmpl: "{s}", extra: map[string]any{"s": cyclicSlice}, err: "cyclic"},
		{name: "cyclic map walked", tmpl: "{m.self.self.self.nope}", extra: map[string]any{"m": cyclic}, err: `no key "nope"`},
		{name: "self pointer printed", tmpl: "{p}", extra: map[string]any{"p": selfPtr}, err: "levels of pointers"},
		{name: "self pointer walked", tmpl: "{p.x}", extra: map[string]any{"p": selfPtr}, err: "levels of pointers"},
		{name: "too large", tmpl: "{s}", extra: map[string]any{"s": make([]any, maxPrintNodes+1)}, err: "too large"},
	})
}

func TestFormatMethodErrorWrapped(t *testing.T) {
	tp, err := Parse("{v.broken}")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tp.Format(nil, map[string]any{"v": Volume{}})
	if !errors.Is(err, ErrTemplate) || !errors.Is(err, errBroken) {
		t.Fatalf("error %v should wrap both ErrTemplate and the method's error", err)
	}
}

func TestFormatConcurrent(t *testing.T) {
	tp, err := Parse("{f_name}-{volume.id}-{volume.label}")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for i := range 8 {
		go func() {
			var err error
			for j := range 200 {
				// Alternate types so the per-step caches keep changing.
				var data any = map[string]any{"volume": &Volume{ID: strconv.Itoa(j), Name: "n"}}
				want := "f-" + strconv.Itoa(j) + "-vol-n"
				if (i+j)%2 == 0 {
					data = map[string]any{"volume": map[string]any{"id": strconv.Itoa(j), "label": "vol-n"}}
				}
				got, ferr := tp.Format(map[string]any{"f_name": "f"}, data)
				if ferr != nil || got != want {
					err = errors.Join(err, ferr, errors.New("got "+got+" want "+want))
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestFormatAllocs(t *testing.T) {
	tp, err := Parse("volume-{volume.id}-{f_name}")
	if err != nil {
		t.Fatal(err)
	}
	extra := map[string]any{"f_name": "delete_volume"}
	data := map[string]any{"volume": &Volume{ID: "0f6c1f0e"}}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := tp.Format(extra, data); err != nil {
			t.Fatal(err)
		}
	})
	// The builder's buffer is the only allocation expected.
	if allocs > 1 {
		t.Errorf("Format allocates %v times per call, want at most 1", allocs)
	}
}

func BenchmarkFormat(b *testing.B) {
	tp, err := Parse("volume-{volume.id}-{f_name}")
	if err != nil {
		b.Fatal(err)
	}
	extra := map[string]any{"f_name": "delete_volume"}
	data := map[string]any{"volume": &Volume{ID: "0f6c1f0e"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tp.Format(extra, data); err != nil {
			b.Fatal(err)
		}
	}
}

// A name must come out the same in every process that formats it from the
// same values: fmt prints a pointer below the top, a channel or a function
// as its memory address, so a value holding one would give each process
// (each call, even) a lock of its own, and nothing would exclude anything.
// Such a value is refused; one fmt prints with its own method is not.
func TestFormatRefusesAddresses(t *testing.T) {
	n := 7
	ch := make(chan int)
	type withPtr struct {
		ID  string
		Ref *int
	}
	type withNilPtr struct {
		ID  string
		Ref *int
	}
	type hidden struct {
		ID  string
		ref *int
	}
	runFormatCases(t, []formatCase{
		{name: "pointer in struct", tmpl: "{v}", extra: map[string]any{"v": withPtr{"a", &n}}, err: "memory address"},
		{name: "pointer in struct behind pointer", tmpl: "{v}", extra: map[string]any{"v": &withPtr{"a", &n}}, err: "memory address"},
		{name: "unexported pointer field", tmpl: "{v}", extra: map[string]any{"v": hidden{"a", &n}}, err: "memory address"},
		{name: "pointer in slice", tmpl: "{v}", extra: map[string]any{"v": []*int{&n}}, err: "memory address"},
		{name: "pointer in array of any", tmpl: "{v}", extra: map[string]any{"v": [1]any{&n}}, err: "memory address"},
		{name: "pointer in map", tmpl: "{v}", extra: map[string]any{"v": map[string]*int{"a": &n}}, err: "memory address"},
		{name: "channel", tmpl: "{v}", extra: map[string]any{"v": ch}, err: "memory address"},
		{name: "channel in slice", tmpl: "{v}", extra: map[string]any{"v": []chan int{ch}}, err: "memory address"},
		{name: "function", tmpl: "{v}", extra: map[string]any{"v": func() {}}, err: "memory address"},
		{name: "struct holding volumes", tmpl: "{snaps[0]}", data: testVolume(), err: "memory address"},
		// Printed the same everywhere: kept.
		{name: "nil pointer in struct", tmpl: "{v}", extra: map[string]any{"v": withNilPtr{"a", nil}}, want: "{a <nil>}"},
		{name: "stringer pointer in slice", tmpl: "{v}", extra: map[string]any{"v": []*ptrStringer{{N: 5}}}, want: "[ps5]"},
		{name: "stringer in struct", tmpl: "{v}", extra: map[string]any{"v": struct{ C Color }{1}}, want: "{green}"},
		{name: "error in slice", tmpl: "{v}", extra: map[string]any{"v": []error{errBroken}}, want: "[volume is broken]"},
	})
}
