package tmpl

import (
	"fmt"
	"reflect"
	"slices"
)

// Check verifies statically, against the Go type of the data (not a value),
// that every field path can resolve: top-level names are either in
// extraNames or resolve on typ. Where the type cannot tell (a map's keys, an
// interface value, `any`), the path is accepted from there on. Unknown
// struct fields / methods, indexing a struct, `.attr` on an int, etc. are
// errors wrapping ErrTemplate naming the template and the field. typ may be
// nil (meaning no data): then only extraNames are valid top-level names.
//
// Check follows the same lookup as Format, including which values are
// addressable (and so have their pointer's methods), so a path that Format
// can resolve for some value of typ is never rejected. A map key is assumed
// present; the rest of the path is checked against the map's element type.
func (t *Template) Check(extraNames []string, typ reflect.Type) error {
	for _, f := range t.fields {
		top := f.steps[0]
		if slices.Contains(extraNames, top.key) {
			continue // extra values are untyped
		}
		if typ == nil {
			return t.fieldErr(f, fmt.Errorf("unknown name %q: it is not an extra name and there is no data", top.key))
		}
		if err := checkPath(f, 0, typ, false); err != nil {
			return t.fieldErr(f, err)
		}
	}
	return nil
}

// checkPath checks f.steps[i:] against typ; addr tells whether values of typ
// are addressable at that point (as in Format: reached through a pointer, a
// slice, or a field of an addressable struct).
func checkPath(f *field, i int, typ reflect.Type, addr bool) error {
	for ; i < len(f.steps); i++ {
		s, at := f.steps[i], f.at(i)
		// Follow pointers; an interface hides the dynamic type, so accept.
		for n := 0; typ.Kind() == reflect.Pointer; n++ {
			if n == maxDeref {
				return fmt.Errorf("%s: more than %d levels of pointers", at, maxDeref)
			}
			typ, addr = typ.Elem(), true
		}
		if typ.Kind() == reflect.Interface {
			return nil
		}
		if s.index {
			var err error
			if typ, addr, err = checkIndex(typ, addr, s, at); err != nil {
				return err
			}
			continue
		}
		m, ok, err := lookupMember(typ, addr, s.key)
		if typ.Kind() == reflect.Map && typ.Key().Kind() == reflect.String {
			// Format tries the key first and the method only when the key is
			// missing, so the rest of the path may go either way.
			errElem := checkPath(f, i+1, typ.Elem(), false)
			if errElem == nil || !ok || err != nil {
				return errElem
			}
			if checkPath(f, i+1, m.typ, false) == nil {
				return nil
			}
			return errElem
		}
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		if !ok {
			return fmt.Errorf("%s (%s) has no field or method %q", at, typ, s.key)
		}
		typ, addr = m.typ, m.field && addr
	}
	return nil
}

// checkIndex checks a "[key]" step on typ, which is neither a pointer nor an
// interface, and returns the element type and its addressability.
func checkIndex(typ reflect.Type, addr bool, s *step, at string) (reflect.Type, bool, error) {
	switch typ.Kind() {
	case reflect.Slice, reflect.Array:
		if !s.digits {
			return nil, false, fmt.Errorf("%s is a %s: index %q is not a number", at, typ, s.key)
		}
		if typ.Kind() == reflect.Array && (s.n < 0 || s.n >= typ.Len()) {
			return nil, false, fmt.Errorf("index %s out of range: %s has length %d", s.key, at, typ.Len())
		}
		// Slice elements are always addressable; array elements only when
		// the array is.
		return typ.Elem(), addr || typ.Kind() == reflect.Slice, nil
	case reflect.Map:
		if err := checkMapKey(typ, s, at); err != nil {
			return nil, false, err
		}
		return typ.Elem(), false, nil
	default:
		return nil, false, fmt.Errorf("%s is a %s, which cannot be indexed", at, typ)
	}
}
