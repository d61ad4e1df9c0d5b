// Package amd64 is a small x86-64 machine-code assembler: the instructions the
// eBPF JIT needs, register and memory operands, labels and rel32 fixups.
//
// It encodes; it does not decide. Every method appends one instruction to the
// buffer. Jumps are always rel32, so code size does not depend on label
// distances and one pass plus fixups suffices.
package amd64

import (
	"encoding/binary"
	"fmt"
)

// Reg is a general-purpose register, numbered as in the instruction encoding.
type Reg uint8

// The general-purpose registers.
const (
	RAX Reg = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

var regNames = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

func (r Reg) String() string { return regNames[r&15] }

// Cond is a condition code (the low nibble of Jcc).
type Cond uint8

// Condition codes.
const (
	CondO  Cond = 0x0
	CondNO Cond = 0x1
	CondB  Cond = 0x2 // unsigned <
	CondAE Cond = 0x3 // unsigned >=
	CondE  Cond = 0x4
	CondNE Cond = 0x5
	CondBE Cond = 0x6 // unsigned <=
	CondA  Cond = 0x7 // unsigned >
	CondS  Cond = 0x8
	CondNS Cond = 0x9
	CondL  Cond = 0xc // signed <
	CondGE Cond = 0xd // signed >=
	CondLE Cond = 0xe // signed <=
	CondG  Cond = 0xf // signed >
)

// Not returns the inverse condition.
func (c Cond) Not() Cond { return c ^ 1 }

// Width is an operand size.
type Width uint8

// Operand sizes.
const (
	W8 Width = iota
	W16
	W32
	W64
)

// Mem is a memory operand: [Base + Index*Scale + Disp]. Scale 0 means no
// index.
type Mem struct {
	Base  Reg
	Index Reg
	Scale uint8 // 0 (no index), 1, 2, 4 or 8
	Disp  int32
}

// M is [base + disp].
func M(base Reg, disp int32) Mem { return Mem{Base: base, Disp: disp} }

// MI is [base + index*scale + disp].
func MI(base, index Reg, scale uint8, disp int32) Mem {
	return Mem{Base: base, Index: index, Scale: scale, Disp: disp}
}

// Label names a code position, bound once with Bind.
type Label int

type fixup struct {
	at    int // offset of the rel32 field
	label Label
}

// Asm accumulates machine code.
type Asm struct {
	buf    []byte
	labels []int // code offset per label, -1 while unbound
	fixups []fixup
}

// NewLabel returns a fresh unbound label.
func (a *Asm) NewLabel() Label {
	a.labels = append(a.labels, -1)
	return Label(len(a.labels) - 1)
}

// Bind binds l to the current position.
func (a *Asm) Bind(l Label) { a.labels[l] = len(a.buf) }

// Offset returns the code offset of a bound label, or -1.
func (a *Asm) Offset(l Label) int { return a.labels[l] }

// Finish resolves every label reference and returns the code.
func (a *Asm) Finish() ([]byte, error) {
	for _, f := range a.fixups {
		t := a.labels[f.label]
		if t < 0 {
			return nil, fmt.Errorf("amd64: label %d referenced but never bound", f.label)
		}
		rel := int64(t) - int64(f.at+4)
		binary.LittleEndian.PutUint32(a.buf[f.at:], uint32(int32(rel)))
	}
	return a.buf, nil
}

func (a *Asm) b(bs ...byte) { a.buf = append(a.buf, bs...) }

func (a *Asm) u32(v uint32) { a.buf = binary.LittleEndian.AppendUint32(a.buf, v) }

// prefix flags of one instruction.
type pfx uint8

const (
	pW      pfx = 1 << iota // REX.W
	p66                     // operand-size prefix
	pByteR                  // the ModRM reg field is a byte register
	pByteRM                 // the ModRM rm field is a byte register
)

func (a *Asm) rex(p pfx, reg, index, base Reg, regIsByte, rmIsByte bool) {
	v := byte(0x40)
	if p&pW != 0 {
		v |= 8
	}
	if reg&8 != 0 {
		v |= 4
	}
	if index&8 != 0 {
		v |= 2
	}
	if base&8 != 0 {
		v |= 1
	}
	// spl, bpl, sil and dil as byte registers exist only with a REX prefix.
	force := (regIsByte && reg >= 4 && reg < 8) || (rmIsByte && base >= 4 && base < 8)
	if v != 0x40 || force {
		a.b(v)
	}
}

// rr emits an instruction with a register-direct ModRM: reg is the reg field
// (a register or an opcode extension), rm the register operand.
func (a *Asm) rr(p pfx, opc []byte, reg, rm Reg) {
	if p&p66 != 0 {
		a.b(0x66)
	}
	a.rex(p, reg, 0, rm, p&pByteR != 0, p&pByteRM != 0)
	a.b(opc...)
	a.b(0xc0 | byte(reg&7)<<3 | byte(rm&7))
}

// rm emits an instruction with a memory ModRM operand.
func (a *Asm) rm(p pfx, opc []byte, reg Reg, m Mem) {
	if p&p66 != 0 {
		a.b(0x66)
	}
	idx := Reg(0)
	if m.Scale != 0 {
		idx = m.Index
	}
	a.rex(p, reg, idx, m.Base, p&pByteR != 0, false)
	a.b(opc...)
	a.modrmMem(reg, m)
}

func (a *Asm) modrmMem(reg Reg, m Mem) {
	var mod byte
	switch {
	case m.Disp == 0 && m.Base&7 != 5: // rbp/r13 need an explicit displacement
		mod = 0
	case m.Disp >= -128 && m.Disp <= 127:
		mod = 1
	default:
		mod = 2
	}
	r := byte(reg&7) << 3
	if m.Scale != 0 || m.Base&7 == 4 { // rsp/r12 as base need a SIB byte
		idx, ss := byte(4), byte(0) // index 100 = none
		if m.Scale != 0 {
			if m.Index == RSP {
				panic("amd64: rsp cannot be an index")
			}
			idx = byte(m.Index & 7)
			ss = map[uint8]byte{1: 0, 2: 1, 4: 2, 8: 3}[m.Scale]
		}
		a.b(mod<<6|r|4, ss<<6|idx<<3|byte(m.Base&7))
	} else {
		a.b(mod<<6 | r | byte(m.Base&7))
	}
	switch mod {
	case 1:
		a.b(byte(int8(m.Disp)))
	case 2:
		a.u32(uint32(m.Disp))
	}
}

func wpfx(w Width) pfx {
	switch w {
	case W64:
		return pW
	case W16:
		return p66
	}
	return 0
}

// ALU is a two-operand arithmetic or logic operation of the 0x01..0x39 group.
type ALU uint8

// The ALU group; the value is the /digit of the immediate form.
const (
	Add ALU = 0
	Or  ALU = 1
	And ALU = 4
	Sub ALU = 5
	Xor ALU = 6
	Cmp ALU = 7
)

// ALURR is dst op= src (32 or 64 bits; 32-bit results zero-extend).
func (a *Asm) ALURR(op ALU, w Width, dst, src Reg) {
	a.rr(wpfx(w), []byte{byte(op)<<3 | 1}, src, dst)
}

// ALURI is dst op= imm (sign-extended to 64 bits for W64).
func (a *Asm) ALURI(op ALU, w Width, dst Reg, imm int32) {
	a.aluImm(imm, func(opc byte) { a.rr(wpfx(w), []byte{opc}, Reg(op), dst) })
}

// ALURM is dst op= [m].
func (a *Asm) ALURM(op ALU, w Width, dst Reg, m Mem) {
	a.rm(wpfx(w), []byte{byte(op)<<3 | 3}, dst, m)
}

// ALUMI is [m] op= imm (W32 or W64).
func (a *Asm) ALUMI(op ALU, w Width, m Mem, imm int32) {
	a.aluImm(imm, func(opc byte) { a.rm(wpfx(w), []byte{opc}, Reg(op), m) })
}

// aluImm emits the immediate form of an ALU operation through emit (which
// writes the prefixes, the given opcode and the ModRM): 0x83 with an imm8
// when the value fits, else 0x81 with an imm32.
func (a *Asm) aluImm(imm int32, emit func(opc byte)) {
	if imm >= -128 && imm <= 127 {
		emit(0x83)
		a.b(byte(int8(imm)))
		return
	}
	emit(0x81)
	a.u32(uint32(imm))
}

// ALUMR is [m] op= src, for W8..W64.
func (a *Asm) ALUMR(op ALU, w Width, m Mem, src Reg) {
	opc := byte(op)<<3 | 1
	p := wpfx(w)
	if w == W8 {
		opc--
		p |= pByteR
	}
	a.rm(p, []byte{opc}, src, m)
}

// TestRR sets flags from dst & src.
func (a *Asm) TestRR(w Width, dst, src Reg) { a.rr(wpfx(w), []byte{0x85}, src, dst) }

// TestRI sets flags from dst & imm (sign-extended for W64).
func (a *Asm) TestRI(w Width, dst Reg, imm int32) {
	a.rr(wpfx(w), []byte{0xf7}, 0, dst)
	a.u32(uint32(imm))
}

// MovRR is dst = src (a W32 move zero-extends).
func (a *Asm) MovRR(w Width, dst, src Reg) { a.rr(wpfx(w), []byte{0x89}, src, dst) }

// MovRI32 is dst = uint32(imm), zero-extended.
func (a *Asm) MovRI32(dst Reg, imm uint32) {
	a.rex(0, 0, 0, dst, false, false)
	a.b(0xb8 + byte(dst&7))
	a.u32(imm)
}

// MovRI is dst = v, with the shortest encoding.
func (a *Asm) MovRI(dst Reg, v uint64) {
	switch {
	case v <= 0xffff_ffff:
		a.MovRI32(dst, uint32(v))
	case int64(v) >= -1<<31 && int64(v) < 1<<31:
		a.rr(pW, []byte{0xc7}, 0, dst)
		a.u32(uint32(v))
	default:
		a.rex(pW, 0, 0, dst, false, false)
		a.b(0xb8 + byte(dst&7))
		a.buf = binary.LittleEndian.AppendUint64(a.buf, v)
	}
}

// Load is dst = [m] of width w, zero-extended (or sign-extended to 64 bits
// when signed).
func (a *Asm) Load(w Width, signed bool, dst Reg, m Mem) {
	switch {
	case w == W8 && !signed:
		a.rm(0, []byte{0x0f, 0xb6}, dst, m)
	case w == W16 && !signed:
		a.rm(0, []byte{0x0f, 0xb7}, dst, m)
	case w == W32 && !signed:
		a.rm(0, []byte{0x8b}, dst, m)
	case w == W64:
		a.rm(pW, []byte{0x8b}, dst, m)
	case w == W8:
		a.rm(pW, []byte{0x0f, 0xbe}, dst, m)
	case w == W16:
		a.rm(pW, []byte{0x0f, 0xbf}, dst, m)
	default: // W32 signed
		a.rm(pW, []byte{0x63}, dst, m)
	}
}

// Store is [m] = src of width w.
func (a *Asm) Store(w Width, m Mem, src Reg) {
	switch w {
	case W8:
		a.rm(pByteR, []byte{0x88}, src, m)
	default:
		a.rm(wpfx(w), []byte{0x89}, src, m)
	}
}

// StoreImm is [m] = imm of width w (sign-extended for W64).
func (a *Asm) StoreImm(w Width, m Mem, imm int32) {
	switch w {
	case W8:
		a.rm(0, []byte{0xc6}, 0, m)
		a.b(byte(imm))
	case W16:
		a.rm(p66, []byte{0xc7}, 0, m)
		a.b(byte(imm), byte(imm>>8))
	default:
		a.rm(wpfx(w), []byte{0xc7}, 0, m)
		a.u32(uint32(imm))
	}
}

// Lea is dst = address of m (64-bit).
func (a *Asm) Lea(dst Reg, m Mem) { a.rm(pW, []byte{0x8d}, dst, m) }

// LeaLabel is dst = address of label l (RIP-relative).
func (a *Asm) LeaLabel(dst Reg, l Label) {
	a.rex(pW, dst, 0, 0, false, false)
	a.b(0x8d, 0x05|byte(dst&7)<<3)
	a.fixups = append(a.fixups, fixup{at: len(a.buf), label: l})
	a.u32(0)
}

// ImulRR is dst *= src.
func (a *Asm) ImulRR(w Width, dst, src Reg) { a.rr(wpfx(w), []byte{0x0f, 0xaf}, dst, src) }

// ImulRI is dst *= imm (sign-extended).
func (a *Asm) ImulRI(w Width, dst Reg, imm int32) {
	a.rr(wpfx(w), []byte{0x69}, dst, dst)
	a.u32(uint32(imm))
}

// Shift is a shift or rotate operation (the /digit of the C1/D3 group).
type Shift uint8

// Shifts.
const (
	Rol Shift = 0
	Shl Shift = 4
	Shr Shift = 5
	Sar Shift = 7
)

// ShiftRI shifts dst by an immediate count.
func (a *Asm) ShiftRI(op Shift, w Width, dst Reg, n uint8) {
	a.rr(wpfx(w), []byte{0xc1}, Reg(op), dst)
	a.b(n)
}

// ShiftRCL shifts dst by CL.
func (a *Asm) ShiftRCL(op Shift, w Width, dst Reg) { a.rr(wpfx(w), []byte{0xd3}, Reg(op), dst) }

// Neg is dst = -dst.
func (a *Asm) Neg(w Width, dst Reg) { a.rr(wpfx(w), []byte{0xf7}, 3, dst) }

// Div is the unsigned rdx:rax / src (edx:eax for W32).
func (a *Asm) Div(w Width, src Reg) { a.rr(wpfx(w), []byte{0xf7}, 6, src) }

// Idiv is the signed rdx:rax / src (edx:eax for W32).
func (a *Asm) Idiv(w Width, src Reg) { a.rr(wpfx(w), []byte{0xf7}, 7, src) }

// SignExtendAX is cqo (W64) or cdq (W32).
func (a *Asm) SignExtendAX(w Width) {
	if w == W64 {
		a.b(0x48)
	}
	a.b(0x99)
}

// Movsx is dst = sign-extend(src of width from) into 32 or 64 bits.
func (a *Asm) Movsx(to, from Width, dst, src Reg) {
	p := pfx(0)
	if to == W64 {
		p = pW
	}
	switch from {
	case W8:
		a.rr(p|pByteRM, []byte{0x0f, 0xbe}, dst, src)
	case W16:
		a.rr(p, []byte{0x0f, 0xbf}, dst, src)
	default:
		a.rr(pW, []byte{0x63}, dst, src)
	}
}

// Movzx16 is dst = zero-extend(src's low 16 bits).
func (a *Asm) Movzx16(dst, src Reg) { a.rr(0, []byte{0x0f, 0xb7}, dst, src) }

// Bswap reverses the bytes of dst (W32 zero-extends).
func (a *Asm) Bswap(w Width, dst Reg) {
	a.rex(wpfx(w)&pW, 0, 0, dst, false, false)
	a.b(0x0f, 0xc8+byte(dst&7))
}

// Cmpxchg compares rax (eax) with [m]; if equal [m] = src, else rax = [m].
func (a *Asm) Cmpxchg(w Width, m Mem, src Reg) { a.rm(wpfx(w), []byte{0x0f, 0xb1}, src, m) }

// Jcc jumps to l when c holds.
func (a *Asm) Jcc(c Cond, l Label) {
	a.b(0x0f, 0x80+byte(c))
	a.fixups = append(a.fixups, fixup{at: len(a.buf), label: l})
	a.u32(0)
}

// Jmp jumps to l.
func (a *Asm) Jmp(l Label) {
	a.b(0xe9)
	a.fixups = append(a.fixups, fixup{at: len(a.buf), label: l})
	a.u32(0)
}

// JmpR jumps to the address in r.
func (a *Asm) JmpR(r Reg) { a.rr(0, []byte{0xff}, 4, r) }

// CallR calls the address in r.
func (a *Asm) CallR(r Reg) { a.rr(0, []byte{0xff}, 2, r) }

// JmpM jumps to the address stored at m.
func (a *Asm) JmpM(m Mem) { a.rm(0, []byte{0xff}, 4, m) }

// Ret returns.
func (a *Asm) Ret() { a.b(0xc3) }

// Int3 is a breakpoint (padding that must never run).
func (a *Asm) Int3() { a.b(0xcc) }

// ShiftX is dst = src shifted by count (masked to 5 or 6 bits, like the
// shifts by CL), in one BMI2 instruction (SHLX, SHRX, SARX) that takes the
// count from any register and leaves the flags alone. op is Shl, Shr or
// Sar. The caller checks that the CPU has BMI2.
func (a *Asm) ShiftX(op Shift, w Width, dst, src, count Reg) {
	pp := map[Shift]byte{Shl: 1, Sar: 2, Shr: 3}[op] // 66, F3, F2
	// Three-byte VEX: C4, ~R ~X ~B and map 0F38, W ~vvvv L=0 pp.
	b1 := byte(0x02)
	if dst&8 == 0 {
		b1 |= 0x80
	}
	b1 |= 0x40 // no index register
	if src&8 == 0 {
		b1 |= 0x20
	}
	b2 := byte(^count&15)<<3 | pp
	if w == W64 {
		b2 |= 0x80
	}
	a.b(0xc4, b1, b2, 0xf7, 0xc0|byte(dst&7)<<3|byte(src&7))
}

// Movbe loads a 16-, 32- or 64-bit big-endian value from m into dst, byte
// swapped (MOVBE). The 16-bit form leaves dst's upper bits alone. The
// caller checks that the CPU has MOVBE.
func (a *Asm) Movbe(w Width, dst Reg, m Mem) { a.rm(wpfx(w), []byte{0x0f, 0x38, 0xf0}, dst, m) }
