//go:build linux && amd64

package engine

import (
	"runtime"
	"unsafe"

	"github.com/klauspost/cpuid/v2"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/abi"
	x86 "github.com/bpfblk/bpfblk/compute/engine/internal/amd64"
)

// JIT compiles programs to x86-64 machine code. See RATIONALE.md ("The JIT")
// for the register map, the exits to Go and what stays checked at run time.
var JIT Engine = jitEngine{}

// jitAvailable reports whether JIT produces code on this platform.
const jitAvailable = true

type jitEngine struct{}

func (jitEngine) Name() string { return "jit" }

// BPF register -> x86 register. rcx and r11 are scratch, r10 holds the
// *Instance, rsp and rbp are Go's.
var jitReg = [11]x86.Reg{
	x86.RAX, // r0 (cmpxchg's implicit operand)
	x86.RDI, // r1
	x86.RSI, // r2
	x86.RDX, // r3 (saved around div)
	x86.R9,  // r4
	x86.R8,  // r5
	x86.RBX, // r6
	x86.R13, // r7
	x86.R14, // r8
	x86.R15, // r9
	x86.R12, // r10 (frame pointer)
}

const (
	jState = x86.R10
	jTmp   = x86.R11
	jCnt   = x86.RCX
	jData  = x86.RBP // the data region's bias while the code runs; Go's rbp is in jit.bp
)

// Exit kinds, in the low byte of jitExit.info.
const (
	exitReturn = iota
	exitHelper // addr = helper id
	exitFault  // addr = address; info bits 8-15 size, bit 16 write
	exitBudget // resume = where to continue if budget remains
	exitDepth
)

// Offsets into Instance that the generated code uses.
var (
	offRegs    = int32(unsafe.Offsetof(Instance{}.regs))
	offRegions = int32(unsafe.Offsetof(Instance{}.regions))
	offBudget  = int32(unsafe.Offsetof(Instance{}.budget))
	offDepth   = int32(unsafe.Offsetof(Instance{}.depth))
	offFrames  = int32(unsafe.Offsetof(Instance{}.frames))
	offInfo    = int32(unsafe.Offsetof(Instance{}.jit) + unsafe.Offsetof(jitExit{}.info))
	offAddr    = int32(unsafe.Offsetof(Instance{}.jit) + unsafe.Offsetof(jitExit{}.addr))
	offResume  = int32(unsafe.Offsetof(Instance{}.jit) + unsafe.Offsetof(jitExit{}.resume))
	offSpill   = int32(unsafe.Offsetof(Instance{}.jit) + unsafe.Offsetof(jitExit{}.spill))
	offBP      = int32(unsafe.Offsetof(Instance{}.jit) + unsafe.Offsetof(jitExit{}.bp))
)

// Layouts the generated code indexes with scaled addressing.
const (
	regionSize = 32 // ptr, rsize, wsize, bias
	frameSize  = 48 // ret, r6..r9, r10
)

var _ = [1]struct{}{}[unsafe.Sizeof(region{})-regionSize]
var _ = [1]struct{}{}[unsafe.Offsetof(region{}.bias)-24]
var _ = [1]struct{}{}[unsafe.Sizeof(frame{})-frameSize]
var _ = [1]struct{}{}[unsafe.Offsetof(frame{}.regs)-8]
var _ = [1]struct{}{}[unsafe.Offsetof(frame{}.r10)-40]

// jitCall runs generated code: it loads r10 = m and r11 = resume and calls
// entry, which loads the BPF registers from m.regs and jumps to resume. The
// code returns after storing the registers back and setting m.jit.
//
//go:noescape
func jitCall(entry uintptr, m *Instance, resume uintptr)

// The system calls that provide code memory (replaced in tests).
var (
	jitMmap = func(size int) ([]byte, error) {
		return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	}
	jitProtect = func(mem []byte) error { return unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC) }
)

type jitCode struct {
	mem   []byte // the mapping, read+exec
	entry uintptr
	start uintptr // slot 0
}

type jitStub struct {
	label  x86.Label
	kind   uint8
	pc     int
	base   x86.Reg // fault: the address is base+off
	off    int32
	size   uint8
	write  bool
	resume x86.Label // budget, helper
	id     uint32    // helper
}

