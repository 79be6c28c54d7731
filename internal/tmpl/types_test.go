package tmpl

import (
	"errors"
	"fmt"
)

// Types shared by the tests: shaped like the Cinder objects that lock-name
// templates reach into.

type Volume struct {
	ID     string
	Name   string
	Size   int
	Tags   map[string]string
	Snaps  []Snapshot
	Parent *Volume
	Any    any
	//lint:ignore U1000 an unexported field that templates must not find
	secret string
}

var errBroken = errors.New("volume is broken")

func (v Volume) Label() string             { return "vol-" + v.Name }
func (v *Volume) PtrLabel() string         { return "ptr-" + v.Name }
func (v Volume) Checked() (string, error)  { return "ok-" + v.ID, nil }
func (v Volume) Broken() (string, error)   { return "", errBroken }
func (v Volume) Takes(n int) string        { return fmt.Sprint(n) }
func (v Volume) TwoValues() (string, int)  { return "", 0 }
func (v Volume) Panics() string            { panic("boom") }
func (v Volume) NilPointer() *Volume       { return nil }
func (v Volume) Child() Volume             { return Volume{ID: "child-of-" + v.ID} }
func (v Volume) ChildPtr() *Volume         { return &Volume{ID: "childptr-of-" + v.ID} }
func (v *Volume) SetName(n string) *Volume { v.Name = n; return v }

//lint:ignore U1000 an unexported method that templates must not find
func (v Volume) unexportedMethod() string { return "hidden" }

type Snapshot struct {
	ID     string
	Volume *Volume
}

// Ambig has two fields that differ only by case.
//
//lint:ignore ST1003 the field names are the point of the test
type Ambig struct {
	ID string
	Id string // deliberately ambiguous with ID
}

// Exact has an exported field whose lower-case spelling is also a field.
type Exact struct {
	Name string
	NAME string
}

type Status string

type Color int

func (c Color) String() string { return [...]string{"red", "green"}[c%2] }

type ptrStringer struct{ N int }

func (p *ptrStringer) String() string { return fmt.Sprintf("ps%d", p.N) }

type panicStringer struct{}

func (panicStringer) String() string { panic("no string for you") }

type Inner struct{ Deep string }

type Outer struct {
	Inner
	X int
}

type NilEmbed struct {
	*Inner
}

type inner2 struct{ Promoted string }

type OuterUnexported struct {
	inner2
}

type NamedMap map[string]int

func (NamedMap) Count() int { return 42 }

type Holder struct {
	Vols    []Volume
	VolPtrs []*Volume
	Arr     [2]string
	ByInt   map[int]string
	ByU8    map[uint8]string
	ByStr   map[string]string
	ByFloat map[float64]string
	Nested  map[string]map[string][]int
	Named   NamedMap
	NilMap  map[string]string
	Status  Status
	Color   Color
	PS      ptrStringer
	PSPtr   *ptrStringer
	Float   float64
	U       uint64
	I8      int8
	Bool    bool
	Iface   fmt.Stringer
}

// Opaque keeps its state private and exposes it through accessors, the
// usual Go shape: {o.id} must find ID(), not stop at the field id.
type Opaque struct {
	id   string
	name string
}

func (o Opaque) ID() string    { return o.id }
func (o *Opaque) Name() string { return o.name }
