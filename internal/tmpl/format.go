package tmpl

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

const (
	// maxDeref bounds how many pointers and interfaces are followed in a
	// row, so that self-referencing values (var a any; a = &a) end.
	maxDeref = 64
	// maxPrintDepth and maxPrintNodes bound the composite values handed to
	// fmt.Sprint: fmt recurses into maps and slices without cycle detection
	// and would overflow the stack (a fatal error, not a panic) on a map
	// that contains itself. No sensible lock name comes near these limits.
	maxPrintDepth = 32
	maxPrintNodes = 4096
	// estFieldBytes guesses a formatted field's length, to size the buffer.
	estFieldBytes = 16
)

var (
	stringerType = reflect.TypeFor[fmt.Stringer]()
	stringType   = reflect.TypeFor[string]()
	mapStringAny = reflect.TypeFor[map[string]any]()
)

// Format formats with data. Top-level names resolve on data by the same
// rules as .attr (map key, struct field, method). extra is consulted first
// for top-level names (used for f_name); extra may be nil. data may be nil
// when every top-level name is in extra or there are no fields.
func (t *Template) Format(extra map[string]any, data any) (string, error) {
	if len(t.fields) == 0 {
		return t.lit, nil
	}
	var b strings.Builder
	b.Grow(t.litLen + estFieldBytes*len(t.fields))
	dv := reflect.ValueOf(data) // invalid when data is nil
	for i := range t.segs {
		sg := &t.segs[i]
		if sg.f == nil {
			b.WriteString(sg.lit)
			continue
		}
		if err := writeField(&b, sg.f, extra, dv); err != nil {
			return "", t.fieldErr(sg.f, err)
		}
	}
	return b.String(), nil
}

// fieldErr wraps problem, which describes what is wrong with field f, so
// that it names the template and the field and wraps ErrTemplate (and
// whatever problem wraps, such as a method's own error).
func (t *Template) fieldErr(f *field, problem error) error {
	return fmt.Errorf("%w: template %q: field %q: %w", ErrTemplate, t.src, "{"+f.text+"}", problem)
}

func writeField(b *strings.Builder, f *field, extra map[string]any, dv reflect.Value) error {
	top := f.steps[0]
	var v reflect.Value
	if x, ok := extra[top.key]; ok {
		if s, ok := x.(string); ok && len(f.steps) == 1 {
			b.WriteString(s) // the usual {f_name}: skip reflection
			return nil
		}
		v = reflect.ValueOf(x)
	} else {
		if !dv.IsValid() {
			return fmt.Errorf("unknown name %q: it is not an extra name and there is no data", top.key)
		}
		var err error
		if v, err = resolveAttr(dv, top, "data"); err != nil {
			return err
		}
	}
	for i := 1; i < len(f.steps); i++ {
		s, at := f.steps[i], f.at(i)
		var err error
		if s.index {
			v, err = resolveIndex(v, s, at)
		} else {
			v, err = resolveAttr(v, s, at)
		}
		if err != nil {
			return err
		}
	}
	return writeValue(b, v, f.text)
}

// deref follows pointers and interfaces; at names the value for messages.
func deref(v reflect.Value, at string) (reflect.Value, error) {
	for n := 0; ; n++ {
		if !v.IsValid() {
			return v, fmt.Errorf("%s is nil", at)
		}
		if k := v.Kind(); k != reflect.Pointer && k != reflect.Interface {
			return v, nil
		}
		if v.IsNil() {
			return v, fmt.Errorf("%s is a nil %s", at, v.Type())
		}
		if n == maxDeref {
			return v, fmt.Errorf("%s: more than %d levels of pointers", at, maxDeref)
		}
		v = v.Elem()
	}
}

// resolveAttr applies a name or ".attr" step to v.
func resolveAttr(v reflect.Value, s *step, at string) (reflect.Value, error) {
	v, err := deref(v, at)
	if err != nil {
		return v, err
	}
	isMap := v.Kind() == reflect.Map
	if isMap {
		if v.IsNil() {
			return v, fmt.Errorf("%s is a nil %s", at, v.Type())
		}
		if v.Type().Key().Kind() == reflect.String {
			if r, ok := mapIndexString(v, s); ok {
				return r, nil
			}
		}
	}
	// Maps fall through to methods so that a named map type's methods work.
	m, ok, err := s.cachedLookup(v.Type(), v.CanAddr())
	if err != nil {
		return reflect.Value{}, fmt.Errorf("%s: %w", at, err)
	}
	if !ok {
		if isMap {
			return reflect.Value{}, fmt.Errorf("%s (%s) has no key %q", at, v.Type(), s.key)
		}
		return reflect.Value{}, fmt.Errorf("%s (%s) has no field or method %q", at, v.Type(), s.key)
	}
	if m.field {
		fv, err := v.FieldByIndexErr(m.index)
		if err != nil { // a nil embedded struct pointer on the way
			return reflect.Value{}, fmt.Errorf("%s.%s: %w", at, m.name, err)
		}
		if !fv.CanInterface() {
			return reflect.Value{}, fmt.Errorf("%s.%s is not exported", at, m.name)
		}
		return fv, nil
	}
	recv := v
	if m.ptr {
		recv = v.Addr() // m.ptr only when looked up with v.CanAddr()
	}
	if !recv.CanInterface() {
		return reflect.Value{}, fmt.Errorf("%s.%s: cannot call a method on an unexported value", at, m.name)
	}
	return callMethod(recv.Method(m.method), &m, at)
}

