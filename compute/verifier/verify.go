package verifier

import (
	"math/bits"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/internal/layout"
)

// CtxField marks a context load the engine must rewrite (XDP's 32-bit
// data/data_end fields become 64-bit engine addresses).
type CtxField uint8

// Context fields that need rewriting.
const (
	CtxFieldNone CtxField = iota
	CtxFieldData
	CtxFieldDataEnd
)

// Info is what the engine needs from verification.
type Info struct {
	// CtxField is indexed by slot.
	CtxField []CtxField
	// Functions are the entry slots of the program's functions (0 first).
	Functions []int
	// Access is indexed by slot: for each load, store and atomic, the
	// region that every execution of it touches if the verifier proved the
	// access inside it on every path (see Access). The engine may run
	// proven accesses without a run-time check.
	Access []Access
}

// Region names the memory an access was proven inside.
type Region uint8

// Regions of a proof. RegionNone: not proven, the engine must check.
const (
	RegionNone Region = iota
	RegionCtx
	RegionData
	RegionStack
	RegionMap
)

// Access is what the verifier proved about one load, store or atomic: on
// every path that reaches it, base register + offset lies in Region (for
// RegionMap, in the value memory of map Map) and the access's last byte is
// inside the memory that region has for the whole run: the context's fixed
// fields, [data, data_end) as compared at run time with a bounded variable
// part (raw programs, which have no data_end, are never proven), the
// current call's frames of the stack, one value of the map. Nothing a
// program can do changes those sizes during a run: the data is fixed for the
// run, map values are preallocated and never move or shrink, and the stack
// is all frames. An access whose paths disagree on the region is not proven.
type Access struct {
	Region Region
	Map    uint32
}

// MaxSteps bounds the work of the verifier; larger programs are rejected as
// too complex.
const MaxSteps = 1 << 21

// wideningAfter is how many times a state may grow before its growing bounds
// are widened to infinity.
const wideningAfter = 4

type key struct {
	pc    int
	chain string // call sites of the active frames
}

type verifier struct {
	c       *code
	typ     abi.Type
	info    *Info
	slots   map[key]*pcStates
	work    []workItem
	live    []uint16 // registers live on entry, per slot
	fpBuf   []byte
	scratch joinScratch
	ctxSeen []bool
	accSeen []bool
	log     *trail // nil unless Options.Log
	cur     uint64 // the step being executed (with log only)
}

type workItem struct {
	k      key
	s      *state
	parent uint64 // the step that produced it (with log only)
}

// pcStates is what the verifier knows about one instruction in one call
// context: the fingerprints of the states explored precisely there and, once
// there were too many, one joined state that absorbs all further ones.
type pcStates struct {
	seen   map[uint64]struct{}
	joined *state
	joins  int
}

// PrecisePerInsn is how many distinct states one instruction may be explored
// with (path-sensitively, so that a bounded loop is verified iteration by
// iteration as Linux does) before further states are joined and widened.
const PrecisePerInsn = 1 << 13

// Verify checks insns as a program of type typ. The program refers to maps:
// mapRef(i) is the index in maps of the map that instruction i (in insns
// order; an LDDW is one instruction) loads a pointer to or a value address
// of, or -1; nil means no instruction refers to a map. Info is indexed by
// slot (an LDDW takes two).
func Verify(insns asm.Instructions, maps []Map, mapRef func(i int) int, typ abi.Type) (*Info, error) {
	return verify(&code{Code: layout.New(insns, mapRef), Maps: maps}, typ, nil)
}

