package verifier

import (
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
)

func (v *verifier) jump(k key, s *state, ins asm.Instruction, is32 bool) error {
	pc := k.pc
	jop := ins.OpCode.JumpOp()
	switch jop {
	case asm.Ja:
		v.merge(key{pc: v.c.JumpTarget(pc), chain: k.chain}, s)
		return nil
	case asm.Exit:
		return v.exit(k, s)
	case asm.Call:
		if IsLocalCall(ins) {
			return v.localCall(k, s, v.c.JumpTarget(pc))
		}
		if err := v.helperCall(pc, s, uint32(ins.Constant)); err != nil {
			return err
		}
		v.merge(key{pc: pc + 1, chain: k.chain}, s)
		return nil
	}
	d, err := v.readReg(pc, s, ins.Dst)
	if err != nil {
		return err
	}
	var src value
	srcReg := asm.Register(255)
	if ins.OpCode.Source() == asm.RegSource {
		if src, err = v.readReg(pc, s, ins.Src); err != nil {
			return err
		}
		srcReg = ins.Src
	} else {
		src = constant(uint64(ins.Constant))
	}
	taken, fall := s, s.clone()
	okT := v.refine(taken, ins.Dst, srcReg, d, src, jop, is32, true)
	okF := v.refine(fall, ins.Dst, srcReg, d, src, jop, is32, false)
	if okT {
		v.merge(key{pc: v.c.JumpTarget(pc), chain: k.chain}, taken)
	}
	if okF {
		v.merge(key{pc: pc + 1, chain: k.chain}, fall)
	}
	return nil
}

// negate returns the condition of the not-taken edge.
func negate(j asm.JumpOp) asm.JumpOp {
	switch j {
	case asm.JEq:
		return asm.JNE
	case asm.JNE:
		return asm.JEq
	case asm.JGT:
		return asm.JLE
	case asm.JLE:
		return asm.JGT
	case asm.JGE:
		return asm.JLT
	case asm.JLT:
		return asm.JGE
	case asm.JSGT:
		return asm.JSLE
	case asm.JSLE:
		return asm.JSGT
	case asm.JSGE:
		return asm.JSLT
	case asm.JSLT:
		return asm.JSGE
	}
	return 255 // JSET has no useful negation
}

// swapOp returns the condition with its operands exchanged.
func swapOp(j asm.JumpOp) asm.JumpOp {
	switch j {
	case asm.JGT:
		return asm.JLT
	case asm.JLT:
		return asm.JGT
	case asm.JGE:
		return asm.JLE
	case asm.JLE:
		return asm.JGE
	case asm.JSGT:
		return asm.JSLT
	case asm.JSLT:
		return asm.JSGT
	case asm.JSGE:
		return asm.JSLE
	case asm.JSLE:
		return asm.JSGE
	}
	return j
}

