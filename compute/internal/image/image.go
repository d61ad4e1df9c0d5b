// Package image is the byte format in which a verified bpfblk program travels
// to a computational storage device (Load Program, PTYPE nvme.ProgTypeEBPF)
// and in which the device returns the program's map state. The host encodes
// an engine.Program; the device decodes it and verifies it again with the
// same verifier before it accepts it, so a device never runs code that the
// project's verifier has not passed.
//
// Program image (little endian):
//
//	"BPFBLKP1"                        magic
//	u32 type, u32 name length, u32 code bytes, u32 maps, u32 map references
//	name, code (raw 8-byte instructions, jumps and calls resolved)
//	per map: u32 name length, name, u32 kind (1 array, 2 hash), u32 key size,
//	         u32 value size, u32 max entries, u32 flags (bit 0 read-only),
//	         u32 init length, init bytes
//	per map reference: u32 instruction index, u32 map index
//
// Map state (the answer to Execute Program with nvme.ExecFlagState):
//
//	u32 maps; per map: u32 name length, name, u32 kind, u32 key size,
//	u32 value size, u32 entries, entries × (key, value)
package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

var le = binary.LittleEndian

const magic = "BPFBLKP1"

// Limits a decoder enforces before allocating.
const (
	maxName = 256
	maxMaps = 64
)

// Encode serialises a verified program.
func Encode(p *engine.Program) ([]byte, error) {
	var code bytes.Buffer
	if err := p.Insns.Marshal(&code, le); err != nil {
		return nil, errors.Wrapf(err, "image: program %s", p.Name)
	}
	mapIndex := map[string]int{}
	for i, m := range p.Maps {
		mapIndex[m.Name] = i
	}
	type ref struct{ insn, m uint32 }
	var refs []ref
	for i, ins := range p.Insns {
		if !ins.IsLoadFromMap() {
			continue
		}
		j, ok := mapIndex[ins.Reference()]
		if !ok {
			return nil, errors.Errorf("image: program %s: instruction %d refers to map %q it does not have", p.Name, i, ins.Reference())
		}
		refs = append(refs, ref{uint32(i), uint32(j)})
	}
	var b []byte
	b = append(b, magic...)
	b = le.AppendUint32(b, uint32(p.Type))
	b = le.AppendUint32(b, uint32(len(p.Name)))
	b = le.AppendUint32(b, uint32(code.Len()))
	b = le.AppendUint32(b, uint32(len(p.Maps)))
	b = le.AppendUint32(b, uint32(len(refs)))
	b = append(b, p.Name...)
	b = append(b, code.Bytes()...)
	for _, m := range p.Maps {
		b = le.AppendUint32(b, uint32(len(m.Name)))
		b = append(b, m.Name...)
		b = le.AppendUint32(b, uint32(m.Kind))
		b = le.AppendUint32(b, m.KeySize)
		b = le.AppendUint32(b, m.ValueSize)
		b = le.AppendUint32(b, m.MaxEntries)
		flags := uint32(0)
		if m.ReadOnly {
			flags = 1
		}
		b = le.AppendUint32(b, flags)
		b = le.AppendUint32(b, uint32(len(m.Init)))
		b = append(b, m.Init...)
	}
	for _, r := range refs {
		b = le.AppendUint32(b, r.insn)
		b = le.AppendUint32(b, r.m)
	}
	return b, nil
}

// reader decodes with bounds checks; the first error sticks.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) u32(what string) uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 4 {
		r.err = errors.Errorf("truncated at byte %d (%s)", r.off, what)
		return 0
	}
	v := le.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) bytes(n uint32, what string) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)-r.off) < uint64(n) {
		r.err = errors.Errorf("truncated at byte %d (%s of %d bytes)", r.off, what, n)
		return nil
	}
	v := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return v
}