func verify(c *code, typ abi.Type, log *trail) (*Info, error) {
	if len(c.Insns) > 1<<20 {
		return nil, c.reject(-1, "program has %d instructions; at most %d", len(c.Insns), 1<<20)
	}
	if err := c.checkEncoding(typ); err != nil {
		return nil, err
	}
	fns, err := c.checkFlow()
	if err != nil {
		return nil, err
	}
	v := &verifier{
		c: c, typ: typ,
		info:    &Info{CtxField: make([]CtxField, len(c.Insns)), Functions: fns, Access: make([]Access, len(c.Insns))},
		accSeen: make([]bool, len(c.Insns)),
		slots:   map[key]*pcStates{},
		ctxSeen: make([]bool, len(c.Insns)),
		log:     log,
	}
	v.live = c.liveness()
	entry := &state{frames: []*frameState{{fn: 0, ret: -1}}}
	entry.regs[10] = value{k: kStack}
	switch typ {
	case abi.TypeRaw:
		entry.regs[1] = value{k: kData}
		entry.regs[2] = scalar(0, 1<<31)
	default:
		entry.regs[1] = value{k: kCtx}
	}
	v.merge(key{pc: 0}, entry)
	steps := 0
	for len(v.work) > 0 {
		it := v.work[len(v.work)-1]
		v.work = v.work[:len(v.work)-1]
		if steps++; steps > MaxSteps {
			return nil, c.reject(it.k.pc, "program is too complex to verify (more than %d steps)", MaxSteps)
		}
		if v.log != nil {
			v.cur = v.log.record(&it)
		}
		if err := v.step(it.k, it.s); err != nil {
			if e, ok := err.(*Error); ok && v.log != nil {
				e.Log = v.log.log(c, v.cur, e)
			}
			return nil, err
		}
	}
	return v.info, nil
}

func (v *verifier) merge(k key, s *state) {
	// Dead registers do not distinguish states.
	live := v.live[k.pc]
	for r := 0; r < 10; r++ {
		if live&(1<<r) == 0 {
			s.regs[r] = value{}
		}
	}
	ps := v.slots[k]
	if ps == nil {
		ps = &pcStates{seen: map[uint64]struct{}{}}
		v.slots[k] = ps
	}
	if ps.joined == nil {
		fp := s.fingerprint(&v.fpBuf)
		if _, dup := ps.seen[fp]; dup {
			return
		}
		if len(ps.seen) < PrecisePerInsn {
			ps.seen[fp] = struct{}{}
			v.work = append(v.work, workItem{k, s, v.cur})
			return
		}
		ps.joined = s
		v.work = append(v.work, workItem{k, s.clone(), v.cur})
		return
	}
	ps.joins++
	if ps.joined.join(s, int32(-(k.pc + 1)), ps.joins > wideningAfter, &v.scratch) {
		v.work = append(v.work, workItem{k, ps.joined.clone(), v.cur})
	}
}

func (v *verifier) rejectf(pc int, format string, args ...any) *Error {
	return v.c.reject(pc, format, args...)
}

func (v *verifier) readReg(pc int, s *state, r asm.Register) (value, *Error) {
	val := s.regs[r]
	switch val.k {
	case kUninit:
		return val, v.rejectf(pc, "read of uninitialised register %v", r)
	case kMixed:
		return val, v.rejectf(pc, "register %v holds different types on different paths", r)
	}
	return val, nil
}

func (v *verifier) writeReg(pc int, r asm.Register) *Error {
	if r == asm.R10 {
		return v.rejectf(pc, "write to read-only frame pointer R10")
	}
	return nil
}