// refine narrows s for the edge where "d jop src" is cond, and reports
// whether the edge is feasible.
func (v *verifier) refine(s *state, dr, sr asm.Register, d, src value, jop asm.JumpOp, is32, cond bool) bool {
	if jop == asm.JSet {
		if d.isConst() && src.isConst() {
			t := d.min&src.min != 0
			if is32 {
				t = uint32(d.min)&uint32(src.min) != 0
			}
			return t == cond
		}
		return true
	}
	if !cond {
		jop = negate(jop)
	}
	// Data pointer against data_end: prove a range.
	if !is32 {
		if d.k == kData && src.k == kDataEnd {
			v.proveData(s, d, jop)
			return true
		}
		if d.k == kDataEnd && src.k == kData {
			v.proveData(s, src, swapOp(jop))
			return true
		}
	}
	// NULL checks of map lookups.
	if d.k == kMapValOrNull && src.isConst() && src.min == 0 && (jop == asm.JEq || jop == asm.JNE) {
		v.nullCheck(s, d, jop == asm.JNE)
		return true
	}
	if d.k != kScalar || src.k != kScalar {
		return true
	}
	w := uint64(unbounded)
	if is32 {
		w = math32
		if d.max > math32 {
			return true
		}
		src = constant(uint64(uint32(src.min)))
		if src.min != src.max {
			return true
		}
	}
	signed := jop == asm.JSGT || jop == asm.JSGE || jop == asm.JSLT || jop == asm.JSLE
	if signed {
		half := w>>1 + 0
		if d.max > half || src.max > half {
			return true
		}
		jop = map[asm.JumpOp]asm.JumpOp{asm.JSGT: asm.JGT, asm.JSGE: asm.JGE, asm.JSLT: asm.JLT, asm.JSLE: asm.JLE}[jop]
	}
	if src.isConst() {
		nd, ok := refineRange(d, jop, src.min)
		if ok && dr <= asm.R10 {
			setScalar(s, dr, d, nd)
		}
		return ok
	}
	if d.isConst() && sr <= asm.R10 {
		ns, ok := refineRange(src, swapOp(jop), d.min)
		if ok {
			setScalar(s, sr, src, ns)
		}
		return ok
	}
	// Two ranges: only feasibility.
	switch jop {
	case asm.JGT:
		return d.max > src.min
	case asm.JGE:
		return d.max >= src.min
	case asm.JLT:
		return d.min < src.max
	case asm.JLE:
		return d.min <= src.max
	case asm.JEq:
		return d.min <= src.max && src.min <= d.max
	}
	return true
}

// setScalar replaces register r (and identical copies spilled on the stack of
// the current frame are left alone) with the refined range.
func setScalar(s *state, r asm.Register, old, nv value) {
	if s.regs[r] == old {
		s.regs[r] = nv
	}
}

func refineRange(d value, jop asm.JumpOp, k uint64) (value, bool) {
	lo, hi := d.min, d.max
	switch jop {
	case asm.JEq:
		if k < lo || k > hi {
			return d, false
		}
		lo, hi = k, k
	case asm.JNE:
		if lo == hi && lo == k {
			return d, false
		}
		if lo == k {
			lo++
		} else if hi == k {
			hi--
		}
	case asm.JGT:
		if k == unbounded {
			return d, false
		}
		lo = max(lo, k+1)
	case asm.JGE:
		lo = max(lo, k)
	case asm.JLT:
		if k == 0 {
			return d, false
		}
		hi = min(hi, k-1)
	case asm.JLE:
		hi = min(hi, k)
	default:
		return d, true
	}
	if lo > hi {
		return d, false
	}
	return scalar(lo, hi), true
}

// proveData records, for the edge where "p jop data_end" holds, how many
// bytes from p's variable base are inside the data.
func (v *verifier) proveData(s *state, p value, jop asm.JumpOp) {
	var r int64
	switch jop {
	case asm.JLE:
		r = p.off
	case asm.JLT:
		r = p.off + 1
	default:
		return
	}
	upd := func(x *value) {
		if x.k == kData && x.idx == 0 && p.idx == 0 && x.id == p.id && x.min == p.min && x.max == p.max && r > x.rng {
			x.rng = r
		}
	}
	for i := range s.regs {
		upd(&s.regs[i])
	}
	for _, f := range s.frames {
		for i := range f.slots {
			if f.spilled&(1<<i) != 0 {
				upd(&f.slots[i])
			}
		}
	}
}

func (v *verifier) nullCheck(s *state, p value, nonNull bool) {
	upd := func(x *value) {
		if x.k == kMapValOrNull && x.id == p.id && x.idx == p.idx {
			if nonNull {
				x.k = kMapVal
			} else {
				*x = constant(0)
			}
		}
	}
	for i := range s.regs {
		upd(&s.regs[i])
	}
	for _, f := range s.frames {
		for i := range f.slots {
			if f.spilled&(1<<i) != 0 {
				upd(&f.slots[i])
			}
		}
	}
}

