// Package btfmt reads and writes the values of eBPF programs as their C source
// declares them, using the program's BTF (cilium/ebpf's btf package): map keys
// and values decoded for people (text, in the manner of bpftool's map dump)
// and for programs (JSON), and program parameters (`volatile const` globals)
// parsed from text by their C type.
//
// Decoding never fails: bytes whose type is missing, unsupported or of the
// wrong size are shown as hex bytes, as bpftool shows a map without BTF.
package btfmt

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/cilium/ebpf/btf"
)

// maxDepth bounds the nesting of types followed (BTF from a file may nest
// arbitrarily; sizes alone do not bound the recursion of zero-sized types).
const maxDepth = 32

// Text formats b, a value of type t, as text: integers in decimal (signed
// where the type is), char arrays as quoted strings when printable, structs
// and unions as {field: value, ...}, arrays as [a, b, ...], enums by name,
// sections of global variables as {name: value, ...}. Without a usable type
// the bytes are printed in hex ("01 00 00 00").
func Text(t btf.Type, b []byte) string {
	return string(AppendText(nil, t, b))
}

// AppendText appends Text(t, b) to dst.
func AppendText(dst []byte, t btf.Type, b []byte) []byte {
	e := encoder{buf: dst}
	e.value(t, b, 0)
	return e.buf
}

// JSON returns b, a value of type t, as JSON: integers as numbers, char
// arrays as strings when printable, structs, unions and sections as objects
// with the C field names, arrays as arrays, enums by name, booleans as
// booleans. Without a usable type the bytes are an array of "0x.." strings,
// as bpftool prints them.
func JSON(t btf.Type, b []byte) json.RawMessage {
	return AppendJSON(nil, t, b)
}

// AppendJSON appends JSON(t, b) to dst.
func AppendJSON(dst []byte, t btf.Type, b []byte) []byte {
	e := encoder{buf: dst, json: true}
	e.value(t, b, 0)
	return e.buf
}

type encoder struct {
	buf  []byte
	json bool
}

// Size is the size in bytes of a value of type t, or -1 when t has none.
func Size(t btf.Type) int {
	if t == nil {
		return -1
	}
	if ds, ok := btf.QualifiedType(t).(*btf.Datasec); ok {
		return int(ds.Size)
	}
	n, err := btf.Sizeof(t)
	if err != nil {
		return -1
	}
	return n
}

func (e *encoder) value(t btf.Type, b []byte, depth int) {
	if t == nil || depth > maxDepth || Size(t) != len(b) {
		e.hex(b)
		return
	}
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		e.int(u, b)
	case *btf.Enum:
		e.enum(u, b)
	case *btf.Float:
		e.float(u, b)
	case *btf.Pointer:
		e.str("0x" + strconv.FormatUint(binary.LittleEndian.Uint64(b), 16))
	case *btf.Array:
		e.array(u, b, depth)
	case *btf.Struct:
		e.members(u.Members, b, depth)
	case *btf.Union:
		e.members(u.Members, b, depth)
	case *btf.Var:
		e.value(u.Type, b, depth+1)
	case *btf.Datasec:
		e.datasec(u, b, depth)
	default:
		e.hex(b)
	}
}

func (e *encoder) hex(b []byte) {
	const digits = "0123456789abcdef"
	if e.json {
		e.buf = append(e.buf, '[')
		for i, c := range b {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.buf = append(e.buf, '"', '0', 'x', digits[c>>4], digits[c&15], '"')
		}
		e.buf = append(e.buf, ']')
		return
	}
	for i, c := range b {
		if i > 0 {
			e.buf = append(e.buf, ' ')
		}
		e.buf = append(e.buf, digits[c>>4], digits[c&15])
	}
}

// str appends s as a quoted string (JSON or Go syntax, the same for ASCII).
func (e *encoder) str(s string) {
	if e.json {
		q, _ := json.Marshal(s)
		e.buf = append(e.buf, q...)
		return
	}
	e.buf = strconv.AppendQuote(e.buf, s)
}

// uintLE reads a little-endian unsigned integer of 1 to 8 bytes.
func uintLE(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func signExtend(v uint64, bits int) int64 {
	sh := 64 - bits
	return int64(v<<sh) >> sh
}

func (e *encoder) int(t *btf.Int, b []byte) {
	if len(b) == 0 || len(b) > 8 {
		e.hex(b)
		return
	}
	v := uintLE(b)
	switch {
	case t.Encoding == btf.Bool && v <= 1:
		e.buf = strconv.AppendBool(e.buf, v == 1)
	case t.Encoding == btf.Signed:
		e.buf = strconv.AppendInt(e.buf, signExtend(v, 8*len(b)), 10)
	default:
		e.buf = strconv.AppendUint(e.buf, v, 10)
	}
}

func (e *encoder) enum(t *btf.Enum, b []byte) {
	if len(b) == 0 || len(b) > 8 {
		e.hex(b)
		return
	}
	v := uintLE(b)
	for _, ev := range t.Values {
		if ev.Value == v || (t.Signed && ev.Value == uint64(signExtend(v, 8*len(b)))) {
			e.str(ev.Name)
			return
		}
	}
	if t.Signed {
		e.buf = strconv.AppendInt(e.buf, signExtend(v, 8*len(b)), 10)
		return
	}
	e.buf = strconv.AppendUint(e.buf, v, 10)
}

func (e *encoder) float(t *btf.Float, b []byte) {
	var f float64
	switch len(b) {
	case 4:
		f = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case 8:
		f = math.Float64frombits(binary.LittleEndian.Uint64(b))
	default:
		e.hex(b)
		return
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		// JSON has no NaN or infinity.
		e.str(strconv.FormatFloat(f, 'g', -1, 64))
		return
	}
	e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, 64)
}