// step executes the instruction at k.pc on s and merges the successors.
func (v *verifier) step(k key, s *state) error {
	pc := k.pc
	ins := v.c.Insns[pc]
	op := ins.OpCode
	next := pc + 1

	switch cls := op.Class(); cls {
	case asm.ALUClass, asm.ALU64Class:
		if err := v.alu(pc, s, ins, cls == asm.ALU64Class); err != nil {
			return err
		}
	case asm.LdClass:
		if op.IsDWordLoad() {
			if err := v.writeReg(pc, ins.Dst); err != nil {
				return err
			}
			switch ref := v.c.MapRef[pc]; {
			case ref >= 0 && ins.Src == asm.PseudoMapFD:
				s.regs[ins.Dst] = value{k: kMapPtr, idx: int32(ref)}
			case ref >= 0 && ins.Src == asm.PseudoMapValue:
				off := int64(uint64(ins.Constant) >> 32)
				if off >= int64(v.c.Maps[ref].ValueSize) {
					return v.rejectf(pc, "offset %d is outside map %s (value size %d)", off, v.c.Maps[ref].Name, v.c.Maps[ref].ValueSize)
				}
				s.regs[ins.Dst] = value{k: kMapVal, idx: int32(ref), off: off}
			default:
				s.regs[ins.Dst] = constant(uint64(ins.Constant))
			}
			next = pc + 2
			break
		}
		// Legacy packet loads: r0 = big-endian data; r1-r5 are clobbered.
		if op.Mode() == asm.IndMode {
			if sv, err := v.readReg(pc, s, ins.Src); err != nil {
				return err
			} else if sv.k != kScalar {
				return v.rejectf(pc, "legacy packet load index is a %v, not a scalar", sv.k)
			}
		}
		for r := asm.R1; r <= asm.R5; r++ {
			s.regs[r] = value{}
		}
		s.regs[0] = scalar(0, 1<<(8*op.Size().Sizeof())-1)
	case asm.LdXClass:
		if err := v.writeReg(pc, ins.Dst); err != nil {
			return err
		}
		base, err := v.readReg(pc, s, ins.Src)
		if err != nil {
			return err
		}
		size := op.Size().Sizeof()
		res, err := v.access(pc, s, base, int64(ins.Offset), size, false)
		if err != nil {
			return err
		}
		v.prove(pc, base)
		if op.Mode() == asm.MemSXMode && res.k == kScalar {
			res = unknown()
		}
		s.regs[ins.Dst] = res
	case asm.StClass, asm.StXClass:
		base, err := v.readReg(pc, s, ins.Dst)
		if err != nil {
			return err
		}
		size := op.Size().Sizeof()
		var src value
		if cls == asm.StXClass {
			if src, err = v.readReg(pc, s, ins.Src); err != nil {
				return err
			}
		} else {
			src = constant(uint64(ins.Constant))
		}
		if op.Mode() == asm.AtomicMode {
			if src.k != kScalar {
				return v.rejectf(pc, "atomic operation with a %v operand", src.k)
			}
			if _, err := v.access(pc, s, base, int64(ins.Offset), size, false); err != nil {
				return err
			}
			if _, err := v.accessStore(pc, s, base, int64(ins.Offset), size, unknown()); err != nil {
				return err
			}
			v.prove(pc, base)
			a := uint32(ins.Constant)
			if a == 0xf1 {
				if r0, err := v.readReg(pc, s, asm.R0); err != nil {
					return err
				} else if r0.k != kScalar {
					return v.rejectf(pc, "compare-exchange compares R0, which holds a %v", r0.k)
				}
				s.regs[0] = unknown()
			} else if a&1 != 0 {
				if err := v.writeReg(pc, ins.Src); err != nil {
					return err
				}
				s.regs[ins.Src] = unknown()
			}
			break
		}
		if _, err := v.accessStore(pc, s, base, int64(ins.Offset), size, src); err != nil {
			return err
		}
		v.prove(pc, base)
	case asm.JumpClass, asm.Jump32Class:
		return v.jump(k, s, ins, cls == asm.Jump32Class)
	}
	v.merge(key{pc: next, chain: k.chain}, s)
	return nil
}

func (v *verifier) alu(pc int, s *state, ins asm.Instruction, is64 bool) *Error {
	op := ins.OpCode
	aop := op.ALUOp()
	if err := v.writeReg(pc, ins.Dst); err != nil {
		return err
	}
	var src value
	var err *Error
	if aop == asm.Swap || aop == asm.Neg {
		src = constant(0)
	} else if op.Source() == asm.RegSource {
		if src, err = v.readReg(pc, s, ins.Src); err != nil {
			return err
		}
	} else if is64 {
		src = constant(uint64(ins.Constant))
	} else {
		src = constant(uint64(uint32(ins.Constant)))
	}
	if aop == asm.MovSX8 || aop == asm.MovSX16 || aop == asm.MovSX32 {
		if src.k != kScalar {
			return v.rejectf(pc, "sign-extending move of a %v", src.k)
		}
		s.regs[ins.Dst] = scalarALU(aop, is64, unknown(), src, ins)
		return nil
	}
	if aop == asm.Mov {
		if is64 {
			s.regs[ins.Dst] = src
			return nil
		}
		if src.k != kScalar {
			return v.rejectf(pc, "32-bit move of a %v", src.k)
		}
		s.regs[ins.Dst] = trunc32(src)
		return nil
	}
	dst, err := v.readReg(pc, s, ins.Dst)
	if err != nil {
		return err
	}
	if dst.isPtr() || src.isPtr() {
		r, err := v.ptrALU(pc, aop, is64, dst, src)
		if err != nil {
			return err
		}
		if r.k == kData && r.id == int32(pc+1) {
			freezeID(s, r.id)
		}
		s.regs[ins.Dst] = r
		return nil
	}
	s.regs[ins.Dst] = scalarALU(aop, is64, dst, src, ins)
	return nil
}

func trunc32(v value) value {
	if v.max <= math32 {
		return v
	}
	if v.isConst() {
		return constant(uint64(uint32(v.min)))
	}
	return scalar(0, math32)
}