func (v *verifier) exit(k key, s *state) error {
	pc := k.pc
	r0, err := v.readReg(pc, s, asm.R0)
	if err != nil {
		return v.rejectf(pc, "R0 is not set at exit")
	}
	depth := len(s.frames)
	if depth == 1 {
		if r0.k != kScalar {
			return v.rejectf(pc, "program returns a %v, not a scalar", r0.k)
		}
		return nil
	}
	f := s.frames[depth-1]
	caller := f.saved
	s.frames = s.frames[:depth-1]
	regs := caller
	regs[0] = r0
	for r := 1; r <= 5; r++ {
		regs[r] = value{}
	}
	if r0.k == kStack && int(r0.idx) >= depth-1 {
		return v.rejectf(pc, "function returns a pointer to its own stack")
	}
	s.regs = regs
	chain := k.chain[:lastIndexByte(k.chain, ',')]
	v.merge(key{pc: f.ret, chain: chain}, s)
	return nil
}

func lastIndexByte(s string, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return 0
}

func (v *verifier) localCall(k key, s *state, target int) error {
	pc := k.pc
	if len(s.frames) >= abi.MaxFrames {
		return v.rejectf(pc, "call depth exceeds %d frames", abi.MaxFrames)
	}
	for _, f := range s.frames {
		if f.fn == target {
			return v.rejectf(pc, "recursive call to the function at %d", target)
		}
	}
	nf := &frameState{fn: target, ret: pc + 1, saved: s.regs}
	s.frames = append(s.frames, nf)
	var regs [11]value
	for r := 1; r <= 5; r++ {
		regs[r] = s.regs[r]
	}
	regs[10] = value{k: kStack, idx: int32(len(s.frames) - 1)}
	s.regs = regs
	v.merge(key{pc: target, chain: k.chain + "," + strconv.Itoa(pc)}, s)
	return nil
}

// maxHelperLen bounds a helper's length argument: the largest data a run
// sees (the engine refuses more than 2 GiB).
const maxHelperLen = 1 << 31

func maxString(n uint64) string {
	if n == unbounded {
		return "2^64-1"
	}
	return strconv.FormatUint(n, 10)
}

