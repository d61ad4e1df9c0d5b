package engine

import (
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/internal/layout"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// insn is the interpreter's pre-decoded instruction: 16 bytes, registers
// already masked, immediates already extended, jump targets absolute.
type insn struct {
	op  uint8
	dst uint8
	src uint8
	rgn uint8  // loads and stores: the region the verifier proved, or 0 (check)
	off int32  // memory offset, or absolute target slot for jumps and calls
	imm uint64 // ALU64/jump: sign-extended imm; ALU32: uint32(imm); LDDW: value
}

var aluOps64 = map[asm.ALUOp]uint8{
	asm.Add: opAdd64I, asm.Sub: opSub64I, asm.Mul: opMul64I, asm.Div: opDiv64I,
	asm.SDiv: opSDiv64I, asm.Or: opOr64I, asm.And: opAnd64I, asm.LSh: opLsh64I,
	asm.RSh: opRsh64I, asm.Mod: opMod64I, asm.SMod: opSMod64I, asm.Xor: opXor64I,
	asm.Mov: opMov64I, asm.ArSh: opArsh64I,
}

var aluOps32 = map[asm.ALUOp]uint8{
	asm.Add: opAdd32I, asm.Sub: opSub32I, asm.Mul: opMul32I, asm.Div: opDiv32I,
	asm.SDiv: opSDiv32I, asm.Or: opOr32I, asm.And: opAnd32I, asm.LSh: opLsh32I,
	asm.RSh: opRsh32I, asm.Mod: opMod32I, asm.SMod: opSMod32I, asm.Xor: opXor32I,
	asm.Mov: opMov32I, asm.ArSh: opArsh32I,
}

var jmpOps = map[asm.JumpOp]uint8{
	asm.JEq: opJeq64I, asm.JGT: opJgt64I, asm.JGE: opJge64I, asm.JSet: opJset64I,
	asm.JNE: opJne64I, asm.JSGT: opJsgt64I, asm.JSGE: opJsge64I, asm.JLT: opJlt64I,
	asm.JLE: opJle64I, asm.JSLT: opJslt64I, asm.JSLE: opJsle64I,
}

// jmp32Delta is the distance from a 64-bit jump op to its 32-bit twin.
const jmp32Delta = opJeq32I - opJeq64I

// compile translates verified code into the pre-decoded form that the
// interpreter runs and the JIT translates; fuse adds superinstructions (the
// interpreter's, which the JIT does not need). Only code the verifier
// accepted reaches it, but it still refuses anything it does not know.
func compile(c *layout.Code, info *verifier.Info, fuse bool) ([]insn, error) {
	out := make([]insn, len(c.Insns))
	for pc := range c.Insns {
		if c.Half[pc] {
			out[pc] = insn{op: opHalf}
			continue
		}
		ins := c.Insns[pc]
		in := insn{dst: uint8(ins.Dst) & 15, src: uint8(ins.Src) & 15, off: int32(ins.Offset)}
		op := ins.OpCode
		reg := op.Source() == asm.RegSource
		switch cls := op.Class(); cls {
		case asm.ALU64Class, asm.ALUClass:
			aop := op.ALUOp()
			switch aop {
			case asm.Neg:
				in.op = pick(cls == asm.ALU64Class, opNeg64, opNeg32)
			case asm.MovSX8:
				in.op = pick(cls == asm.ALU64Class, opMovSX8to64, opMovSX8to32)
			case asm.MovSX16:
				in.op = pick(cls == asm.ALU64Class, opMovSX16to64, opMovSX16to32)
			case asm.MovSX32:
				in.op = opMovSX32to64
			case asm.Swap:
				w := map[int64]uint8{16: 0, 32: 1, 64: 2}[ins.Constant]
				switch {
				case cls == asm.ALU64Class:
					in.op = opBswap16 + w
				case op.Endianness() == asm.LE:
					in.op = opLe16 + w
				default:
					in.op = opBe16 + w
				}
			default:
				var base uint8
				var ok bool
				if cls == asm.ALU64Class {
					base, ok = aluOps64[aop]
					in.imm = uint64(ins.Constant)
				} else {
					base, ok = aluOps32[aop]
					in.imm = uint64(uint32(ins.Constant))
				}
				if !ok {
					return nil, errors.Errorf("instruction %d: unsupported ALU operation %v", pc, aop)
				}
				in.op = base
				if reg {
					in.op++
				}
			}
			in.off = 0
		case asm.JumpClass, asm.Jump32Class:
			jop := op.JumpOp()
			switch jop {
			case asm.Ja:
				in.op = opJa
				in.off = int32(c.JumpTarget(pc))
			case asm.Call:
				if verifier.IsLocalCall(ins) {
					in.op = opCallLocal
					in.off = int32(c.JumpTarget(pc))
					in.imm = uint64(funcLen(info, len(c.Insns), int(in.off)))
				} else {
					in.op = opCall
					in.imm = uint64(uint32(ins.Constant))
				}
			case asm.Exit:
				in.op = opExit
			default:
				base, ok := jmpOps[jop]
				if !ok {
					return nil, errors.Errorf("instruction %d: unsupported jump %v", pc, jop)
				}
				if cls == asm.Jump32Class {
					base += jmp32Delta
				}
				if reg {
					base++
				}
				in.op = base
				in.imm = uint64(ins.Constant) // sign-extended from the 32-bit field
				in.off = int32(c.JumpTarget(pc))
			}
		case asm.LdClass:
			switch op.Mode() {
			case asm.ImmMode:
				in.op = opLoadImm64
				in.imm = uint64(ins.Constant)
				if ref := c.MapRef[pc]; ref >= 0 {
					switch ins.Src {
					case asm.PseudoMapFD:
						in.imm = mapHandle(ref)
					case asm.PseudoMapValue:
						in.imm = regionAddr(regionMap0+ref, uint64(ins.Constant)>>32)
					}
				}
				in.src = 0
			case asm.AbsMode, asm.IndMode:
				sz := map[asm.Size]uint8{asm.Byte: 0, asm.Half: 1, asm.Word: 2}[op.Size()]
				if op.Mode() == asm.AbsMode {
					in.op = opLdAbsB + sz
				} else {
					in.op = opLdIndB + sz
				}
				in.imm = uint64(uint32(ins.Constant))
			}
		case asm.LdXClass:
			sz := sizeIndex(op.Size())
			if op.Mode() == asm.MemSXMode {
				in.op = opLdxSB + sz
			} else {
				in.op = opLdxB + sz
			}
			switch info.CtxField[pc] {
			case verifier.CtxFieldData:
				in.op = opLdCtxData
			case verifier.CtxFieldDataEnd:
				in.op = opLdCtxDataEnd
			}
		case asm.StClass:
			in.op = opStB + sizeIndex(op.Size())
			in.imm = uint64(ins.Constant)
		case asm.StXClass:
			if op.Mode() == asm.AtomicMode {
				in.op = pick(op.Size() == asm.DWord, opAtomic64, opAtomic32)
				in.imm = uint64(uint32(ins.Constant))
			} else {
				in.op = opStxB + sizeIndex(op.Size())
			}
		}
		if cls := op.Class(); (cls == asm.LdXClass || cls == asm.StClass || cls == asm.StXClass) && pc < len(info.Access) {
			in.rgn = provenRegion(info.Access[pc])
		}
		if in.op == opInvalid {
			return nil, errors.Errorf("instruction %d: unsupported opcode %v", pc, op)
		}
		out[pc] = in
	}
	if fuse {
		fusePairs(out)
	}
	return out, nil
}

// provenRegion is the engine region of a proven access, or 0.
func provenRegion(a verifier.Access) uint8 {
	switch a.Region {
	case verifier.RegionCtx:
		return regionCtx
	case verifier.RegionData:
		return regionData
	case verifier.RegionStack:
		return regionStack
	case verifier.RegionMap:
		if a.Map < maxMaps {
			return uint8(regionMap0 + a.Map)
		}
	}
	return 0
}

// funcLen returns the number of slots of the function that starts at entry:
// what a call charges to the budget, because a function runs at most that
// many instructions before one of its own backward jumps or calls charges.
func funcLen(info *verifier.Info, n, entry int) int {
	end := n
	for _, f := range info.Functions {
		if f > entry && f < end {
			end = f
		}
	}
	return max(end-entry, 1)
}

// fusion enables superinstructions (tests compare runs with and without).
var fusion = true

// fusePairs replaces frequent instruction pairs that clang emits with one
// superinstruction. The second slot is left intact, so a jump to it still
// executes just that instruction.
func fusePairs(code []insn) {
	for pc := 0; pc+1 < len(code); pc++ {
		a, b := code[pc], code[pc+1]
		switch {
		case a.op == opMov64R && b.op == opAdd64I && b.dst == a.dst:
			code[pc] = insn{op: opMovAdd64I, dst: a.dst, src: a.src, imm: b.imm}
		case a.op == opMov64R && b.op == opAdd64R && b.dst == a.dst && b.src != a.dst:
			code[pc] = insn{op: opMovAdd64R, dst: a.dst, src: a.src, imm: uint64(b.src)}
		case a.op == opLsh64I && a.imm == 32 && b.op == opRsh64I && b.imm == 32 && b.dst == a.dst:
			code[pc] = insn{op: opZext32, dst: a.dst}
		}
	}
}

func sizeIndex(s asm.Size) uint8 {
	switch s {
	case asm.Byte:
		return 0
	case asm.Half:
		return 1
	case asm.Word:
		return 2
	}
	return 3
}

func pick(c bool, a, b uint8) uint8 {
	if c {
		return a
	}
	return b
}