const math32 = 1<<32 - 1

// scalarALU computes the abstract result of a scalar operation. Constants are
// folded exactly with the same semantics as the engine; ranges are tracked
// for the operations loops and bounds checks use.
func scalarALU(aop asm.ALUOp, is64 bool, d, s value, ins asm.Instruction) value {
	if d.isConst() && s.isConst() {
		return constant(evalALU(aop, is64, d.min, s.min, ins))
	}
	var r value
	switch aop {
	case asm.Add:
		lo, c1 := bits.Add64(d.min, s.min, 0)
		hi, c2 := bits.Add64(d.max, s.max, 0)
		if c1 == 0 && c2 == 0 && d.max != unbounded && s.max != unbounded {
			r = scalar(lo, hi)
		} else {
			r = unknown()
		}
	case asm.Sub:
		if s.isConst() && d.min >= s.min && d.max != unbounded {
			r = scalar(d.min-s.min, d.max-s.min)
		} else {
			r = unknown()
		}
	case asm.Mul:
		hi, lo := bits.Mul64(d.max, s.max)
		if hi == 0 && d.max != unbounded && s.max != unbounded {
			r = scalar(d.min*s.min, lo)
		} else {
			r = unknown()
		}
	case asm.Div:
		r = scalar(0, d.max)
	case asm.Mod:
		if s.isConst() && s.min != 0 {
			r = scalar(0, min(d.max, s.min-1))
		} else {
			r = scalar(0, d.max)
		}
	case asm.And:
		r = scalar(0, min(d.max, s.max))
	case asm.Or, asm.Xor:
		if d.max != unbounded && s.max != unbounded {
			r = scalar(0, 1<<bits.Len64(max(d.max, s.max))-1)
		} else {
			r = unknown()
		}
	case asm.RSh:
		if s.isConst() {
			sh := s.min & 63
			if !is64 {
				sh = s.min & 31
				d = trunc32(d)
			}
			r = scalar(d.min>>sh, d.max>>sh)
		} else {
			r = scalar(0, d.max)
		}
	case asm.LSh:
		if s.isConst() && d.max != unbounded && bits.Len64(d.max)+int(s.min&63) <= 62 {
			r = scalar(d.min<<(s.min&63), d.max<<(s.min&63))
		} else {
			r = unknown()
		}
	case asm.Swap:
		switch ins.Constant {
		case 16:
			r = scalar(0, 0xffff)
		case 32:
			r = scalar(0, math32)
		default:
			r = unknown()
		}
		if !is64 && ins.OpCode.Endianness() == asm.LE && d.max <= uint64(1)<<ins.Constant-1 {
			r = d // truncation of a value that already fits
		}
		return r
	default:
		r = unknown()
	}
	if !is64 {
		r = trunc32(r)
		if d.max > math32 || s.max > math32 {
			r = scalar(0, math32)
		}
	}
	return r
}