// helperCall checks a helper's arguments and sets its result.
func (v *verifier) helperCall(pc int, s *state, id uint32) *Error {
	arg := func(r asm.Register) (value, *Error) { return v.readReg(pc, s, r) }
	mapArg := func(r asm.Register) (*Map, value, *Error) {
		m, err := arg(r)
		if err != nil {
			return nil, m, err
		}
		if m.k != kMapPtr {
			return nil, m, v.rejectf(pc, "%v must be a map pointer, not a %v", r, m.k)
		}
		return &v.c.Maps[m.idx], m, nil
	}
	mem := func(r asm.Register, size int) *Error {
		p, err := arg(r)
		if err != nil {
			return err
		}
		switch p.k {
		case kStack, kMapVal, kData:
			if size > 0 {
				_, err = v.access(pc, s, p, 0, size, false)
				if err != nil {
					return v.rejectf(pc, "argument %v: %s", r, err.Reason)
				}
			}
			return nil
		case kMapValOrNull:
			return v.rejectf(pc, "argument %v may be NULL: check the map lookup result first", r)
		}
		return v.rejectf(pc, "argument %v must point to memory, not a %v", r, p.k)
	}
	scalarArg := func(r asm.Register) (value, *Error) {
		a, err := arg(r)
		if err != nil {
			return a, err
		}
		if a.k != kScalar {
			return a, v.rejectf(pc, "argument %v must be a scalar, not a %v", r, a.k)
		}
		return a, nil
	}
	// sizedMem checks a pointer argument with a length argument n, as Linux
	// checks ARG_PTR_TO_MEM with ARG_CONST_SIZE: n must be a bounded scalar
	// and the helper may read n.max bytes, so [p, p+n.max) must be inside
	// the frame (and initialised: the stack keeps what earlier runs left)
	// or the map value. Data reads of a variable length are checked by the
	// engine at run time, because clang passes data_end - data for "the
	// whole block", which is not a proven range; a data read of a constant
	// length must be proven like a load.
	sizedMem := func(r, nr asm.Register) *Error {
		n, err := scalarArg(nr)
		if err != nil {
			return err
		}
		if n.max > maxHelperLen {
			return v.rejectf(pc, "argument %v is a length of up to %s bytes: bound it (at most %d), e.g. with & or a compare", nr, maxString(n.max), uint64(maxHelperLen))
		}
		p, err := arg(r)
		if err != nil {
			return err
		}
		switch p.k {
		case kStack, kMapVal, kData:
			if n.max == 0 || p.k == kData && !n.isConst() {
				return nil
			}
			if _, err := v.access(pc, s, p, 0, int(n.max), false); err != nil {
				return v.rejectf(pc, "argument %v (%d bytes, from %v): %s", r, n.max, nr, err.Reason)
			}
			return nil
		case kMapValOrNull:
			return v.rejectf(pc, "argument %v may be NULL: check the map lookup result first", r)
		}
		return v.rejectf(pc, "argument %v must point to memory, not a %v", r, p.k)
	}
	h, ok := abi.HelperByID(id)
	if !ok {
		return v.rejectf(pc, "call to unknown helper %d", id)
	}
	if !h.Allowed(v.typ) {
		names := make([]string, len(h.Types))
		for i, t := range h.Types {
			names[i] = t.String()
		}
		return v.rejectf(pc, "%s is only available to %s programs", h.Name, strings.Join(names, " and "))
	}
	// Each argument is checked by its kind in the helper table, in order.
	var m *Map // the map argument, for keys, values and the result
	var mp value
	for i, a := range h.Args {
		r := asm.R1 + asm.Register(i)
		switch a.Kind {
		case abi.ArgMap, abi.ArgMapWritable, abi.ArgMapHash:
			var err *Error
			if m, mp, err = mapArg(r); err != nil {
				return err
			}
			if a.Kind == abi.ArgMapWritable && m.ReadOnly {
				return v.rejectf(pc, "update of read-only map %s", m.Name)
			}
			if a.Kind == abi.ArgMapHash && m.Kind != MapHash {
				return v.rejectf(pc, "delete from array map %s", m.Name)
			}
		case abi.ArgMapKey, abi.ArgMapValue:
			if m == nil {
				return v.rejectf(pc, "helper %s: argument %v refers to no map argument", h.Name, r)
			}
			size := m.KeySize
			if a.Kind == abi.ArgMapValue {
				size = m.ValueSize
			}
			if err := mem(r, int(size)); err != nil {
				return err
			}
		case abi.ArgScalar:
			if _, err := scalarArg(r); err != nil {
				return err
			}
		case abi.ArgCtx:
			c, err := arg(r)
			if err != nil {
				return err
			}
			if c.k != kCtx || c.off != 0 {
				return v.rejectf(pc, "argument %v of %s must be the context pointer", r, h.Name)
			}
		case abi.ArgMem:
			n := h.SizeArg(i)
			if n < 0 {
				return v.rejectf(pc, "helper %s: pointer argument %v has no length", h.Name, r)
			}
			if err := sizedMem(r, asm.R1+asm.Register(n)); err != nil {
				return err
			}
		case abi.ArgSize:
			// Checked with the pointers it is the length of.
		default:
			return v.rejectf(pc, "helper %s: argument %v of unknown kind %d", h.Name, r, a.Kind)
		}
	}
	r0 := unknown()
	if h.Ret == abi.RetMapValueOrNull {
		r0 = value{k: kMapValOrNull, idx: mp.idx, id: int32(pc + 1)}
	}
	for r := asm.R1; r <= asm.R5; r++ {
		s.regs[r] = value{}
	}
	s.regs[0] = r0
	return nil
}