func (r *reader) name(what string) string {
	n := r.u32(what + " length")
	if r.err == nil && n > maxName {
		r.err = errors.Errorf("%s of %d bytes (limit %d)", what, n, maxName)
		return ""
	}
	return string(r.bytes(n, what))
}

// Decode parses a program image and verifies the program. Errors say what
// is wrong and where; a verifier rejection is returned as the verifier's
// error (naming the instruction). The program's maps are bounded by
// engine.DefaultMapMemory.
func Decode(b []byte) (*engine.Program, error) {
	return DecodeWithLimit(b, 0)
}

// DecodeWithLimit is Decode with a limit on the program's map memory, as
// engine.LoadOptions.MapMemory (0 means engine.DefaultMapMemory): a device
// refuses a program whose maps it cannot hold. Decoding allocates no more
// than a small multiple of len(b) before the limit is checked.
func DecodeWithLimit(b []byte, mapMemory int64) (*engine.Program, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, errors.New("image: not a bpfblk program image (bad magic)")
	}
	r := &reader{b: b, off: len(magic)}
	typ := abi.Type(r.u32("type"))
	nameLen := r.u32("name length")
	codeLen := r.u32("code length")
	nmaps := r.u32("map count")
	nrefs := r.u32("reference count")
	if r.err == nil && (nameLen > maxName || nmaps > maxMaps || codeLen%asm.InstructionSize != 0) {
		r.err = errors.Errorf("bad header (name %d bytes, %d maps, %d code bytes)", nameLen, nmaps, codeLen)
	}
	name := string(r.bytes(nameLen, "name"))
	code := r.bytes(codeLen, "code")
	type mapRec struct {
		name                         string
		kind, key, value, max, flags uint32
		init                         []byte
	}
	maps := make([]mapRec, 0, min(nmaps, maxMaps))
	for i := uint32(0); i < nmaps && r.err == nil; i++ {
		m := mapRec{name: r.name("map name")}
		m.kind = r.u32("map kind")
		m.key, m.value, m.max, m.flags = r.u32("key size"), r.u32("value size"), r.u32("max entries"), r.u32("flags")
		m.init = r.bytes(r.u32("init length"), "map init")
		maps = append(maps, m)
	}
	if r.err != nil {
		return nil, errors.Wrap(r.err, "image")
	}
	insns, err := asm.AppendInstructions(nil, bytes.NewReader(code), le, "linux")
	if err != nil {
		return nil, errors.Wrap(err, "image: decode instructions")
	}
	for i := uint32(0); i < nrefs && r.err == nil; i++ {
		ii, mi := r.u32("reference instruction"), r.u32("reference map")
		if r.err != nil {
			break
		}
		if ii >= uint32(len(insns)) || mi >= uint32(len(maps)) || !insns[ii].IsLoadFromMap() {
			return nil, errors.Errorf("image: map reference %d (instruction %d, map %d) is invalid", i, ii, mi)
		}
		insns[ii] = insns[ii].WithReference(maps[mi].name)
	}
	if r.err != nil {
		return nil, errors.Wrap(r.err, "image")
	}
	if r.off != len(b) {
		return nil, errors.Errorf("image: %d trailing bytes", len(b)-r.off)
	}
	if typ == abi.TypeRaw {
		if len(maps) > 0 {
			return nil, errors.New("image: a raw program cannot have maps")
		}
		return engine.FromInstructions(name, typ, insns)
	}
	cs := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{}, Programs: map[string]*ebpf.ProgramSpec{}}
	for _, m := range maps {
		ms := &ebpf.MapSpec{Name: m.name, KeySize: m.key, ValueSize: m.value, MaxEntries: m.max}
		switch m.kind {
		case uint32(verifier.MapArray):
			ms.Type = ebpf.Array
		case uint32(verifier.MapHash):
			ms.Type = ebpf.Hash
		default:
			return nil, errors.Errorf("image: map %s: unknown kind %d", m.name, m.kind)
		}
		if m.flags&1 != 0 {
			ms.Flags = 1 << 7 // BPF_F_RDONLY_PROG
		}
		if ms.Type == ebpf.Array && m.value > 0 {
			if uint64(len(m.init)) > uint64(m.value)*uint64(m.max) {
				return nil, errors.Errorf("image: map %s: %d init bytes exceed %d entries of %d", m.name, len(m.init), m.max, m.value)
			}
			// Values are the image's bytes (the last may be short): the
			// loader checks the map's sizes before it allocates the map.
			vs := uint64(m.value)
			for k := uint64(0); k*vs < uint64(len(m.init)); k++ {
				v := m.init[k*vs : min((k+1)*vs, uint64(len(m.init)))]
				if !allZero(v) {
					ms.Contents = append(ms.Contents, ebpf.MapKV{Key: uint32(k), Value: v})
				}
			}
		}
		cs.Maps[m.name] = ms
	}
	var sec string
	switch typ {
	case abi.TypeFilter:
		sec = abi.SectionFilter
	case abi.TypeScan:
		sec = abi.SectionScan
	case abi.TypeXDP:
		sec = abi.SectionXDP
	default:
		return nil, errors.Errorf("image: unknown program type %d", typ)
	}
	cs.Programs[name] = &ebpf.ProgramSpec{Name: name, SectionName: sec, Instructions: insns}
	return engine.LoadSpec(cs, &engine.LoadOptions{Program: name, MapMemory: mapMemory})
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// EncodeMaps serialises map snapshots (engine.MergeMaps output).
func EncodeMaps(maps []engine.MapData) []byte {
	b := le.AppendUint32(nil, uint32(len(maps)))
	for _, m := range maps {
		b = le.AppendUint32(b, uint32(len(m.Name)))
		b = append(b, m.Name...)
		b = le.AppendUint32(b, uint32(m.Kind))
		b = le.AppendUint32(b, uint32(m.KeySize))
		b = le.AppendUint32(b, uint32(m.ValueSize))
		b = le.AppendUint32(b, uint32(len(m.Entries)))
		for _, e := range m.Entries {
			b = append(b, e.Key...)
			b = append(b, e.Value...)
		}
	}
	return b
}