// evalALU is the exact semantics of one ALU operation on constants.
func evalALU(aop asm.ALUOp, is64 bool, d, s uint64, ins asm.Instruction) uint64 {
	imm := ins.Constant
	asmBE := ins.OpCode.Endianness() == asm.BE
	if !is64 {
		d32, s32 := uint32(d), uint32(s)
		var r uint32
		switch aop {
		case asm.Add:
			r = d32 + s32
		case asm.Sub:
			r = d32 - s32
		case asm.Mul:
			r = d32 * s32
		case asm.Div:
			if s32 != 0 {
				r = d32 / s32
			}
		case asm.SDiv:
			if s32 != 0 {
				r = uint32(int32(d32) / int32(s32))
			}
		case asm.Mod:
			r = d32
			if s32 != 0 {
				r = d32 % s32
			}
		case asm.SMod:
			r = d32
			if s32 != 0 {
				r = uint32(int32(d32) % int32(s32))
			}
		case asm.Or:
			r = d32 | s32
		case asm.And:
			r = d32 & s32
		case asm.Xor:
			r = d32 ^ s32
		case asm.LSh:
			r = d32 << (s32 & 31)
		case asm.RSh:
			r = d32 >> (s32 & 31)
		case asm.ArSh:
			r = uint32(int32(d32) >> (s32 & 31))
		case asm.Neg:
			r = -d32
		case asm.MovSX8:
			r = uint32(int32(int8(s)))
		case asm.MovSX16:
			r = uint32(int32(int16(s)))
		case asm.Swap:
			switch imm {
			case 16:
				v := uint16(d)
				if asmBE {
					v = bits.ReverseBytes16(v)
				}
				return uint64(v)
			case 32:
				if asmBE {
					return uint64(bits.ReverseBytes32(uint32(d)))
				}
				return uint64(uint32(d))
			default:
				if asmBE {
					return bits.ReverseBytes64(d)
				}
				return d
			}
		}
		return uint64(r)
	}
	switch aop {
	case asm.Add:
		return d + s
	case asm.Sub:
		return d - s
	case asm.Mul:
		return d * s
	case asm.Div:
		if s == 0 {
			return 0
		}
		return d / s
	case asm.SDiv:
		if s == 0 {
			return 0
		}
		return uint64(int64(d) / int64(s))
	case asm.Mod:
		if s == 0 {
			return d
		}
		return d % s
	case asm.SMod:
		if s == 0 {
			return d
		}
		return uint64(int64(d) % int64(s))
	case asm.Or:
		return d | s
	case asm.And:
		return d & s
	case asm.Xor:
		return d ^ s
	case asm.LSh:
		return d << (s & 63)
	case asm.RSh:
		return d >> (s & 63)
	case asm.ArSh:
		return uint64(int64(d) >> (s & 63))
	case asm.Neg:
		return -d
	case asm.MovSX8:
		return uint64(int64(int8(s)))
	case asm.MovSX16:
		return uint64(int64(int16(s)))
	case asm.MovSX32:
		return uint64(int64(int32(s)))
	case asm.Swap:
		switch imm {
		case 16:
			return uint64(bits.ReverseBytes16(uint16(d)))
		case 32:
			return uint64(bits.ReverseBytes32(uint32(d)))
		}
		return bits.ReverseBytes64(d)
	}
	return 0
}

func (v *verifier) ptrALU(pc int, aop asm.ALUOp, is64 bool, d, s value) (value, *Error) {
	if !is64 {
		return value{}, v.rejectf(pc, "32-bit arithmetic on a pointer")
	}
	p, o := d, s
	if !d.isPtr() {
		p, o = s, d
		if aop != asm.Add {
			return value{}, v.rejectf(pc, "%v of a scalar and a pointer", aop)
		}
	}
	if o.isPtr() {
		if aop == asm.Sub && d.k == kDataEnd && s.k == kData && s.off == 0 && s.min == 0 && s.max == 0 {
			// data_end - data: the length of the data, which the engine
			// keeps at most 2 GiB.
			return scalar(0, maxHelperLen), nil
		}
		if aop == asm.Sub && d.k == s.k || aop == asm.Sub && d.k == kDataEnd && s.k == kData || aop == asm.Sub && d.k == kData && s.k == kDataEnd {
			return unknown(), nil
		}
		return value{}, v.rejectf(pc, "%v of two pointers (%v, %v)", aop, d.k, s.k)
	}
	switch p.k {
	case kMapValOrNull:
		return value{}, v.rejectf(pc, "arithmetic on a map value pointer that may be NULL (check it first)")
	case kMapPtr, kDataEnd:
		return value{}, v.rejectf(pc, "arithmetic on a %v", p.k)
	}
	switch aop {
	case asm.Add, asm.Sub:
	default:
		return value{}, v.rejectf(pc, "pointer arithmetic with %v is not allowed", aop)
	}
	if p.k == kCtx && !o.isConst() {
		return value{}, v.rejectf(pc, "variable offset added to the context pointer")
	}
	if o.isConst() {
		c := int64(o.min)
		if aop == asm.Sub {
			c = -c
		}
		if c > 1<<30 || c < -(1<<30) {
			return value{}, v.rejectf(pc, "pointer offset %d is out of range", c)
		}
		p.off += c
		if p.off > 1<<31 || p.off < -(1<<31) {
			return value{}, v.rejectf(pc, "pointer offset %d is out of range", p.off)
		}
		return p, nil
	}
	if aop == asm.Sub {
		return value{}, v.rejectf(pc, "subtracting a variable from a pointer is not allowed")
	}
	p.min += o.min
	if p.max == unbounded || o.max == unbounded || p.max+o.max > 1<<40 {
		p.max = unbounded
	} else {
		p.max += o.max
	}
	if p.k == kData {
		p.id = int32(pc + 1)
		p.rng = 0
	}
	return p, nil
}