// isChar reports whether t is a one-byte integer, seen through qualifiers
// but not typedefs: char, signed char, unsigned char (bpftool's rule, so
// that __u8 buffers stay numbers).
func isChar(t btf.Type) bool {
	i, ok := btf.QualifiedType(t).(*btf.Int)
	return ok && i.Size == 1
}

// printable returns the text of a char array: printable ASCII up to a NUL
// (or the whole array), or false.
func printable(b []byte) (string, bool) {
	n := len(b)
	for i, c := range b {
		if c == 0 {
			n = i
			break
		}
		if c < 0x20 || c > 0x7e {
			return "", false
		}
	}
	return string(b[:n]), true
}

func (e *encoder) array(t *btf.Array, b []byte, depth int) {
	if isChar(t.Type) {
		if s, ok := printable(b); ok {
			e.str(s)
			return
		}
	}
	n := int(t.Nelems)
	es := 0
	if n > 0 {
		es = len(b) / n
	}
	e.buf = append(e.buf, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			e.sep()
		}
		e.value(t.Type, b[i*es:(i+1)*es], depth+1)
	}
	e.buf = append(e.buf, ']')
}

func (e *encoder) sep() {
	if e.json {
		e.buf = append(e.buf, ',')
	} else {
		e.buf = append(e.buf, ',', ' ')
	}
}

func (e *encoder) key(name string) {
	if e.json {
		e.str(name)
		e.buf = append(e.buf, ':')
		return
	}
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ':', ' ')
}

func (e *encoder) members(ms []btf.Member, b []byte, depth int) {
	e.buf = append(e.buf, '{')
	for i, m := range ms {
		if i > 0 {
			e.sep()
		}
		e.key(m.Name)
		if m.BitfieldSize > 0 {
			e.bitfield(m, b)
			continue
		}
		off := int(m.Offset / 8)
		n := Size(m.Type)
		if m.Offset%8 != 0 || n < 0 || off+n > len(b) {
			e.hex(nil)
			continue
		}
		e.value(m.Type, b[off:off+n], depth+1)
	}
	e.buf = append(e.buf, '}')
}

// bitfield reads a bitfield member (little-endian bit numbering).
func (e *encoder) bitfield(m btf.Member, b []byte) {
	bits := int(m.BitfieldSize)
	start := int(m.Offset)
	if bits > 64 || start+bits > 8*len(b) {
		e.hex(nil)
		return
	}
	var v uint64
	for i := 0; i < bits; i++ {
		p := start + i
		v |= uint64(b[p/8]>>(p%8)&1) << i
	}
	if i, ok := btf.As[*btf.Int](m.Type); ok && i.Encoding == btf.Signed {
		e.buf = strconv.AppendInt(e.buf, signExtend(v, bits), 10)
		return
	}
	e.buf = strconv.AppendUint(e.buf, v, 10)
}

func (e *encoder) datasec(t *btf.Datasec, b []byte, depth int) {
	e.buf = append(e.buf, '{')
	first := true
	for _, vs := range t.Vars {
		v, ok := vs.Type.(*btf.Var)
		if !ok {
			continue
		}
		end := uint64(vs.Offset) + uint64(vs.Size)
		if end > uint64(len(b)) {
			continue
		}
		if !first {
			e.sep()
		}
		first = false
		e.key(v.Name)
		e.value(v.Type, b[vs.Offset:end], depth+1)
	}
	e.buf = append(e.buf, '}')
}

// CType names t as C source would: "__u32", "char[256]", "struct stats",
// "unsigned int *". Qualifiers (volatile, const) are left out.
func CType(t btf.Type) string {
	return ctype(t, 0)
}

func ctype(t btf.Type, depth int) string {
	if depth > maxDepth {
		return "?"
	}
	switch u := btf.QualifiedType(t).(type) {
	case nil:
		return "?"
	case *btf.Void:
		return "void"
	case *btf.Typedef:
		return u.Name
	case *btf.Int:
		return u.Name
	case *btf.Float:
		return u.Name
	case *btf.Struct:
		return "struct " + anon(u.Name)
	case *btf.Union:
		return "union " + anon(u.Name)
	case *btf.Enum:
		return "enum " + anon(u.Name)
	case *btf.Fwd:
		return u.Kind.String() + " " + u.Name
	case *btf.Pointer:
		return ctype(u.Target, depth+1) + " *"
	case *btf.Array:
		// int[2][3]: the outer dimension comes first.
		dims := fmt.Sprintf("[%d]", u.Nelems)
		elem := u.Type
		for {
			a, ok := btf.QualifiedType(elem).(*btf.Array)
			if !ok || depth > maxDepth {
				break
			}
			dims += fmt.Sprintf("[%d]", a.Nelems)
			elem = a.Type
			depth++
		}
		return ctype(elem, depth+1) + dims
	case *btf.Var:
		return ctype(u.Type, depth+1)
	case *btf.Datasec:
		return "section " + u.Name
	default:
		return fmt.Sprintf("%v", u)
	}
}

func anon(name string) string {
	if name == "" {
		return "(anonymous)"
	}
	return name
}
