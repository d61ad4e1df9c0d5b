// Package engine loads, verifies and runs bpfblk eBPF programs.
//
// A program comes from a clang-built ELF object (LoadELF, LoadFile, LoadSpec,
// through cilium/ebpf's LoadCollectionSpec) or from raw instructions
// (FromInstructions, FromBytes). Loading always runs the verifier; a rejected
// program yields a *verifier.Error naming the instruction. A verified Program
// is compiled by an Engine (JIT, x86-64 machine code on linux/amd64, or the
// portable Interpreter; Default picks) into an Executable, from which each
// core creates its own Instance: own stack, own context buffer, own copy of
// every writable map (read-only maps are shared). Instance.Run allocates
// nothing; the per-core maps are merged on the host with MergeMaps.
//
// Maps are declared up front and allocated whole, so a program's memory is
// known at load: LoadOptions.MapMemory (default DefaultMapMemory) bounds the
// maps of all its instances, and Program.CheckInstances applies the bound to
// the number of instances a caller creates.
//
// Supported RFC 9669 conformance groups: base32, base64, atomic32, atomic64,
// divmul32, divmul64 and packet (legacy BPF_ABS/BPF_IND loads over the data),
// including the v4 additions (SDIV/SMOD, MOVSX, MEMSX, BSWAP, JA32) and
// bpf-to-bpf calls.
package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/internal/layout"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// MapSpec is a map of a program with its initial contents.
type MapSpec struct {
	verifier.Map
	// Init is the initial value memory (MaxEntries*ValueSize bytes or less):
	// the section data of .rodata/.data, zero for everything else.
	Init []byte
	// KeyType and ValueType are the map's BTF types as the C source
	// declares them (nil without BTF); see Program.MapContents.
	KeyType, ValueType btf.Type

	initLen uint64 // len(Init) before it is allocated
}

// Program is a verified program ready to compile.
type Program struct {
	Name string
	Type abi.Type
	// Insns are the instructions as loaded, references resolved.
	Insns asm.Instructions
	// Maps are the maps the program refers to, including global data
	// sections (.rodata, .data, .bss) as one-entry array maps.
	Maps []MapSpec
	// Checked makes the JIT check every load and store at run time, as it
	// does for accesses the verifier did not prove, instead of trusting the
	// verifier's proofs (see RATIONALE.md, "Proven accesses"): for
	// debugging a suspected verifier bug. Set it before Compile
	// (LoadOptions.Checked sets it at load).
	Checked bool

	code     *layout.Code
	info     *verifier.Info
	mapLimit int64
}

// LoadOptions select and parameterise a program in an ELF object.
type LoadOptions struct {
	// Program is the name of the program (its C function name). Empty selects
	// the only program of the object.
	Program string
	// Vars sets global variables (`volatile const` parameters and others)
	// by name before loading, as cilium/ebpf VariableSpec.Set does: values are
	// Go integers, byte slices or fixed-size values of the variable's size.
	Vars map[string]any
	// MapMemory limits the host memory, in bytes, that the maps of all
	// instances of the program may take (see Program.MapMemory); 0 means
	// DefaultMapMemory. Loading refuses a program whose maps times
	// Instances exceed it, with a *MapMemoryError naming the maps, and
	// Program.CheckInstances applies it to the instances a caller creates.
	MapMemory int64
	// Instances is how many instances the caller will create (one per
	// core); 0 means 1.
	Instances int
	// VerifierLog asks the verifier for the log of a rejection: the
	// returned *verifier.Error then carries in Log the instructions and
	// register states on the path that led to it (see verifier.Options).
	// Off, verification records nothing.
	VerifierLog bool
	// Checked sets Program.Checked: every access checked at run time.
	Checked bool
}

func (o *LoadOptions) verifierOptions() *verifier.Options {
	if o == nil || !o.VerifierLog {
		return nil
	}
	return &verifier.Options{Log: true}
}

// LoadFile loads and verifies a program from a clang-built ELF object file.
func LoadFile(path string, opts *LoadOptions) (*Program, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrap(err, "load program")
	}
	p, err := LoadELF(b, opts)
	if err != nil {
		return nil, errors.Wrapf(err, "%s", path)
	}
	return p, nil
}

// LoadELF loads and verifies a program from ELF object bytes.
func LoadELF(obj []byte, opts *LoadOptions) (*Program, error) {
	cs, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
	if err != nil {
		return nil, errors.Wrap(err, "parse ELF object")
	}
	return LoadSpec(cs, opts)
}

