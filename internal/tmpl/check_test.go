package tmpl

import (
	"reflect"
	"testing"
)

func TestCheck(t *testing.T) {
	volT := reflect.TypeFor[Volume]()
	volPtrT := reflect.TypeFor[*Volume]()
	holderPtrT := reflect.TypeFor[*Holder]()
	holderT := reflect.TypeFor[Holder]()
	anyT := reflect.TypeFor[any]()
	mapAnyT := reflect.TypeFor[map[string]any]()
	mapVolT := reflect.TypeFor[map[string]*Volume]()
	cases := []struct {
		name  string
		tmpl  string
		extra []string
		typ   reflect.Type
		err   string // substring of the error; "" for no error
	}{
		{name: "no fields nil type", tmpl: "plain{{}}", typ: nil},
		{name: "extra only nil type", tmpl: "{f_name}", extra: []string{"f_name"}},
		{name: "extra path untyped", tmpl: "{f_name.x[0].y}", extra: []string{"f_name"}},
		{name: "nil type unknown name", tmpl: "{vol.id}", extra: []string{"f_name"}, err: `unknown name "vol"`},
		{name: "struct field", tmpl: "{id}-{name}-{size}", typ: volT},
		{name: "struct field case-insensitive", tmpl: "{ID}-{id}", typ: volPtrT},
		{name: "pointer to struct", tmpl: "{parent.parent.id}", typ: volPtrT},
		{name: "unknown struct field", tmpl: "{idd}", typ: volT, err: `has no field or method "idd"`},
		{name: "unknown nested field", tmpl: "{parent.idd}", typ: volPtrT, err: `parent (tmpl.Volume) has no field or method "idd"`},
		{name: "unexported field", tmpl: "{secret}", typ: volT, err: "unexported"},
		{name: "unexported field shadowed by accessor", tmpl: "{id}-{ID}", typ: reflect.TypeFor[Opaque]()},
		{name: "unexported field, pointer accessor", tmpl: "{name}", typ: reflect.TypeFor[*Opaque]()},
		{name: "unexported field, pointer accessor on value", tmpl: "{name}", typ: reflect.TypeFor[Opaque](), err: "pointer receiver"},
		{name: "ambiguous", tmpl: "{a.id}", typ: reflect.TypeFor[struct{ A Ambig }](), err: "ambiguous"},
		{name: "value method", tmpl: "{label}", typ: volT},
		{name: "pointer method via pointer", tmpl: "{ptrlabel}", typ: volPtrT},
		{name: "pointer method not addressable", tmpl: "{ptrlabel}", typ: volT, err: "pointer receiver"},
		{name: "pointer method on field of addressable", tmpl: "{vols[0].ptrlabel}-{arr[0]}", typ: holderPtrT},
		{name: "pointer method on slice element", tmpl: "{vols[0].ptrlabel}", typ: holderT},
		{name: "pointer method on method result", tmpl: "{child.ptrlabel}", typ: volPtrT, err: "pointer receiver"},
		{name: "method result chain", tmpl: "{childptr.ptrlabel}-{child.id}", typ: volT},
		{name: "method with error", tmpl: "{checked}", typ: volT},
		{name: "method bad signature", tmpl: "{takes}", typ: volT, err: "no arguments"},
		{name: "attr on int", tmpl: "{size.x}", typ: volT, err: `has no field or method "x"`},
		{name: "index struct", tmpl: "{parent[0]}", typ: volT, err: "cannot be indexed"},
		{name: "index int", tmpl: "{size[0]}", typ: volT, err: "cannot be indexed"},
		{name: "slice non-digit", tmpl: "{snaps[x]}", typ: volT, err: "not a number"},
		{name: "slice then field", tmpl: "{snaps[3].volume.id}", typ: volT},
		{name: "slice then unknown field", tmpl: "{snaps[3].volume.idd}", typ: volT, err: `"idd"`},
		{name: "array in range", tmpl: "{arr[1]}", typ: holderT},
		{name: "array out of range", tmpl: "{arr[2]}", typ: holderT, err: "out of range"},
		{name: "int map", tmpl: "{byint[3]}", typ: holderT},
		{name: "int map non-digit", tmpl: "{byint[x]}", typ: holderT, err: "not a number"},
		{name: "uint8 map out of range", tmpl: "{byu8[256]}", typ: holderT, err: "out of range"},
		{name: "float map", tmpl: "{byfloat[1]}", typ: holderT, err: "only maps with string or integer keys"},
		{name: "string map keys accepted", tmpl: "{tags.anything}-{tags[x]}", typ: volT},
		{name: "map elem checked", tmpl: "{tags.anything.x}", typ: volT, err: `has no field or method "x"`},
		{name: "map of structs", tmpl: "{v.id}-{w.parent.name}", typ: mapVolT},
		{name: "map of structs unknown", tmpl: "{v.idd}", typ: mapVolT, err: `v (tmpl.Volume) has no field or method "idd"`},
		{name: "map any", tmpl: "{a.b[c].d.e}", typ: mapAnyT},
		{name: "any", tmpl: "{a.b[c].d}", typ: anyT},
		{name: "interface field", tmpl: "{any.k.l[0]}", typ: volT},
		{name: "named map method", tmpl: "{named.count}-{named.key}", typ: holderT},
		{name: "named map method path", tmpl: "{named.count.x}", typ: holderT, err: `has no field or method "x"`},
		{name: "embedded", tmpl: "{o.deep}-{o.inner.deep}-{o.x}", typ: reflect.TypeFor[struct{ O Outer }]()},
		{name: "first error wins", tmpl: "{id}-{bad}-{worse}", typ: volT, err: `field "{bad}"`},
		{name: "extra beats type", tmpl: "{f_name}-{id}", extra: []string{"f_name"}, typ: volT},
		{name: "int top-level type", tmpl: "{x}", typ: reflect.TypeFor[int](), err: `has no field or method "x"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := Parse(tc.tmpl)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.tmpl, err)
			}
			err = tp.Check(tc.extra, tc.typ)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Check(%q, %v): %v", tc.tmpl, tc.typ, err)
				}
				return
			}
			assertTemplateErr(t, err, tc.tmpl, tc.err)
		})
	}
}

// TestCheckSelfPointerType makes sure a pointer type that points to itself
// ends with an error rather than a hang.
func TestCheckSelfPointerType(t *testing.T) {
	type P *P
	tp, err := Parse("{x}")
	if err != nil {
		t.Fatal(err)
	}
	assertTemplateErr(t, tp.Check(nil, reflect.TypeFor[P]()), "{x}", "levels of pointers")
}