// DecodeMaps parses EncodeMaps output, map state that comes from a device.
// Every count and size is checked against the bytes that are left before
// anything is allocated or looped over: keys and values are 1-512 and
// 1-4194304 bytes (engine.MaxKeySize, engine.MaxValueSize), so every entry
// takes at least two bytes of the reply, and a map's entries must be sorted
// by key without repeats (as EncodeMaps writes them). The result takes at
// most about 25 bytes per byte of b (a 48-byte entry header for every two
// bytes of the smallest entry) and a constant. Errors name the map, the entry and the
// byte offset.
func DecodeMaps(b []byte) ([]engine.MapData, error) {
	return decodeMaps(b, nil)
}

// DecodeMapsFor is DecodeMaps for the state of program p: every map must be
// one of p's writable maps, at most once, with its kind, key and value
// sizes; an array no more entries than its max entries, and keys below it.
// A hash map's state may hold more: a device merges the maps of all the
// instances (one per compute core) that ran the program, and each may
// hold max entries keys of its own. (Its size is still bounded by the
// reply's.)
func DecodeMapsFor(b []byte, p *engine.Program) ([]engine.MapData, error) {
	return decodeMaps(b, p)
}

func decodeMaps(b []byte, p *engine.Program) ([]engine.MapData, error) {
	r := &reader{b: b}
	n := r.u32("map count")
	if r.err != nil {
		return nil, errors.Wrap(r.err, "map state")
	}
	if n > maxMaps {
		return nil, errors.Errorf("map state: %d maps (limit %d) at byte 0", n, maxMaps)
	}
	var seen []bool
	if p != nil {
		seen = make([]bool, len(p.Maps))
	}
	out := make([]engine.MapData, 0, n)
	for i := uint32(0); i < n; i++ {
		at := r.off
		m := engine.MapData{Name: r.name("map name")}
		kind := r.u32("map kind")
		ks, vs, cnt := r.u32("key size"), r.u32("value size"), r.u32("entries")
		if r.err != nil {
			return nil, errors.Wrapf(r.err, "map state: map %d at byte %d", i, at)
		}
		m.Kind = verifier.MapKind(kind)
		where := func() string { return fmt.Sprintf("map state: map %d (%q) at byte %d", i, m.Name, at) }
		switch {
		case kind != uint32(verifier.MapArray) && kind != uint32(verifier.MapHash):
			return nil, errors.Errorf("%s: unknown kind %d", where(), kind)
		case ks == 0 || ks > engine.MaxKeySize || vs == 0 || vs > engine.MaxValueSize:
			return nil, errors.Errorf("%s: key size %d, value size %d (want 1-%d and 1-%d)", where(), ks, vs, engine.MaxKeySize, engine.MaxValueSize)
		case m.Kind == verifier.MapArray && ks != 4:
			return nil, errors.Errorf("%s: array key size %d is not 4", where(), ks)
		}
		m.KeySize, m.ValueSize = int(ks), int(vs)
		maxEntries := uint32(1<<32 - 1)
		if p != nil {
			j := slices.IndexFunc(p.Maps, func(s engine.MapSpec) bool { return s.Name == m.Name })
			if j < 0 || p.Maps[j].ReadOnly {
				return nil, errors.Errorf("%s: program %s has no writable map of that name", where(), p.Name)
			}
			s := &p.Maps[j]
			if seen[j] {
				return nil, errors.Errorf("%s: map sent twice", where())
			}
			seen[j] = true
			if s.Kind != m.Kind || s.KeySize != ks || s.ValueSize != vs || (m.Kind == verifier.MapArray && cnt > s.MaxEntries) {
				return nil, errors.Errorf("%s: kind %d, key %d B, value %d B, %d entries; the program declares kind %d, key %d B, value %d B, at most %d entries",
					where(), m.Kind, ks, vs, cnt, s.Kind, s.KeySize, s.ValueSize, s.MaxEntries)
			}
			maxEntries = s.MaxEntries
		}
		entry := uint64(ks) + uint64(vs)
		if left := uint64(len(b) - r.off); uint64(cnt) > left/entry {
			return nil, errors.Errorf("%s: %d entries of %d+%d bytes need %d bytes, %d are left at byte %d",
				where(), cnt, ks, vs, uint64(cnt)*entry, left, r.off)
		}
		// One copy of the entries' bytes; keys and values are capped
		// sub-slices of it, so appending to one cannot overwrite another.
		data := bytes.Clone(b[r.off : r.off+int(uint64(cnt)*entry)])
		m.Entries = make([]engine.MapEntry, cnt)
		for k := range m.Entries {
			e := data[uint64(k)*entry : uint64(k+1)*entry : uint64(k+1)*entry]
			m.Entries[k] = engine.MapEntry{Key: e[:ks:ks], Value: e[ks:]}
			if k > 0 && bytes.Compare(m.Entries[k-1].Key, m.Entries[k].Key) >= 0 {
				return nil, errors.Errorf("%s: entry %d at byte %d: key %x is not after the previous key", where(), k, r.off+k*int(entry), m.Entries[k].Key)
			}
			if m.Kind == verifier.MapArray && le.Uint32(m.Entries[k].Key) >= maxEntries {
				return nil, errors.Errorf("%s: entry %d at byte %d: array index %d is not below %d", where(), k, r.off+k*int(entry), le.Uint32(m.Entries[k].Key), maxEntries)
			}
		}
		r.off += len(data)
		out = append(out, m)
	}
	if r.off != len(b) {
		return nil, errors.Errorf("map state: %d trailing bytes at byte %d", len(b)-r.off, r.off)
	}
	return out, nil
}