// callMethod calls a method found by lookupMember. A panic in the method is
// returned as an error: the caller asked for a lock name, not a crash.
func callMethod(mv reflect.Value, m *member, at string) (r reflect.Value, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = reflect.Value{}, fmt.Errorf("%s.%s() panicked: %v", at, m.name, p)
		}
	}()
	out := mv.Call(nil)
	if m.retErr {
		if e, _ := out[1].Interface().(error); e != nil {
			return reflect.Value{}, fmt.Errorf("%s.%s() failed: %w", at, m.name, e)
		}
	}
	return out[0], nil
}

// mapIndexString looks s.key up in v, a non-nil map whose key kind is
// string.
func mapIndexString(v reflect.Value, s *step) (reflect.Value, bool) {
	if v.Type() == mapStringAny { // the common case, without reflection's copies
		x, ok := v.Interface().(map[string]any)[s.key]
		return reflect.ValueOf(x), ok
	}
	key := s.keyVal
	if kt := v.Type().Key(); kt != stringType {
		key = key.Convert(kt)
	}
	r := v.MapIndex(key)
	return r, r.IsValid()
}

// resolveIndex applies a "[key]" step to v.
func resolveIndex(v reflect.Value, s *step, at string) (reflect.Value, error) {
	v, err := deref(v, at)
	if err != nil {
		return v, err
	}
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		if !s.digits {
			return reflect.Value{}, fmt.Errorf("%s is a %s: index %q is not a number", at, v.Type(), s.key)
		}
		if s.n < 0 || s.n >= v.Len() {
			return reflect.Value{}, fmt.Errorf("index %s out of range: %s has length %d", s.key, at, v.Len())
		}
		return v.Index(s.n), nil
	case reflect.Map:
		if v.IsNil() {
			return v, fmt.Errorf("%s is a nil %s", at, v.Type())
		}
		if err := checkMapKey(v.Type(), s, at); err != nil {
			return reflect.Value{}, err
		}
		var r reflect.Value
		if kt := v.Type().Key(); isIntKind(kt.Kind()) {
			key, _ := intKey(s.key, kt) // checkMapKey made sure it fits
			r = v.MapIndex(key)
		} else {
			r, _ = mapIndexString(v, s)
		}
		if !r.IsValid() {
			return reflect.Value{}, fmt.Errorf("%s (%s) has no key %q", at, v.Type(), s.key)
		}
		return r, nil
	default:
		return reflect.Value{}, fmt.Errorf("%s is a %s, which cannot be indexed", at, v.Type())
	}
}

func isIntKind(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Uintptr
}

// checkMapKey reports whether "[key]" can be looked up in maps of type mt:
// as an integer in maps with integer keys, else as a string in maps with
// string keys. Check and Format share it.
func checkMapKey(mt reflect.Type, s *step, at string) error {
	kt := mt.Key()
	switch {
	case isIntKind(kt.Kind()):
		if !s.digits {
			return fmt.Errorf("%s is a %s: key %q is not a number", at, mt, s.key)
		}
		if _, ok := intKey(s.key, kt); !ok {
			return fmt.Errorf("key %s out of range for %s", s.key, kt)
		}
	case kt.Kind() != reflect.String:
		return fmt.Errorf("%s is a %s: only maps with string or integer keys can be indexed", at, mt)
	}
	return nil
}

// intKey converts the digits key to kt, an integer type, if it fits.
func intKey(key string, kt reflect.Type) (reflect.Value, bool) {
	if kt.Kind() <= reflect.Int64 {
		n, err := strconv.ParseInt(key, 10, kt.Bits())
		if err != nil {
			return reflect.Value{}, false
		}
		return reflect.ValueOf(n).Convert(kt), true
	}
	n, err := strconv.ParseUint(key, 10, kt.Bits())
	if err != nil {
		return reflect.Value{}, false
	}
	return reflect.ValueOf(n).Convert(kt), true
}