// prove records what the access at pc through base, which the verifier has
// just accepted on this path, is proven to touch; the proof stands only if
// every path agrees.
func (v *verifier) prove(pc int, base value) {
	var a Access
	switch base.k {
	case kCtx:
		a.Region = RegionCtx
	case kStack:
		a.Region = RegionStack
	case kMapVal:
		a.Region, a.Map = RegionMap, uint32(base.idx)
	case kData:
		// Raw programs' data accesses are not proven (dataCheck). Otherwise
		// the access is within the proven range of a pointer whose variable
		// part is bounded (below 2^40), so the pointer cannot have wrapped
		// into another region: the comparison with data_end bounds it.
		if v.typ != abi.TypeRaw && base.max != unbounded {
			a.Region = RegionData
		}
	}
	if !v.accSeen[pc] {
		v.accSeen[pc] = true
		v.info.Access[pc] = a
		return
	}
	if v.info.Access[pc] != a {
		v.info.Access[pc] = Access{}
	}
}

// freezeID is called when instruction pc gives a new data pointer the id
// pc+1. Ids name a variable part by the instruction that added it, so a
// pointer made by an earlier execution of the same instruction (a previous
// loop iteration) has the same id but, in general, a different variable part:
// a comparison of the new pointer with data_end must not prove bytes for the
// old one. Old pointers keep the bytes already proven for them and never
// gain more. The JIT relies on this: it trusts proven data accesses.
func freezeID(s *state, id int32) {
	fr := func(x *value) {
		if x.k == kData && x.id == id {
			x.idx = frozen
		}
	}
	for i := range s.regs {
		fr(&s.regs[i])
	}
	for _, f := range s.frames {
		for i := range f.slots {
			if f.spilled&(1<<i) != 0 {
				fr(&f.slots[i])
			}
		}
		for i := range f.saved {
			fr(&f.saved[i])
		}
	}
}

// access checks a load of size bytes at base+off and returns the loaded value.
func (v *verifier) access(pc int, s *state, base value, off int64, size int, _ bool) (value, *Error) {
	switch base.k {
	case kStack:
		f, lo, hi, err := v.stackRange(pc, s, base, off, size)
		if err != nil {
			return value{}, err
		}
		if lo == hi && lo%8 == 0 && size == 8 && f.spilled&(1<<(lo/8)) != 0 {
			return f.slots[lo/8], nil
		}
		for o := lo; o < hi+size; o++ {
			if !f.isInit(o) {
				return value{}, v.rejectf(pc, "read of uninitialised stack at fp%+d", o-abi.StackSize)
			}
		}
		return sized(size), nil
	case kCtx:
		return v.ctxLoad(pc, base, off, size)
	case kData:
		if err := v.dataCheck(pc, base, off, size); err != nil {
			return value{}, err
		}
		return sized(size), nil
	case kMapVal:
		if err := v.mapCheck(pc, base, off, size, false); err != nil {
			return value{}, err
		}
		return sized(size), nil
	case kMapValOrNull:
		return value{}, v.rejectf(pc, "possible NULL dereference: check the map lookup result first")
	}
	return value{}, v.rejectf(pc, "memory access through a %v", base.k)
}

func sized(size int) value {
	if size == 8 {
		return unknown()
	}
	return scalar(0, 1<<(8*size)-1)
}

// accessStore checks a store of val at base+off.
func (v *verifier) accessStore(pc int, s *state, base value, off int64, size int, val value) (value, *Error) {
	switch base.k {
	case kStack:
		f, lo, hi, err := v.stackRange(pc, s, base, off, size)
		if err != nil {
			return value{}, err
		}
		for slot := lo / 8; slot <= (hi+size-1)/8; slot++ {
			f.spilled &^= 1 << slot
		}
		if lo == hi {
			for o := lo; o < lo+size; o++ {
				f.setInit(o)
			}
			if size == 8 && lo%8 == 0 {
				f.spilled |= 1 << (lo / 8)
				f.slots[lo/8] = val
			}
		}
		return val, nil
	case kCtx:
		return value{}, v.rejectf(pc, "write to the read-only context")
	case kData:
		if v.typ != abi.TypeRaw && v.typ != abi.TypeXDP {
			return value{}, v.rejectf(pc, "write to read-only block data")
		}
		if err := v.dataCheck(pc, base, off, size); err != nil {
			return value{}, err
		}
		return val, nil
	case kMapVal:
		if err := v.mapCheck(pc, base, off, size, true); err != nil {
			return value{}, err
		}
		return val, nil
	case kMapValOrNull:
		return value{}, v.rejectf(pc, "possible NULL dereference: check the map lookup result first")
	}
	return value{}, v.rejectf(pc, "memory access through a %v", base.k)
}

