package btfmt

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"
)

// HexPrefix introduces raw bytes in Parse: "hex:4552524f52".
const HexPrefix = "hex:"

// Parse converts text to the bytes of a value of type t (little-endian):
//
//   - "hex:" followed by hex digits gives raw bytes for any type, zero-padded
//     to its size (more bytes than the type holds is an error);
//   - an array of one-byte integers (char[N], __u8[N]) takes the text itself,
//     zero-padded (longer than N bytes is an error);
//   - an integer takes a number: decimal, 0x hex, 0o octal or 0b binary,
//     negative only for a signed type, range-checked for its width;
//   - a bool takes true or false (or 1 or 0), an enum an enumerator's name or
//     a number, a float a decimal number;
//   - anything else (structs, other arrays) takes only hex:.
//
// Errors name the C type, e.g. `value "..." is 300 bytes, char[256] holds 256`.
func Parse(t btf.Type, text string) ([]byte, error) {
	size := Size(t)
	if size <= 0 {
		return nil, errors.Errorf("type %s has no size", CType(t))
	}
	return parseSized(t, size, text)
}

func parseSized(t btf.Type, size int, text string) ([]byte, error) {
	out := make([]byte, size)
	if h, ok := strings.CutPrefix(text, HexPrefix); ok {
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, errors.Errorf("%q is not hex bytes (%v)", text, err)
		}
		if len(b) > size {
			return nil, errors.Errorf("value %s is %d bytes, %s holds %d", quote(text), len(b), typeName(t, size), size)
		}
		copy(out, b)
		return out, nil
	}
	if t == nil {
		// No BTF: a number of the variable's size.
		if size > 8 || size&(size-1) != 0 {
			return nil, errors.Errorf("a %d-byte value without BTF takes only %sBYTES", size, HexPrefix)
		}
		return out, parseInt(out, &btf.Int{Size: uint32(size)}, typeName(t, size), text)
	}
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		if u.Encoding == btf.Bool {
			switch text {
			case "true", "1":
				out[0] = 1
				return out, nil
			case "false", "0":
				return out, nil
			}
			return nil, errors.Errorf("%s is not true or false (%s)", quote(text), CType(t))
		}
		return out, parseInt(out, u, CType(t), text)
	case *btf.Enum:
		for _, ev := range u.Values {
			if ev.Name == text {
				putLE(out, ev.Value)
				return out, nil
			}
		}
		it := &btf.Int{Size: u.Size}
		if u.Signed {
			it.Encoding = btf.Signed
		}
		if err := parseInt(out, it, CType(t), text); err != nil {
			return nil, errors.Wrapf(err, "not an enumerator of %s either", CType(t))
		}
		return out, nil
	case *btf.Float:
		f, err := strconv.ParseFloat(text, int(8*u.Size))
		if err != nil || (u.Size != 4 && u.Size != 8) {
			return nil, errors.Errorf("%s is not a number for %s", quote(text), CType(t))
		}
		if u.Size == 4 {
			binary.LittleEndian.PutUint32(out, math.Float32bits(float32(f)))
		} else {
			binary.LittleEndian.PutUint64(out, math.Float64bits(f))
		}
		return out, nil
	case *btf.Array:
		if it, ok := btf.UnderlyingType(u.Type).(*btf.Int); ok && it.Size == 1 {
			if len(text) > size {
				return nil, errors.Errorf("value %s is %d bytes, %s holds %d", quote(text), len(text), CType(t), size)
			}
			copy(out, text)
			return out, nil
		}
	}
	return nil, errors.Errorf("%s takes only %sBYTES, not %s", CType(t), HexPrefix, quote(text))
}

func typeName(t btf.Type, size int) string {
	if t == nil {
		return strconv.Itoa(size) + " bytes"
	}
	return CType(t)
}

// parseInt parses a number into out, checked against the integer type.
func parseInt(out []byte, t *btf.Int, name, text string) error {
	bits := 8 * len(out)
	if bits > 64 {
		return errors.Errorf("%s is %d bytes wide; give it as %sBYTES", name, len(out), HexPrefix)
	}
	if t.Encoding == btf.Signed {
		v, err := strconv.ParseInt(text, 0, 64)
		lo, hi := int64(-1)<<(bits-1), int64(uint64(1)<<(bits-1)-1)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return errors.Errorf("%s is not a number (%s takes decimal, 0x hex, or %sBYTES)", quote(text), name, HexPrefix)
		}
		if err != nil || v < lo || v > hi {
			return errors.Errorf("%s is out of range for %s (%d..%d)", text, name, lo, hi)
		}
		putLE(out, uint64(v))
		return nil
	}
	if strings.HasPrefix(text, "-") {
		if _, err := strconv.ParseInt(text, 0, 64); err == nil || errors.Is(err, strconv.ErrRange) {
			return errors.Errorf("%s is negative; %s is unsigned", text, name)
		}
	}
	v, err := strconv.ParseUint(text, 0, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return errors.Errorf("%s is not a number (%s takes decimal, 0x hex, or %sBYTES)", quote(text), name, HexPrefix)
	}
	hi := uint64(math.MaxUint64)
	if bits < 64 {
		hi = 1<<bits - 1
	}
	if err != nil || v > hi {
		return errors.Errorf("%s is out of range for %s (0..%d)", text, name, hi)
	}
	putLE(out, v)
	return nil
}

func putLE(out []byte, v uint64) {
	for i := range out {
		out[i] = byte(v >> (8 * i))
	}
}

// quote quotes text for an error, shortened to 40 bytes.
func quote(text string) string {
	if len(text) > 40 {
		return strconv.Quote(text[:37]) + "..."
	}
	return strconv.Quote(text)
}

// ParseVariable parses text (see Parse) into a value for a global variable
// of a program, by the variable's BTF type; without one, a number of the
// variable's size or hex: bytes. Errors begin with the variable's name.
func ParseVariable(vs *ebpf.VariableSpec, text string) ([]byte, error) {
	size := int(vs.Size())
	var t btf.Type
	if vs.Type != nil {
		t = vs.Type.Type
		if n := Size(t); n != size {
			return nil, errors.Errorf("%s: BTF type %s is %d bytes but the variable is %d", vs.Name, CType(t), n, size)
		}
	}
	if size == 0 {
		return nil, errors.Errorf("%s: the variable has no size", vs.Name)
	}
	b, err := parseSized(t, size, text)
	if err != nil {
		return nil, errors.Wrap(err, vs.Name)
	}
	return b, nil
}

// VariableType names a variable's C type, or its size without BTF.
func VariableType(vs *ebpf.VariableSpec) string {
	if vs.Type == nil {
		return typeName(nil, int(vs.Size()))
	}
	return CType(vs.Type.Type)
}
