package tmpl

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// member is what a name or ".attr" resolved to on a type: a struct field or
// a method. Format and Check share lookupMember so that a template Check
// accepts is resolved the same way by Format.
type member struct {
	field  bool
	name   string // the Go name, for messages
	index  []int  // field index path (field)
	method int    // index in the method set of the type, or of its pointer when ptr
	ptr    bool   // method is called on the value's address
	retErr bool   // method returns (value, error)
	typ    reflect.Type
}

var errorType = reflect.TypeFor[error]()

// lookupMember finds name on values of type t, which must not be a pointer
// or interface type. addr tells whether such values are addressable where
// they are met, which adds the pointer's methods. found is false when
// nothing matches; err reports a match that cannot be used (unexported
// field, ambiguous name, method with the wrong signature).
func lookupMember(t reflect.Type, addr bool, name string) (m member, found bool, err error) {
	// An unexported field of exactly this name is only reported when
	// nothing else matches: {v.id} on a struct with a field id and a
	// method ID means the method, which is the type's public accessor.
	var unexported error
	if t.Kind() == reflect.Struct {
		if f, ok := t.FieldByName(name); ok {
			if f.IsExported() {
				return fieldMember(f), true, nil
			}
			unexported = fmt.Errorf("field %s of %s is unexported", f.Name, t)
		}
	}
	// When the value is addressable the pointer's method set, which includes
	// the value's, is the one to search; indexes then refer to it.
	mt := t
	if addr {
		mt = reflect.PointerTo(t)
	}
	if meth, ok := mt.MethodByName(name); ok {
		return methodMember(t, meth, addr)
	}

	// No exact match: accept the one member whose name matches ignoring
	// case, because Cinder templates spell Python attributes in lower case.
	var names []string
	var field *reflect.StructField
	var meth *reflect.Method
	if t.Kind() == reflect.Struct {
		for _, f := range reflect.VisibleFields(t) {
			if !f.IsExported() || !strings.EqualFold(f.Name, name) || slices.Contains(names, f.Name) {
				continue
			}
			// VisibleFields lists shadowed and ambiguous promoted fields
			// too; keep only the field that the name really selects.
			if g, ok := t.FieldByName(f.Name); ok && slices.Equal(g.Index, f.Index) {
				names = append(names, f.Name)
				field = &g
			}
		}
	}
	for i := range mt.NumMethod() {
		mm := mt.Method(i)
		if strings.EqualFold(mm.Name, name) && !slices.Contains(names, mm.Name) {
			names = append(names, mm.Name)
			meth = &mm
		}
	}
	switch {
	case len(names) > 1:
		return member{}, false, fmt.Errorf("%q is ambiguous on %s: it matches %s (spell it exactly)",
			name, t, strings.Join(names, ", "))
	case field != nil:
		return fieldMember(*field), true, nil
	case meth != nil:
		return methodMember(t, *meth, addr)
	}
	if !addr {
		// Say why a pointer method is not used rather than just "not found".
		pt := reflect.PointerTo(t)
		for i := range pt.NumMethod() {
			if mm := pt.Method(i); strings.EqualFold(mm.Name, name) {
				return member{}, false, fmt.Errorf("method %s of %s has a pointer receiver, but the value is not addressable (pass a pointer)", mm.Name, t)
			}
		}
	}
	if unexported != nil {
		return member{}, false, unexported
	}
	return member{}, false, nil
}

func fieldMember(f reflect.StructField) member {
	return member{field: true, name: f.Name, index: f.Index, typ: f.Type}
}

// methodMember checks that meth (from the method set of t, or of *t when
// ptr) can be called with no arguments for a single value.
func methodMember(t reflect.Type, meth reflect.Method, ptr bool) (member, bool, error) {
	mt := meth.Type // the receiver is the first parameter
	ok := mt.NumIn() == 1 && (mt.NumOut() == 1 || mt.NumOut() == 2 && mt.Out(1) == errorType)
	if !ok {
		return member{}, false, fmt.Errorf("method %s of %s must take no arguments and return one value, or a value and an error", meth.Name, t)
	}
	return member{name: meth.Name, method: meth.Index, ptr: ptr, retErr: mt.NumOut() == 2, typ: mt.Out(0)}, true, nil
}

// cachedLookup is lookupMember with the step's one-entry cache in front.
func (s *step) cachedLookup(t reflect.Type, addr bool) (member, bool, error) {
	if c := s.cache.Load(); c != nil && c.typ == t && c.addr == addr {
		return c.m, true, nil
	}
	m, ok, err := lookupMember(t, addr, s.key)
	if ok && err == nil {
		s.cache.Store(&memberCache{typ: t, addr: addr, m: m})
	}
	return m, ok, err
}