// ProgramNames lists the programs of an ELF object, sorted.
func ProgramNames(cs *ebpf.CollectionSpec) []string {
	var names []string
	for n := range cs.Programs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadSpec loads and verifies a program from a parsed collection. The spec is
// not modified.
func LoadSpec(cs *ebpf.CollectionSpec, opts *LoadOptions) (*Program, error) {
	if opts == nil {
		opts = &LoadOptions{}
	}
	if cs.ByteOrder != nil && cs.ByteOrder != binary.LittleEndian {
		return nil, errors.New("object is big-endian; bpfblk runs little-endian programs")
	}
	ps, err := SelectProgram(cs, opts.Program)
	if err != nil {
		return nil, err
	}
	name := ps.Name
	typ, ok := abi.TypeForSection(ps.SectionName)
	if !ok {
		return nil, errors.Errorf("program %s: section %q is not %q, %q or %q",
			name, ps.SectionName, abi.SectionFilter, abi.SectionScan, abi.SectionXDP)
	}
	for vn, v := range opts.Vars {
		vs, ok := cs.Variables[vn]
		if !ok {
			return nil, errors.Errorf("no variable %q in object", vn)
		}
		vs = vs.Copy()
		if err := vs.Set(v); err != nil {
			return nil, errors.Wrapf(err, "set variable %s", vn)
		}
		cs = withVariable(cs, vn, vs)
	}
	insns := slices.Clone(ps.Instructions)
	// Resolve jumps and bpf-to-bpf calls in place (Marshal does it) while
	// keeping the map references by name.
	if err := insns.Marshal(discard{}, binary.LittleEndian); err != nil {
		return nil, errors.Wrapf(err, "program %s", name)
	}
	// Collect referenced maps in first-use order.
	var maps []MapSpec
	index := map[string]int{}
	refs := make([]int, len(insns))
	for i, ins := range insns {
		refs[i] = -1
		if !ins.IsLoadFromMap() {
			continue
		}
		ref := ins.Reference()
		ms, ok := cs.Maps[ref]
		if !ok {
			return nil, errors.Errorf("program %s: instruction %d refers to unknown map %q", name, i, ref)
		}
		if j, ok := index[ref]; ok {
			refs[i] = j
			continue
		}
		spec, err := mapSpecFrom(ref, ms, cs)
		if err != nil {
			return nil, errors.Wrapf(err, "program %s", name)
		}
		index[ref] = len(maps)
		refs[i] = len(maps)
		maps = append(maps, spec)
	}
	// Check the maps' memory before allocating any of it, initial contents
	// included.
	limit := opts.MapMemory
	if limit == 0 {
		limit = DefaultMapMemory
	}
	if limit < 0 {
		return nil, errors.Errorf("program %s: map memory limit %d is negative", name, limit)
	}
	if err := checkMapMemory(name, maps, opts.Instances, limit); err != nil {
		return nil, err
	}
	for i := range maps {
		if err := fillInit(&maps[i], cs.Maps[maps[i].Name], cs); err != nil {
			return nil, errors.Wrapf(err, "program %s", name)
		}
	}
	p, err := newProgramWith(name, typ, insns, maps, func(i int) int { return refs[i] }, opts.verifierOptions())
	if err != nil {
		return nil, err
	}
	p.mapLimit = limit
	p.Checked = opts.Checked
	return p, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func withVariable(cs *ebpf.CollectionSpec, name string, vs *ebpf.VariableSpec) *ebpf.CollectionSpec {
	cpy := *cs
	cpy.Variables = make(map[string]*ebpf.VariableSpec, len(cs.Variables))
	for k, v := range cs.Variables {
		cpy.Variables[k] = v
	}
	cpy.Variables[name] = vs
	return &cpy
}

// mapSpecFrom describes a map and checks its shape; fillInit adds its
// initial contents once the program's total has been checked.
func mapSpecFrom(name string, ms *ebpf.MapSpec, cs *ebpf.CollectionSpec) (MapSpec, error) {
	s := MapSpec{Map: verifier.Map{
		Name: name, KeySize: ms.KeySize, ValueSize: ms.ValueSize, MaxEntries: ms.MaxEntries,
		ReadOnly: ms.Flags&(1<<7) != 0 || strings.HasPrefix(name, ".rodata"),
	}, KeyType: ms.Key, ValueType: ms.Value}
	switch ms.Type {
	case ebpf.Array, ebpf.PerCPUArray:
		s.Kind = verifier.MapArray
		if ms.KeySize != 4 {
			return s, errors.Errorf("array map %s: key size %d is not 4", name, ms.KeySize)
		}
	case ebpf.Hash, ebpf.PerCPUHash, ebpf.LRUHash, ebpf.LRUCPUHash:
		s.Kind = verifier.MapHash
	default:
		return s, errors.Errorf("map %s: type %v is not supported (array and hash maps are)", name, ms.Type)
	}
	if err := checkMapSize(&s); err != nil {
		return s, err
	}
	if s.Kind == verifier.MapArray {
		// Refuse bad initial contents now: the extent decides Init's size,
		// which counts towards the program's map memory.
		n, err := initExtent(&s, ms, cs)
		if err != nil {
			return s, err
		}
		s.initLen = n
	}
	return s, nil
}

// initExtent returns how many leading bytes of an array's value memory have
// initial contents (section data, Contents, variables).
func initExtent(s *MapSpec, ms *ebpf.MapSpec, cs *ebpf.CollectionSpec) (uint64, error) {
	vs := uint64(s.ValueSize)
	var n uint64
	for _, kv := range ms.Contents {
		k, ok := kv.Key.(uint32)
		if !ok || k >= s.MaxEntries {
			return 0, errors.Errorf("map %s: initial key %v is not an index", s.Name, kv.Key)
		}
		v, ok := kv.Value.([]byte)
		if !ok {
			return 0, errors.Errorf("map %s: initial value of type %T", s.Name, kv.Value)
		}
		if uint64(len(v)) > vs {
			return 0, errors.Errorf("map %s: initial value %d has %d bytes, more than the value size %d", s.Name, k, len(v), vs)
		}
		if len(v) > 0 {
			n = max(n, uint64(k)*vs+uint64(len(v)))
		}
	}
	for _, v := range cs.Variables {
		if v.SectionName != s.Name || v.Value == nil {
			continue
		}
		end := uint64(v.Offset) + uint64(len(v.Value))
		if end > vs {
			return 0, errors.Errorf("variable %s exceeds section %s", v.Name, s.Name)
		}
		n = max(n, end)
	}
	return n, nil
}

// fillInit sets an array's Init: its value memory up to the last
// initialised byte (MapSpec.Memory bounds it; loading checked the total).
func fillInit(s *MapSpec, ms *ebpf.MapSpec, cs *ebpf.CollectionSpec) error {
	if s.Kind != verifier.MapArray {
		return nil
	}
	n, err := initExtent(s, ms, cs)
	if err != nil || n == 0 {
		return err
	}
	s.Init = make([]byte, n)
	vs := uint64(s.ValueSize)
	for _, kv := range ms.Contents {
		k, v := kv.Key.(uint32), kv.Value.([]byte)
		copy(s.Init[uint64(k)*vs:], v)
	}
	for _, v := range cs.Variables {
		if v.SectionName == s.Name && v.Value != nil {
			copy(s.Init[v.Offset:], v.Value)
		}
	}
	return nil
}

// FromInstructions verifies a program given as instructions (built with
// cilium/ebpf/asm, or decoded). Jump labels and bpf-to-bpf calls are resolved.
func FromInstructions(name string, typ abi.Type, insns asm.Instructions) (*Program, error) {
	insns = slices.Clone(insns)
	if err := insns.Marshal(discard{}, binary.LittleEndian); err != nil {
		return nil, errors.Wrapf(err, "program %s", name)
	}
	for i, ins := range insns {
		if ins.IsLoadFromMap() {
			return nil, errors.Errorf("program %s: instruction %d loads a map, which raw programs cannot have", name, i)
		}
	}
	return newProgram(name, typ, insns, nil, nil)
}

// FromBytes decodes raw little-endian instructions (8 bytes each) with
// cilium/ebpf/asm and verifies them.
func FromBytes(name string, typ abi.Type, raw []byte) (*Program, error) {
	return FromBytesWith(name, typ, raw, nil)
}

// FromBytesWith is FromBytes with options; of LoadOptions only VerifierLog
// and Checked apply to raw instructions.
func FromBytesWith(name string, typ abi.Type, raw []byte, opts *LoadOptions) (*Program, error) {
	if len(raw)%asm.InstructionSize != 0 {
		return nil, errors.Errorf("program %s: %d bytes is not a whole number of 8-byte instructions", name, len(raw))
	}
	insns, err := asm.AppendInstructions(nil, bytes.NewReader(raw), binary.LittleEndian, "linux")
	if err != nil {
		return nil, errors.Wrapf(err, "program %s: decode", name)
	}
	p, err := newProgramWith(name, typ, insns, nil, nil, opts.verifierOptions())
	if err != nil {
		return nil, err
	}
	p.Checked = opts != nil && opts.Checked
	return p, nil
}

func newProgram(name string, typ abi.Type, insns asm.Instructions, maps []MapSpec, ref func(int) int) (*Program, error) {
	return newProgramWith(name, typ, insns, maps, ref, nil)
}

func newProgramWith(name string, typ abi.Type, insns asm.Instructions, maps []MapSpec, ref func(int) int, vo *verifier.Options) (*Program, error) {
	if len(maps) > maxMaps {
		return nil, errors.Errorf("program %s uses %d maps; at most %d", name, len(maps), maxMaps)
	}
	vm := make([]verifier.Map, len(maps))
	for i := range maps {
		vm[i] = maps[i].Map
	}
	insns = verifier.CanonicalAtomics(insns)
	info, err := verifier.VerifyWith(insns, vm, ref, typ, vo)
	if err != nil {
		return nil, err
	}
	return &Program{Name: name, Type: typ, Insns: insns, Maps: maps, code: layout.New(insns, ref), info: info, mapLimit: DefaultMapMemory}, nil
}

// Disassemble writes the program's instructions, one per line, with slot
// numbers (the unit of jump offsets).
func (p *Program) Disassemble() string {
	return fmt.Sprintf("%v", p.Insns)
}