// jitCPU is what the CPU offers beyond x86-64's baseline that the JIT uses:
// BMI2's SHLX/SHRX/SARX for shifts by a register (no move to CL) and MOVBE
// for a load followed by a byte swap. Tests force the baseline.
// AVX2 makes bpfblk_memmem's search (jitMemmem) twice as wide as SSE2's.
var jitCPU = jitFeatures{
	bmi2:  cpuid.CPU.Supports(cpuid.BMI2),
	movbe: cpuid.CPU.Supports(cpuid.MOVBE),
	avx2:  cpuid.CPU.Supports(cpuid.AVX2),
}

type jitFeatures struct {
	bmi2, movbe, avx2 bool
}

type jitCompiler struct {
	cpu      jitFeatures
	a        x86.Asm
	checkAll bool // ignore the verifier's proofs
	code     []insn
	slot     []x86.Label
	stubs    []jitStub
	exit     x86.Label // store the registers and return to Go
	ret      x86.Label // return r0 from the program
	ret0     x86.Label // return 0 (legacy packet load out of bounds)
}

func (jitEngine) build(p *Program) (compiled, error) {
	code, err := compile(p.code, p.info, false)
	if err != nil {
		return nil, err
	}
	mc, start, err := jitTranslate(code, p.Checked)
	if err != nil {
		return nil, err
	}
	size := (len(mc) + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
	mem, err := jitMmap(size)
	if err != nil {
		return nil, errors.Wrapf(ErrNoExecMemory, "jit: map code memory: %v", err)
	}
	copy(mem, mc)
	for i := len(mc); i < len(mem); i++ {
		mem[i] = 0xcc // int3
	}
	if err := jitProtect(mem); err != nil {
		_ = unix.Munmap(mem)
		return nil, errors.Wrapf(ErrNoExecMemory, "jit: make code executable: %v", err)
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	c := &jitCode{mem: mem, entry: base, start: base + uintptr(start)}
	runtime.AddCleanup(c, func(m []byte) { _ = unix.Munmap(m) }, mem)
	return c, nil
}

// Exec runs the machine code, leaving it for helpers, faults and budget
// slices. Run has handed out the first slice (m.budget) and keeps the rest of
// the run's budget in m.remaining; every slice ends in m.refill, which also
// notices an interruption and lets the runtime preempt the goroutine.
func (c *jitCode) Exec(m *Instance) (uint64, error) {
	m.depth = 0
	resume := c.start
	for {
		jitCall(c.entry, m, resume)
		info := m.jit.info
		pc := int(info >> 32)
		switch info & 0xff {
		case exitReturn:
			runtime.KeepAlive(c)
			return m.regs[0], nil
		case exitHelper:
			if h := jitOnHelperExit; h != nil {
				h(uint32(m.jit.addr))
			}
			v, err := m.callHelper(pc, uint32(m.jit.addr))
			if err != nil {
				return 0, err
			}
			m.regs[0] = v
			if m.budget < 0 { // the helper charged for the bytes it read
				if err := m.refill(pc); err != nil {
					return 0, err
				}
			}
			resume = m.jit.resume
		case exitBudget:
			if err := m.refill(pc); err != nil {
				return 0, err
			}
			resume = m.jit.resume
		case exitFault:
			f := &Fault{PC: pc, Addr: m.jit.addr, Size: int(info >> 8 & 0xff), Write: info&(1<<16) != 0, What: "load"}
			if f.Write {
				f.What = "store"
			}
			return 0, f
		case exitDepth:
			return 0, errors.Wrapf(ErrCallDepth, "engine: instruction %d", pc)
		default:
			return 0, errors.Errorf("engine: jit: unknown exit %#x", info)
		}
	}
}

// jitOnHelperExit, when set (by tests), sees every helper call that JIT
// code leaves for.
var jitOnHelperExit func(id uint32)

// jitTranslate turns the pre-decoded program into machine code and returns
// it with the offset of slot 0.
func jitTranslate(code []insn, checkAll bool) ([]byte, int, error) {
	j := &jitCompiler{code: code, checkAll: checkAll, cpu: jitCPU}
	a := &j.a
	j.slot = make([]x86.Label, len(code))
	for i := range j.slot {
		j.slot[i] = a.NewLabel()
	}
	j.exit, j.ret, j.ret0 = a.NewLabel(), a.NewLabel(), a.NewLabel()

	// Entry (offset 0): keep Go's rbp, load the data region's bias into rbp
	// (the data does not change during a run; every entry, after a helper
	// too, reloads it) and the registers, continue at r11.
	a.Store(x86.W64, x86.M(jState, offBP), x86.RBP)
	a.Load(x86.W64, false, jData, x86.M(jState, offRegions+regionData*regionSize+24))
	for i, r := range jitReg {
		a.Load(x86.W64, false, r, x86.M(jState, offRegs+int32(8*i)))
	}
	a.JmpR(jTmp)
	a.Bind(j.ret0)
	a.ALURR(x86.Xor, x86.W32, x86.RAX, x86.RAX)
	a.Bind(j.ret)
	a.StoreImm(x86.W64, x86.M(jState, offInfo), exitReturn)
	a.Bind(j.exit)
	for i, r := range jitReg {
		a.Store(x86.W64, x86.M(jState, offRegs+int32(8*i)), r)
	}
	a.Load(x86.W64, false, x86.RBP, x86.M(jState, offBP))
	a.Ret()

	target := jumpTargets(code)
	for pc := 0; pc < len(code); pc++ {
		a.Bind(j.slot[pc])
		// clang's zero-extension, r <<= 32; r >>= 32, is one 32-bit move
		// when nothing jumps between the two.
		if in := &code[pc]; pc+2 < len(code) && in.op == opMov64R && in.dst != in.src && in.dst <= 10 && in.src <= 10 && !target[pc+1] && !target[pc+2] {
			if sh, nx := &code[pc+1], &code[pc+2]; sh.op == opLsh64I && uint8(sh.imm) == 32 && sh.dst == in.dst && nx.op == opRsh64I && uint8(nx.imm) == 32 && nx.dst == in.dst {
				a.MovRR(x86.W32, jitReg[in.dst], jitReg[in.src])
				a.Bind(j.slot[pc+1])
				a.Bind(j.slot[pc+2])
				pc += 2
				continue
			}
		}
		if in := &code[pc]; pc+1 < len(code) && in.op == opLsh64I && uint8(in.imm) == 32 && !target[pc+1] {
			if nx := &code[pc+1]; nx.op == opRsh64I && uint8(nx.imm) == 32 && nx.dst == in.dst && in.dst <= 10 {
				a.MovRR(x86.W32, jitReg[in.dst], jitReg[in.dst])
				pc++
				a.Bind(j.slot[pc])
				continue
			}
		}
		if pc+1 < len(code) && !target[pc+1] && j.loadSwap(pc) {
			pc++
			a.Bind(j.slot[pc])
			continue
		}
		if err := j.insn(pc); err != nil {
			return nil, 0, err
		}
	}
	// Falling off the end is impossible for verified code; trap if it happens.
	a.Int3()
	for _, s := range j.stubs {
		j.stub(s)
	}
	mc, err := a.Finish()
	if err != nil {
		return nil, 0, err
	}
	return mc, a.Offset(j.slot[0]), nil
}

// loadSwap emits an unsigned 16-, 32- or 64-bit load followed by a byte swap
// of the loaded register to the same width (ntohs, ntohl, be64toh) as one
// MOVBE, if the CPU has it, and reports whether it did.
func (j *jitCompiler) loadSwap(pc int) bool {
	in, nx := &j.code[pc], &j.code[pc+1]
	if !j.cpu.movbe || nx.dst != in.dst || in.dst > 10 || in.src > 10 {
		return false
	}
	var w x86.Width
	switch {
	case in.op == opLdxH && (nx.op == opBe16 || nx.op == opBswap16):
		w = x86.W16
	case in.op == opLdxW && (nx.op == opBe32 || nx.op == opBswap32):
		w = x86.W32
	case in.op == opLdxDW && (nx.op == opBe64 || nx.op == opBswap64):
		w = x86.W64
	default:
		return false
	}
	dst := jitReg[in.dst]
	j.a.Movbe(w, dst, j.access(pc, in, jitReg[in.src], 1<<w, false))
	if w == x86.W16 {
		j.a.Movzx16(dst, dst)
	}
	return true
}

// jumpTargets marks the slots that jumps and local calls land on.
func jumpTargets(code []insn) []bool {
	t := make([]bool, len(code))
	for _, in := range code {
		switch {
		case in.op == opJa || in.op == opCallLocal || in.op >= opJeq64I && in.op <= opJsle32R:
			if in.off >= 0 && int(in.off) < len(code) {
				t[in.off] = true
			}
		}
	}
	return t
}

func (j *jitCompiler) newStub(s jitStub) x86.Label {
	s.label = j.a.NewLabel()
	j.stubs = append(j.stubs, s)
	return s.label
}

func (j *jitCompiler) setInfo(v uint64) {
	j.a.MovRI(jTmp, v)
	j.a.Store(x86.W64, x86.M(jState, offInfo), jTmp)
}

func (j *jitCompiler) stub(s jitStub) {
	a := &j.a
	a.Bind(s.label)
	switch s.kind {
	case exitFault:
		a.Lea(jTmp, x86.M(s.base, s.off))
		a.Store(x86.W64, x86.M(jState, offAddr), jTmp)
		w := uint64(0)
		if s.write {
			w = 1 << 16
		}
		j.setInfo(exitFault | uint64(s.size)<<8 | w | uint64(s.pc)<<32)
	case exitBudget:
		a.LeaLabel(jTmp, s.resume)
		a.Store(x86.W64, x86.M(jState, offResume), jTmp)
		j.setInfo(exitBudget | uint64(s.pc)<<32)
	case exitDepth:
		j.setInfo(exitDepth | uint64(s.pc)<<32)
	case exitHelper:
		j.helperExit(s.pc, s.id, s.resume)
		return
	}
	a.Jmp(j.exit)
}

// checked computes the host address of an n-byte access at base+off into r11
// (pointing just past the access), or leaves through a fault stub.
func (j *jitCompiler) checked(pc int, base x86.Reg, off int32, n uint8, write bool) {
	a := &j.a
	fault := j.newStub(jitStub{kind: exitFault, pc: pc, base: base, off: off, size: n, write: write})
	limit := offRegions + 8 // rsize
	if write {
		limit = offRegions + 16 // wsize
	}
	a.Lea(jTmp, x86.M(base, off))
	a.MovRR(x86.W64, jCnt, jTmp)
	a.ShiftRI(x86.Shr, x86.W64, jCnt, 32)
	a.ALURI(x86.Cmp, x86.W64, jCnt, maxRegions-1)
	a.Jcc(x86.CondA, fault)
	a.ShiftRI(x86.Shl, x86.W64, jCnt, 5) // region index * regionSize
	a.MovRR(x86.W32, jTmp, jTmp)         // offset within the region
	a.ALURI(x86.Add, x86.W64, jTmp, int32(n))
	a.ALURM(x86.Cmp, x86.W64, jTmp, x86.MI(jState, jCnt, 1, limit))
	a.Jcc(x86.CondA, fault)
	a.ALURM(x86.Add, x86.W64, jTmp, x86.MI(jState, jCnt, 1, offRegions))
}

// access returns the memory operand of an n-byte access at base+off by the
// instruction in: for an access the verifier proved inside region in.rgn,
// [bias + base + off] with the region's bias (host pointer - index<<32)
// loaded into r11, no check; otherwise the checked address.
func (j *jitCompiler) access(pc int, in *insn, base x86.Reg, n uint8, write bool) x86.Mem {
	if in.rgn == regionData && !j.checkAll {
		return x86.MI(jData, base, 1, in.off)
	}
	if in.rgn != 0 && !j.checkAll {
		j.a.Load(x86.W64, false, jTmp, x86.M(jState, offRegions+int32(in.rgn)*regionSize+24))
		return x86.MI(jTmp, base, 1, in.off)
	}
	j.checked(pc, base, in.off, n, write)
	return x86.M(jTmp, -int32(n))
}

// jump emits a conditional (cond != nil) or unconditional jump from slot pc
// to t; a backward jump charges the budget like the interpreter does.
func (j *jitCompiler) jump(pc, t int, cond *x86.Cond) {
	a := &j.a
	if t > pc {
		if cond != nil {
			a.Jcc(*cond, j.slot[t])
		} else {
			a.Jmp(j.slot[t])
		}
		return
	}
	skip := a.NewLabel()
	if cond != nil {
		a.Jcc(cond.Not(), skip)
	}
	over := j.newStub(jitStub{kind: exitBudget, pc: pc, resume: j.slot[t]})
	a.ALUMI(x86.Sub, x86.W64, x86.M(jState, offBudget), int32(pc+1-t))
	a.Jcc(x86.CondGE, j.slot[t])
	a.Jmp(over)
	a.Bind(skip)
}

var jitALU = map[uint8]x86.ALU{
	opAdd64I: x86.Add, opSub64I: x86.Sub, opOr64I: x86.Or, opAnd64I: x86.And, opXor64I: x86.Xor,
	opAdd32I: x86.Add, opSub32I: x86.Sub, opOr32I: x86.Or, opAnd32I: x86.And, opXor32I: x86.Xor,
}

var jitShift = map[uint8]x86.Shift{
	opLsh64I: x86.Shl, opRsh64I: x86.Shr, opArsh64I: x86.Sar,
	opLsh32I: x86.Shl, opRsh32I: x86.Shr, opArsh32I: x86.Sar,
}

// Jump conditions, indexed by (op - opJeq64I) / 2 (the same for 32-bit).
var jitCond = [...]x86.Cond{
	x86.CondE,  // jeq
	x86.CondA,  // jgt
	x86.CondAE, // jge
	x86.CondNE, // jset (after test)
	x86.CondNE, // jne
	x86.CondG,  // jsgt
	x86.CondGE, // jsge
	x86.CondB,  // jlt
	x86.CondBE, // jle
	x86.CondL,  // jslt
	x86.CondLE, // jsle
}

func (j *jitCompiler) insn(pc int) error {
	a := &j.a
	in := &j.code[pc]
	if in.dst > 10 || in.src > 10 {
		return errors.Errorf("jit: instruction %d: register out of range", pc)
	}
	dst, src := jitReg[in.dst], jitReg[in.src]
	op := in.op
	switch {
	case op == opHalf:
		return nil
	case op >= opAdd64I && op <= opArsh32R && op != opNeg64 && !(op >= opMovSX8to64 && op <= opBswap64):
		return j.alu(pc, in, dst, src)
	case op >= opJeq64I && op <= opJsle32R:
		w := x86.W64
		base := opJeq64I
		if op >= opJeq32I {
			w, base = x86.W32, opJeq32I
		}
		k := (op - base) / 2
		reg := (op-base)%2 == 1
		isSet := k == 3
		switch {
		case isSet && reg:
			a.TestRR(w, dst, src)
		case isSet:
			a.TestRI(w, dst, int32(in.imm))
		case reg:
			a.ALURR(x86.Cmp, w, dst, src)
		case int32(in.imm) == 0:
			a.TestRR(w, dst, dst) // the same flags as cmp $0, shorter
		default:
			a.ALURI(x86.Cmp, w, dst, int32(in.imm))
		}
		c := jitCond[k]
		j.jump(pc, int(in.off), &c)
		return nil
	}
	switch op {
	case opNeg64:
		a.Neg(x86.W64, dst)
	case opNeg32:
		a.Neg(x86.W32, dst)
	case opMovSX8to32:
		a.Movsx(x86.W32, x86.W8, dst, src)
	case opMovSX16to32:
		a.Movsx(x86.W32, x86.W16, dst, src)
	case opMovSX8to64:
		a.Movsx(x86.W64, x86.W8, dst, src)
	case opMovSX16to64:
		a.Movsx(x86.W64, x86.W16, dst, src)
	case opMovSX32to64:
		a.Movsx(x86.W64, x86.W32, dst, src)
	case opBswap16, opBe16:
		a.Bswap(x86.W32, dst)
		a.ShiftRI(x86.Shr, x86.W32, dst, 16)
	case opBswap32, opBe32:
		a.Bswap(x86.W32, dst)
	case opBswap64, opBe64:
		a.Bswap(x86.W64, dst)
	case opLe16:
		a.Movzx16(dst, dst)
	case opLe32:
		a.MovRR(x86.W32, dst, dst)
	case opLe64:
	case opJa:
		j.jump(pc, int(in.off), nil)
	case opCall:
		resume := a.NewLabel()
		if in.imm == abi.HelperMemmem && jitNativeMemmem {
			j.nativeMemmem(pc, resume)
			a.Bind(resume)
			return nil
		}
		j.helperExit(pc, uint32(in.imm), resume)
		a.Bind(resume)
	case opCallLocal:
		j.callLocal(pc, int(in.off), in.imm)
	case opExit:
		j.exitInsn()
	case opLoadImm64:
		a.MovRI(dst, in.imm)
	case opLdxB, opLdxH, opLdxW, opLdxDW, opLdxSB, opLdxSH, opLdxSW:
		signed := op >= opLdxSB
		w := x86.Width(op - opLdxB)
		if signed {
			w = x86.Width(op - opLdxSB)
		}
		n := uint8(1) << w
		a.Load(w, signed, dst, j.access(pc, in, src, n, false))
	case opStB, opStH, opStW, opStDW:
		w := x86.Width(op - opStB)
		n := uint8(1) << w
		a.StoreImm(w, j.access(pc, in, dst, n, true), int32(in.imm))
	case opStxB, opStxH, opStxW, opStxDW:
		w := x86.Width(op - opStxB)
		n := uint8(1) << w
		a.Store(w, j.access(pc, in, dst, n, true), src)
	case opAtomic32, opAtomic64:
		return j.atomic(pc, in, dst, src)
	case opLdAbsB, opLdAbsH, opLdAbsW, opLdIndB, opLdIndH, opLdIndW:
		j.packetLoad(in, src)
	case opLdCtxData:
		a.MovRI(dst, regionAddr(regionData, 0))
	case opLdCtxDataEnd:
		a.Load(x86.W64, false, dst, x86.M(jState, offRegions+regionData*regionSize+8))
		a.MovRI(jTmp, regionAddr(regionData, 0))
		a.ALURR(x86.Or, x86.W64, dst, jTmp)
	default:
		return errors.Errorf("jit: instruction %d: unsupported internal opcode %d", pc, op)
	}
	return nil
}

func (j *jitCompiler) alu(pc int, in *insn, dst, src x86.Reg) error {
	a := &j.a
	op := in.op
	w := x86.W64
	if op >= opAdd32I {
		w = x86.W32
	}
	reg := (op-opAdd64I)%2 == 1
	if w == x86.W32 {
		reg = (op-opAdd32I)%2 == 1
	}
	ibase := op
	if reg {
		ibase--
	}
	imm := int32(in.imm) // ALU64: sign-extended 32-bit; ALU32: the 32 bits
	switch ibase {
	case opAdd64I, opSub64I, opOr64I, opAnd64I, opXor64I, opAdd32I, opSub32I, opOr32I, opAnd32I, opXor32I:
		if reg {
			a.ALURR(jitALU[ibase], w, dst, src)
		} else {
			a.ALURI(jitALU[ibase], w, dst, imm)
		}
	case opMov64I, opMov32I:
		switch {
		case reg:
			a.MovRR(w, dst, src)
		case w == x86.W32:
			a.MovRI32(dst, uint32(imm))
		default:
			a.MovRI(dst, in.imm)
		}
	case opMul64I, opMul32I:
		if reg {
			a.ImulRR(w, dst, src)
		} else {
			a.ImulRI(w, dst, imm)
		}
	case opLsh64I, opRsh64I, opArsh64I, opLsh32I, opRsh32I, opArsh32I:
		mask := uint8(63)
		if w == x86.W32 {
			mask = 31
		}
		switch {
		case reg && j.cpu.bmi2:
			a.ShiftX(jitShift[ibase], w, dst, dst, src)
		case reg:
			a.MovRR(x86.W64, jCnt, src)
			a.ShiftRCL(jitShift[ibase], w, dst)
		case uint8(in.imm)&mask == 0:
			if w == x86.W32 {
				a.MovRR(x86.W32, dst, dst) // a 32-bit op still zero-extends
			}
		default:
			a.ShiftRI(jitShift[ibase], w, dst, uint8(in.imm)&mask)
		}
	case opDiv64I, opMod64I, opSDiv64I, opSMod64I, opDiv32I, opMod32I, opSDiv32I, opSMod32I:
		j.div(in, ibase, w, reg, dst, src)
	default:
		return errors.Errorf("jit: instruction %d: unsupported ALU op %d", pc, op)
	}
	return nil
}

// div emits DIV/MOD/SDIV/SMOD with the RFC's edge cases: x / 0 = 0,
// x % 0 = x (32-bit: zero-extended), INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0.
// rax and rdx hold r0 and r3, so they are saved around the divide.
func (j *jitCompiler) div(in *insn, ibase uint8, w x86.Width, reg bool, dst, src x86.Reg) {
	a := &j.a
	signed := ibase == opSDiv64I || ibase == opSMod64I || ibase == opSDiv32I || ibase == opSMod32I
	mod := ibase == opMod64I || ibase == opSMod64I || ibase == opMod32I || ibase == opSMod32I
	zero := func() { // divisor 0
		switch {
		case !mod:
			a.MovRI32(dst, 0)
		case w == x86.W32:
			a.MovRR(x86.W32, dst, dst)
		}
	}
	minus1 := func() { // signed divisor -1
		if mod {
			a.MovRI32(dst, 0)
		} else {
			a.Neg(w, dst)
		}
	}
	done := a.NewLabel()
	if reg {
		a.MovRR(x86.W64, jCnt, src)
		isZero := a.NewLabel()
		a.TestRR(w, jCnt, jCnt)
		a.Jcc(x86.CondE, isZero)
		if signed {
			isM1 := a.NewLabel()
			a.ALURI(x86.Cmp, w, jCnt, -1)
			a.Jcc(x86.CondE, isM1)
			j.divide(w, signed, mod, dst)
			a.Jmp(done)
			a.Bind(isM1)
			minus1()
			a.Jmp(done)
		} else {
			j.divide(w, signed, mod, dst)
			a.Jmp(done)
		}
		a.Bind(isZero)
		zero()
		a.Bind(done)
		return
	}
	d := in.imm
	if w == x86.W32 {
		d = uint64(uint32(d))
	}
	switch {
	case d == 0:
		zero()
	case signed && (w == x86.W64 && d == ^uint64(0) || w == x86.W32 && d == 0xffff_ffff):
		minus1()
	default:
		if w == x86.W64 {
			a.MovRI(jCnt, d)
		} else {
			a.MovRI32(jCnt, uint32(d))
		}
		j.divide(w, signed, mod, dst)
	}
	a.Bind(done)
}

// divide computes dst (op) rcx, rcx neither 0 nor (signed) -1.
func (j *jitCompiler) divide(w x86.Width, signed, mod bool, dst x86.Reg) {
	a := &j.a
	a.Store(x86.W64, x86.M(jState, offSpill), x86.RAX)
	a.Store(x86.W64, x86.M(jState, offSpill+8), x86.RDX)
	a.MovRR(w, x86.RAX, dst)
	if signed {
		a.SignExtendAX(w)
		a.Idiv(w, jCnt)
	} else {
		a.ALURR(x86.Xor, x86.W32, x86.RDX, x86.RDX)
		a.Div(w, jCnt)
	}
	res := x86.RAX
	if mod {
		res = x86.RDX
	}
	a.MovRR(w, jTmp, res) // W32 zero-extends
	a.Load(x86.W64, false, x86.RAX, x86.M(jState, offSpill))
	a.Load(x86.W64, false, x86.RDX, x86.M(jState, offSpill+8))
	a.MovRR(x86.W64, dst, jTmp)
}

func (j *jitCompiler) atomic(pc int, in *insn, dst, src x86.Reg) error {
	a := &j.a
	w, n := x86.W64, uint8(8)
	if in.op == opAtomic32 {
		w, n = x86.W32, 4
	}
	m := j.access(pc, in, dst, n, true)
	switch in.imm {
	case atomicXchg:
		a.Load(w, false, jCnt, m)
		a.Store(w, m, src)
		a.MovRR(w, src, jCnt)
		return nil
	case atomicCmpXchg:
		a.Cmpxchg(w, m, src)
		if w == x86.W32 {
			a.MovRR(x86.W32, x86.RAX, x86.RAX)
		}
		return nil
	}
	var op x86.ALU
	switch in.imm &^ atomicFetch {
	case 0x00:
		op = x86.Add
	case 0x40:
		op = x86.Or
	case 0x50:
		op = x86.And
	case 0xa0:
		op = x86.Xor
	default:
		return errors.Errorf("jit: instruction %d: unsupported atomic operation %#x", pc, in.imm)
	}
	fetch := in.imm&atomicFetch != 0
	if fetch {
		a.Load(w, false, jCnt, m)
	}
	a.ALUMR(op, w, m, src)
	if fetch {
		a.MovRR(w, src, jCnt)
	}
	return nil
}

// packetLoad is the legacy BPF_ABS/BPF_IND load: r0 = big-endian data at
// imm (+ src, 32-bit), or the program returns 0 when that is out of bounds.
func (j *jitCompiler) packetLoad(in *insn, src x86.Reg) {
	a := &j.a
	n := int32(1) << ((in.op - opLdAbsB) % 3)
	if in.op >= opLdIndB {
		a.MovRR(x86.W32, jTmp, src)
		a.ALURI(x86.Add, x86.W32, jTmp, int32(in.imm))
		a.Movsx(x86.W64, x86.W32, jTmp, jTmp)
	} else {
		a.MovRI(jTmp, uint64(int64(int32(in.imm))))
	}
	a.TestRR(x86.W64, jTmp, jTmp)
	a.Jcc(x86.CondS, j.ret0)
	a.Lea(jCnt, x86.M(jTmp, n))
	a.ALURM(x86.Cmp, x86.W64, jCnt, x86.M(jState, offRegions+regionData*regionSize+8))
	a.Jcc(x86.CondA, j.ret0)
	a.Load(x86.W64, false, jCnt, x86.M(jState, offRegions+regionData*regionSize))
	m := x86.MI(jCnt, jTmp, 1, 0)
	switch n {
	case 1:
		a.Load(x86.W8, false, x86.RAX, m)
	case 2:
		a.Load(x86.W16, false, x86.RAX, m)
		a.ShiftRI(x86.Rol, x86.W16, x86.RAX, 8)
	case 4:
		if j.cpu.movbe {
			a.Movbe(x86.W32, x86.RAX, m)
			return
		}
		a.Load(x86.W32, false, x86.RAX, m)
		a.Bswap(x86.W32, x86.RAX)
	}
}

// helperExit leaves the code for Go to run helper id (Instance.callHelper),
// which continues at resume.
func (j *jitCompiler) helperExit(pc int, id uint32, resume x86.Label) {
	a := &j.a
	j.setInfo(exitHelper | uint64(pc)<<32)
	a.MovRI(jTmp, uint64(id))
	a.Store(x86.W64, x86.M(jState, offAddr), jTmp)
	a.LeaLabel(jTmp, resume)
	a.Store(x86.W64, x86.M(jState, offResume), jTmp)
	a.Jmp(j.exit)
}

// nativeMemmem calls jitMemmem for bpfblk_memmem, without leaving the code.
// When it did the search (rcx = 0), r0 holds the result and the budget is
// charged; a spent slice goes out to refill, as after a helper run from Go.
// Otherwise (rcx = 1) the helper's Go path runs it, out of line.
func (j *jitCompiler) nativeMemmem(pc int, resume x86.Label) {
	a := &j.a
	mode := uint32(0)
	if j.cpu.avx2 {
		mode = 1
	}
	a.MovRI32(jCnt, mode)
	a.MovRI(jTmp, uint64(jitMemmemPC()))
	a.CallR(jTmp)
	a.TestRR(x86.W32, jCnt, jCnt)
	a.Jcc(x86.CondNE, j.newStub(jitStub{kind: exitHelper, pc: pc, id: abi.HelperMemmem, resume: resume}))
	a.ALUMI(x86.Cmp, x86.W64, x86.M(jState, offBudget), 0)
	a.Jcc(x86.CondL, j.newStub(jitStub{kind: exitBudget, pc: pc, resume: resume}))
}

// callLocal pushes a frame (return address, r6-r9, r10) into m.frames,
// charges cost (the callee's length) and jumps to the callee with a fresh
// stack frame.
func (j *jitCompiler) callLocal(pc, target int, cost uint64) {
	a := &j.a
	a.Load(x86.W64, false, jCnt, x86.M(jState, offDepth))
	a.ALURI(x86.Cmp, x86.W64, jCnt, abi.MaxFrames-1)
	a.Jcc(x86.CondAE, j.newStub(jitStub{kind: exitDepth, pc: pc}))
	a.Load(x86.W64, false, jCnt, x86.M(jState, offDepth))
	a.Lea(jTmp, x86.M(jCnt, 1))
	a.Store(x86.W64, x86.M(jState, offDepth), jTmp)
	a.Lea(jCnt, x86.MI(jCnt, jCnt, 2, 0))
	a.ShiftRI(x86.Shl, x86.W64, jCnt, 4) // depth * 48
	back := a.NewLabel()
	a.LeaLabel(jTmp, back)
	a.Store(x86.W64, x86.MI(jState, jCnt, 1, offFrames), jTmp)
	for i := 0; i < 5; i++ {
		a.Store(x86.W64, x86.MI(jState, jCnt, 1, offFrames+8+int32(8*i)), jitReg[6+i])
	}
	a.ALURI(x86.Sub, x86.W64, jitReg[10], abi.StackSize)
	// Charge the callee's length (see Exec and the interpreter), with the
	// frame pushed: a new slice resumes at the callee.
	a.ALUMI(x86.Sub, x86.W64, x86.M(jState, offBudget), int32(cost))
	a.Jcc(x86.CondL, j.newStub(jitStub{kind: exitBudget, pc: pc, resume: j.slot[target]}))
	a.Jmp(j.slot[target])
	a.Bind(back)
}

// exitInsn returns from a local call, or from the program at depth 0.
func (j *jitCompiler) exitInsn() {
	a := &j.a
	a.Load(x86.W64, false, jCnt, x86.M(jState, offDepth))
	a.TestRR(x86.W64, jCnt, jCnt)
	a.Jcc(x86.CondE, j.ret)
	a.ALURI(x86.Sub, x86.W64, jCnt, 1)
	a.Store(x86.W64, x86.M(jState, offDepth), jCnt)
	a.Lea(jCnt, x86.MI(jCnt, jCnt, 2, 0))
	a.ShiftRI(x86.Shl, x86.W64, jCnt, 4)
	for i := 0; i < 5; i++ {
		a.Load(x86.W64, false, jitReg[6+i], x86.MI(jState, jCnt, 1, offFrames+8+int32(8*i)))
	}
	a.JmpM(x86.MI(jState, jCnt, 1, offFrames))
}
