// Package tmpl parses and formats lock-name templates.
//
// The syntax is the subset of Python's str.format that OpenStack Cinder uses
// for its coordination lock names, so that a name written for Cinder, such as
// "{volume.id}-{f_name}", formats to the same lock name here:
//
//	foo-{volume.id}
//	{f_name}-{vol.id}-{snap[name]}
//	{items[0]}  {a.b[c].d}  {{literal braces}}
//
// # Syntax
//
// Text outside braces is copied as it is; "{{" and "}}" stand for a literal
// "{" and "}". A replacement field is "{" field "}", where field is a name
// followed by any chain of ".attr" and "[key]":
//
//   - A name or attr is any text up to the next ".", "[", "]", "!", ":", "{"
//     or "}"; it must not be empty.
//   - A key is taken literally up to the next "]" (no quotes, as in Python:
//     "{snap[name]}" means the key "name"); it must not be empty. Only ".",
//     "[" or the closing "}" may follow the "]".
//
// Lock names must be reproducible from the call they protect, so everything
// that would make a name depend on anything but named values is rejected
// when parsing: positional fields ("{0}", "{}", "{.a}"), conversions ("!r",
// "!s"), format specs (":>10"), unbalanced braces and invalid UTF-8.
//
// # Resolution
//
// A name or ".attr" resolves, in this order, to a map key (a map whose key
// kind is string), a struct field (the exact name first, then the only field
// whose name matches ignoring case, so "{volume.id}" finds Volume.ID), or an
// exported method that takes no arguments and returns one value or a value
// and an error. Methods are looked up on the value, and also on its pointer
// when the value is addressable (reached through a pointer, a struct field of
// such a value, or a slice element). Pointers and interfaces are followed
// along the path; a nil one is an error, as is a nil map.
//
// "[key]" indexes a slice or array when the key is all digits, and looks up
// a map: by integer key when the key is all digits and the map's key kind is
// an integer kind, otherwise by string key.
//
// # Printing
//
// The value at the end of a path prints, in this order of preference, with
// its String method (fmt.Stringer, on the value or on its pointer when
// addressable), as the string itself for string kinds, in decimal for every
// integer kind, and with fmt.Sprint otherwise. A nil value at the end is an
// error, since "<nil>" would make unrelated calls share one lock; so is a
// value fmt.Sprint would print with a memory address in it (a non-nil
// pointer inside a struct, slice, array or map, a channel, a function, an
// unsafe.Pointer, unless fmt prints it with its own String, Error or Format
// method), since every process would then format, and lock, a name of its
// own.
//
// Every error from this package wraps ErrTemplate and names the template and
// the field at fault.
package tmpl