// stackRange returns the frame and the lowest and highest start offset (from
// the frame's bottom) of an access.
func (v *verifier) stackRange(pc int, s *state, base value, off int64, size int) (*frameState, int, int, *Error) {
	if int(base.idx) >= len(s.frames) {
		return nil, 0, 0, v.rejectf(pc, "stack pointer into a returned frame")
	}
	f := s.frames[base.idx]
	lo := base.off + off + abi.StackSize + int64(base.min)
	if base.max == unbounded {
		return nil, 0, 0, v.rejectf(pc, "unbounded variable stack offset")
	}
	hi := base.off + off + abi.StackSize + int64(base.max)
	if lo < 0 || hi+int64(size) > abi.StackSize {
		return nil, 0, 0, v.rejectf(pc, "stack access at fp%+d of %d bytes is outside the %d-byte frame",
			base.off+off+int64(base.min), size, abi.StackSize)
	}
	return f, int(lo), int(hi), nil
}

func (v *verifier) ctxLoad(pc int, base value, off int64, size int) (value, *Error) {
	if base.min != 0 || base.max != 0 {
		return value{}, v.rejectf(pc, "variable context offset")
	}
	o := base.off + off
	field := func(f CtxField, res value) (value, *Error) {
		if v.ctxSeen[pc] && v.info.CtxField[pc] != f {
			return value{}, v.rejectf(pc, "context load reads different fields on different paths")
		}
		v.ctxSeen[pc] = true
		v.info.CtxField[pc] = f
		return res, nil
	}
	if v.typ == abi.TypeXDP {
		switch {
		case (o == abi.XDPData || o == abi.XDPDataMeta) && size == 4:
			return field(CtxFieldData, value{k: kData})
		case o == abi.XDPDataEnd && size == 4:
			return field(CtxFieldDataEnd, value{k: kDataEnd})
		case o >= 12 && o+int64(size) <= abi.XDPCtxSize && o%int64(size) == 0:
			return field(CtxFieldNone, sized(size))
		}
		return value{}, v.rejectf(pc, "invalid xdp_md access at offset %d, size %d", o, size)
	}
	switch {
	case o == abi.CtxData && size == 8:
		return field(CtxFieldNone, value{k: kData})
	case o == abi.CtxDataEnd && size == 8:
		return field(CtxFieldNone, value{k: kDataEnd})
	case o >= abi.CtxLBA && o+int64(size) <= abi.CtxSize && o%int64(size) == 0:
		return field(CtxFieldNone, sized(size))
	}
	return value{}, v.rejectf(pc, "invalid context access at offset %d, size %d (struct bpfblk_ctx is %d bytes; data and data_end are read as whole __u64)", o, size, abi.CtxSize)
}

func (v *verifier) dataCheck(pc int, base value, off int64, size int) *Error {
	if v.typ == abi.TypeRaw {
		// Raw programs have a length, not data_end: their data accesses are
		// bounds-checked at run time only.
		return nil
	}
	o := base.off + off
	if o+int64(base.min) < 0 {
		return v.rejectf(pc, "data access at offset %d is before data", o+int64(base.min))
	}
	if o+int64(size) > base.rng {
		return v.rejectf(pc, "data access [%d, %d) is not proven inside [data, data_end): compare the pointer with data_end first (proven: %d bytes)", o, o+int64(size), base.rng)
	}
	return nil
}

func (v *verifier) mapCheck(pc int, base value, off int64, size int, write bool) *Error {
	m := v.c.Maps[base.idx]
	if write && m.ReadOnly {
		return v.rejectf(pc, "write to read-only map %s", m.Name)
	}
	lo := base.off + off + int64(base.min)
	if base.max == unbounded {
		return v.rejectf(pc, "unbounded offset into map %s value", m.Name)
	}
	hi := base.off + off + int64(base.max) + int64(size)
	if lo < 0 || hi > int64(m.ValueSize) {
		return v.rejectf(pc, "access [%d, %d) outside the %d-byte value of map %s", lo, hi, m.ValueSize, m.Name)
	}
	return nil
}