// writeValue prints the value at the end of the path named at.
func writeValue(b *strings.Builder, v reflect.Value, at string) error {
	for n := 0; ; n++ {
		if !v.IsValid() {
			return fmt.Errorf("%s is nil", at)
		}
		k := v.Kind()
		if (k == reflect.Pointer || k == reflect.Interface) && v.IsNil() {
			return fmt.Errorf("%s is a nil %s", at, v.Type())
		}
		// Stringer comes before the kind, so a *Volume with a String method
		// prints with it rather than as the struct behind the pointer.
		if k != reflect.Interface {
			if s, ok, err := stringOf(v, at); err != nil {
				return err
			} else if ok {
				b.WriteString(s)
				return nil
			}
		}
		if k != reflect.Pointer && k != reflect.Interface {
			break
		}
		if n == maxDeref {
			return fmt.Errorf("%s: more than %d levels of pointers", at, maxDeref)
		}
		v = v.Elem()
	}
	var buf [24]byte
	switch v.Kind() {
	case reflect.String:
		b.WriteString(v.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.Write(strconv.AppendInt(buf[:0], v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.Write(strconv.AppendUint(buf[:0], v.Uint(), 10))
	default:
		if !v.CanInterface() {
			return fmt.Errorf("%s is not exported", at)
		}
		budget := maxPrintNodes
		if !printable(v, 0, &budget) {
			return fmt.Errorf("%s (%s) cannot make a lock name: it is too large, too deep or cyclic to print, "+
				"or it holds a pointer, channel or function, which prints as a memory address "+
				"(name a field, or give the type a String method)", at, v.Type())
		}
		b.WriteString(fmt.Sprint(v.Interface()))
	}
	return nil
}

// stringOf calls String on v, or on its address when v is addressable,
// if either is a fmt.Stringer. A panic in String is returned as an error.
func stringOf(v reflect.Value, at string) (s string, ok bool, err error) {
	if !v.CanInterface() {
		return "", false, nil
	}
	var sv fmt.Stringer
	switch {
	case v.Type().Implements(stringerType):
		sv = v.Interface().(fmt.Stringer)
	case v.CanAddr() && reflect.PointerTo(v.Type()).Implements(stringerType):
		sv = v.Addr().Interface().(fmt.Stringer)
	default:
		return "", false, nil
	}
	defer func() {
		if p := recover(); p != nil {
			s, ok, err = "", false, fmt.Errorf("%s.String() panicked: %v", at, p)
		}
	}()
	return sv.String(), true, nil
}

// printable reports whether fmt.Sprint prints v in bounded time and stack,
// and the same way in every process: a lock name must not depend on where
// a value sits in memory, or two processes (two calls, even) locking one
// object would take two different locks. It follows fmt's own walk: into
// maps, slices, arrays, structs and interfaces, through a pointer only at
// the top; a value fmt prints with its own method (Formatter, error,
// Stringer: at the top, or met on the way when exported) is the method's
// business and is not walked. A non-nil pointer met below the top, a
// channel, a function or an unsafe.Pointer would print as an address:
// refused.
func printable(v reflect.Value, depth int, budget *int) bool {
	*budget--
	if *budget < 0 || depth > maxPrintDepth {
		return false
	}
	if printsByMethod(v) {
		return true
	}
	switch v.Kind() {
	case reflect.Interface:
		return v.IsNil() || printable(v.Elem(), depth+1, budget)
	case reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return v.IsNil() // "<nil>"; anything else is an address
	case reflect.Pointer:
		if v.IsNil() {
			return true
		}
		if depth > 0 {
			return false // fmt prints a pointer below the top as its address
		}
		switch v.Elem().Kind() {
		case reflect.Array, reflect.Slice, reflect.Struct, reflect.Map:
			return printable(v.Elem(), depth+1, budget)
		}
		return false // fmt prints &x only for these; any other as its address
	case reflect.Struct:
		for i := range v.NumField() {
			if !printable(v.Field(i), depth+1, budget) {
				return false
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if !printable(it.Key(), depth+1, budget) || !printable(it.Value(), depth+1, budget) {
				return false
			}
		}
	case reflect.Slice, reflect.Array:
		switch v.Type().Elem().Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Struct, reflect.Map, reflect.Slice, reflect.Array,
			reflect.Chan, reflect.Func, reflect.UnsafePointer:
		default:
			return true // scalars: no recursion, however many
		}
		for i := range v.Len() {
			if !printable(v.Index(i), depth+1, budget) {
				return false
			}
		}
	}
	return true
}

// printsByMethod reports whether fmt.Sprint prints v with a method of its
// own rather than by its kind: fmt looks for these (Formatter, then error,
// then Stringer) on every value it can turn into an interface.
func printsByMethod(v reflect.Value) bool {
	if !v.IsValid() || !v.CanInterface() || v.Kind() == reflect.Interface {
		return false
	}
	switch v.Interface().(type) {
	case fmt.Formatter, error, fmt.Stringer:
		return true
	}
	return false
}
