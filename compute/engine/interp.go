package engine

import (
	"math/bits"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// Interpreter is the portable engine: a switch-dispatched interpreter over a
// pre-decoded program. It allocates nothing per run.
var Interpreter Engine = interpEngine{}

type interpEngine struct{}

func (interpEngine) Name() string { return "interpreter" }

func (interpEngine) build(p *Program) (compiled, error) {
	code, err := compile(p.code, p.info, fusion)
	if err != nil {
		return nil, err
	}
	return &interpCode{code: code}, nil
}

type interpCode struct {
	code []insn
}

// ErrBudget is returned (wrapped) when a run exceeds its instruction budget.
var ErrBudget = errors.New("instruction budget exhausted (infinite loop?)")

// ErrCallDepth is returned (wrapped) when local calls nest too deeply.
var ErrCallDepth = errors.New("call depth exceeded")

type frame struct {
	ret  int
	regs [4]uint64 // r6..r9
	r10  uint64
}

func ld8(p unsafe.Pointer) uint64  { return uint64(*(*uint8)(p)) }
func ld16(p unsafe.Pointer) uint64 { return uint64(*(*uint16)(p)) }
func ld32(p unsafe.Pointer) uint64 { return uint64(*(*uint32)(p)) }
func ld64(p unsafe.Pointer) uint64 { return *(*uint64)(p) }

// errSlice is how run reports that the slice's budget is spent; m.sliceAt
// and m.sliceResume say where.
var errSlice = errors.New("engine: budget slice spent")

// Exec runs the program from slot 0 with the registers in m.regs, one budget
// slice at a time: between two slices m.refill ends the run (budget spent,
// interrupted) or hands out the next slice.
func (c *interpCode) Exec(m *Instance) (uint64, error) {
	m.depth = 0
	pc := 0
	for {
		r0, err := c.run(m, pc)
		if err != errSlice {
			return r0, err
		}
		if err := m.refill(m.sliceAt); err != nil {
			return 0, err
		}
		pc = m.sliceResume
	}
}

// run interprets from pc until the program returns, fails or spends its
// slice (errSlice). Slice ends leave through labels after the loop, which
// keeps the dispatch loop a plain loop for the compiler.
func (c *interpCode) run(m *Instance, pc int) (uint64, error) {
	code := c.code
	r := &m.regs
	var faultAddr uint64
	var faultSize int
	var faultWrite bool
	for {
		in := &code[pc]
		pc++
		switch in.op {
		// ALU64
		case opAdd64I:
			r[in.dst&15] += in.imm
		case opAdd64R:
			r[in.dst&15] += r[in.src&15]
		case opSub64I:
			r[in.dst&15] -= in.imm
		case opSub64R:
			r[in.dst&15] -= r[in.src&15]
		case opMul64I:
			r[in.dst&15] *= in.imm
		case opMul64R:
			r[in.dst&15] *= r[in.src&15]
		case opDiv64I:
			r[in.dst&15] = div64(r[in.dst&15], in.imm)
		case opDiv64R:
			r[in.dst&15] = div64(r[in.dst&15], r[in.src&15])
		case opSDiv64I:
			r[in.dst&15] = sdiv64(r[in.dst&15], in.imm)
		case opSDiv64R:
			r[in.dst&15] = sdiv64(r[in.dst&15], r[in.src&15])
		case opOr64I:
			r[in.dst&15] |= in.imm
		case opOr64R:
			r[in.dst&15] |= r[in.src&15]
		case opAnd64I:
			r[in.dst&15] &= in.imm
		case opAnd64R:
			r[in.dst&15] &= r[in.src&15]
		case opLsh64I:
			r[in.dst&15] <<= in.imm & 63
		case opLsh64R:
			r[in.dst&15] <<= r[in.src&15] & 63
		case opRsh64I:
			r[in.dst&15] >>= in.imm & 63
		case opRsh64R:
			r[in.dst&15] >>= r[in.src&15] & 63
		case opMod64I:
			r[in.dst&15] = mod64(r[in.dst&15], in.imm)
		case opMod64R:
			r[in.dst&15] = mod64(r[in.dst&15], r[in.src&15])
		case opSMod64I:
			r[in.dst&15] = smod64(r[in.dst&15], in.imm)
		case opSMod64R:
			r[in.dst&15] = smod64(r[in.dst&15], r[in.src&15])
		case opXor64I:
			r[in.dst&15] ^= in.imm
		case opXor64R:
			r[in.dst&15] ^= r[in.src&15]
		case opMov64I:
			r[in.dst&15] = in.imm
		case opMov64R:
			r[in.dst&15] = r[in.src&15]
		case opArsh64I:
			r[in.dst&15] = uint64(int64(r[in.dst&15]) >> (in.imm & 63))
		case opArsh64R:
			r[in.dst&15] = uint64(int64(r[in.dst&15]) >> (r[in.src&15] & 63))
		case opNeg64:
			r[in.dst&15] = -r[in.dst&15]
		case opMovSX8to64:
			r[in.dst&15] = uint64(int64(int8(r[in.src&15])))
		case opMovSX16to64:
			r[in.dst&15] = uint64(int64(int16(r[in.src&15])))
		case opMovSX32to64:
			r[in.dst&15] = uint64(int64(int32(r[in.src&15])))
		case opBswap16, opBe16:
			r[in.dst&15] = uint64(bits.ReverseBytes16(uint16(r[in.dst&15])))
		case opBswap32, opBe32:
			r[in.dst&15] = uint64(bits.ReverseBytes32(uint32(r[in.dst&15])))
		case opBswap64, opBe64:
			r[in.dst&15] = bits.ReverseBytes64(r[in.dst&15])
		case opLe16:
			r[in.dst&15] = uint64(uint16(r[in.dst&15]))
		case opLe32:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]))
		case opLe64:
		// ALU32: every result is zero-extended.
		case opAdd32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) + uint32(in.imm))
		case opAdd32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) + uint32(r[in.src&15]))
		case opSub32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) - uint32(in.imm))
		case opSub32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) - uint32(r[in.src&15]))
		case opMul32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) * uint32(in.imm))
		case opMul32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) * uint32(r[in.src&15]))
		case opDiv32I:
			r[in.dst&15] = div32(r[in.dst&15], in.imm)
		case opDiv32R:
			r[in.dst&15] = div32(r[in.dst&15], r[in.src&15])
		case opSDiv32I:
			r[in.dst&15] = sdiv32(r[in.dst&15], in.imm)
		case opSDiv32R:
			r[in.dst&15] = sdiv32(r[in.dst&15], r[in.src&15])
		case opOr32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) | uint32(in.imm))
		case opOr32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) | uint32(r[in.src&15]))
		case opAnd32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) & uint32(in.imm))
		case opAnd32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) & uint32(r[in.src&15]))
		case opLsh32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) << (in.imm & 31))
		case opLsh32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) << (r[in.src&15] & 31))
		case opRsh32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) >> (in.imm & 31))
		case opRsh32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) >> (r[in.src&15] & 31))
		case opMod32I:
			r[in.dst&15] = mod32(r[in.dst&15], in.imm)
		case opMod32R:
			r[in.dst&15] = mod32(r[in.dst&15], r[in.src&15])
		case opSMod32I:
			r[in.dst&15] = smod32(r[in.dst&15], in.imm)
		case opSMod32R:
			r[in.dst&15] = smod32(r[in.dst&15], r[in.src&15])
		case opXor32I:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) ^ uint32(in.imm))
		case opXor32R:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]) ^ uint32(r[in.src&15]))
		case opMov32I:
			r[in.dst&15] = uint64(uint32(in.imm))
		case opMov32R:
			r[in.dst&15] = uint64(uint32(r[in.src&15]))
		case opArsh32I:
			r[in.dst&15] = uint64(uint32(int32(uint32(r[in.dst&15])) >> (in.imm & 31)))
		case opArsh32R:
			r[in.dst&15] = uint64(uint32(int32(uint32(r[in.dst&15])) >> (r[in.src&15] & 31)))
		case opNeg32:
			r[in.dst&15] = uint64(-uint32(r[in.dst&15]))
		case opMovSX8to32:
			r[in.dst&15] = uint64(uint32(int32(int8(r[in.src&15]))))
		case opMovSX16to32:
			r[in.dst&15] = uint64(uint32(int32(int16(r[in.src&15]))))

		// Jumps. A taken backward jump charges the loop span to the budget.
		// The taken-jump block is repeated in every case on purpose: sharing
		// it through one label after the switch doubled the time per
		// instruction (BenchmarkALULoop 1.20 -> 2.38 ns), because the
		// compiler then keeps more state live across the whole loop.
		case opJa:
			if t := int(in.off); t < pc {
				m.budget -= int64(pc - t)
				if m.budget < 0 {
					goto overBudget
				}
				pc = t
			} else {
				pc = t
			}
		case opJeq64I:
			if r[in.dst&15] == in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJeq64R:
			if r[in.dst&15] == r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJgt64I:
			if r[in.dst&15] > in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJgt64R:
			if r[in.dst&15] > r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJge64I:
			if r[in.dst&15] >= in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJge64R:
			if r[in.dst&15] >= r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJset64I:
			if r[in.dst&15]&in.imm != 0 {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJset64R:
			if r[in.dst&15]&r[in.src&15] != 0 {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJne64I:
			if r[in.dst&15] != in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJne64R:
			if r[in.dst&15] != r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsgt64I:
			if int64(r[in.dst&15]) > int64(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsgt64R:
			if int64(r[in.dst&15]) > int64(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsge64I:
			if int64(r[in.dst&15]) >= int64(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsge64R:
			if int64(r[in.dst&15]) >= int64(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJlt64I:
			if r[in.dst&15] < in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJlt64R:
			if r[in.dst&15] < r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJle64I:
			if r[in.dst&15] <= in.imm {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJle64R:
			if r[in.dst&15] <= r[in.src&15] {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJslt64I:
			if int64(r[in.dst&15]) < int64(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJslt64R:
			if int64(r[in.dst&15]) < int64(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsle64I:
			if int64(r[in.dst&15]) <= int64(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsle64R:
			if int64(r[in.dst&15]) <= int64(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJeq32I:
			if uint32(r[in.dst&15]) == uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJeq32R:
			if uint32(r[in.dst&15]) == uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJgt32I:
			if uint32(r[in.dst&15]) > uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJgt32R:
			if uint32(r[in.dst&15]) > uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJge32I:
			if uint32(r[in.dst&15]) >= uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJge32R:
			if uint32(r[in.dst&15]) >= uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJset32I:
			if uint32(r[in.dst&15])&uint32(in.imm) != 0 {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJset32R:
			if uint32(r[in.dst&15])&uint32(r[in.src&15]) != 0 {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJne32I:
			if uint32(r[in.dst&15]) != uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJne32R:
			if uint32(r[in.dst&15]) != uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsgt32I:
			if int32(r[in.dst&15]) > int32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsgt32R:
			if int32(r[in.dst&15]) > int32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsge32I:
			if int32(r[in.dst&15]) >= int32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsge32R:
			if int32(r[in.dst&15]) >= int32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJlt32I:
			if uint32(r[in.dst&15]) < uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJlt32R:
			if uint32(r[in.dst&15]) < uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJle32I:
			if uint32(r[in.dst&15]) <= uint32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJle32R:
			if uint32(r[in.dst&15]) <= uint32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJslt32I:
			if int32(r[in.dst&15]) < int32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJslt32R:
			if int32(r[in.dst&15]) < int32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsle32I:
			if int32(r[in.dst&15]) <= int32(in.imm) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opJsle32R:
			if int32(r[in.dst&15]) <= int32(r[in.src&15]) {
				if t := int(in.off); t < pc {
					m.budget -= int64(pc - t)
					if m.budget < 0 {
						goto overBudget
					}
					pc = t
				} else {
					pc = t
				}
			}
		case opCall:
			v, err := m.callHelper(pc-1, uint32(in.imm))
			if err != nil {
				return 0, err
			}
			r[0] = v
			if m.budget < 0 { // the helper charged for the bytes it read
				goto overHelper
			}
		case opCallLocal:
			if m.depth+1 >= abi.MaxFrames {
				return 0, errors.Wrapf(ErrCallDepth, "engine: instruction %d", pc-1)
			}
			f := &m.frames[m.depth]
			f.ret = pc
			f.regs = [4]uint64{r[6], r[7], r[8], r[9]}
			f.r10 = r[10]
			m.depth++
			r[10] -= abi.StackSize
			pc = int(in.off)
			// The callee's length bounds what it runs before its own
			// backward jumps and calls charge.
			m.budget -= int64(in.imm)
			if m.budget < 0 {
				goto overCall
			}
		case opExit:
			if m.depth == 0 {
				return r[0], nil
			}
			m.depth--
			f := &m.frames[m.depth]
			r[6], r[7], r[8], r[9] = f.regs[0], f.regs[1], f.regs[2], f.regs[3]
			r[10] = f.r10
			pc = f.ret
		case opLoadImm64:
			r[in.dst&15] = in.imm
			pc++
		case opMovAdd64I:
			r[in.dst&15] = r[in.src&15] + in.imm
			pc++
		case opMovAdd64R:
			r[in.dst&15] = r[in.src&15] + r[in.imm&15]
			pc++
		case opZext32:
			r[in.dst&15] = uint64(uint32(r[in.dst&15]))
			pc++

		// Memory: every access is checked against its region.
		case opLdxB:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 1)
			if p == nil {
				faultAddr, faultSize = a, 1
				goto fault
			}
			r[in.dst&15] = ld8(p)
		case opLdxH:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 2)
			if p == nil {
				faultAddr, faultSize = a, 2
				goto fault
			}
			r[in.dst&15] = ld16(p)
		case opLdxW:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 4)
			if p == nil {
				faultAddr, faultSize = a, 4
				goto fault
			}
			r[in.dst&15] = ld32(p)
		case opLdxDW:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 8)
			if p == nil {
				faultAddr, faultSize = a, 8
				goto fault
			}
			r[in.dst&15] = ld64(p)
		case opLdxSB:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 1)
			if p == nil {
				faultAddr, faultSize = a, 1
				goto fault
			}
			r[in.dst&15] = uint64(int64(int8(ld8(p))))
		case opLdxSH:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 2)
			if p == nil {
				faultAddr, faultSize = a, 2
				goto fault
			}
			r[in.dst&15] = uint64(int64(int16(ld16(p))))
		case opLdxSW:
			a := r[in.src&15] + uint64(int64(in.off))
			p := m.rp(a, 4)
			if p == nil {
				faultAddr, faultSize = a, 4
				goto fault
			}
			r[in.dst&15] = uint64(int64(int32(ld32(p))))
		case opStB, opStxB:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 1)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 1, true
				goto fault
			}
			v := in.imm
			if in.op == opStxB {
				v = r[in.src&15]
			}
			*(*uint8)(p) = uint8(v)
		case opStH, opStxH:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 2)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 2, true
				goto fault
			}
			v := in.imm
			if in.op == opStxH {
				v = r[in.src&15]
			}
			*(*uint16)(p) = uint16(v)
		case opStW, opStxW:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 4)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 4, true
				goto fault
			}
			v := in.imm
			if in.op == opStxW {
				v = r[in.src&15]
			}
			*(*uint32)(p) = uint32(v)
		case opStDW, opStxDW:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 8)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 8, true
				goto fault
			}
			v := in.imm
			if in.op == opStxDW {
				v = r[in.src&15]
			}
			*(*uint64)(p) = v
		case opAtomic32:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 4)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 4, true
				goto fault
			}
			atomic32(r, in, (*uint32)(p))
		case opAtomic64:
			a := r[in.dst&15] + uint64(int64(in.off))
			p := m.wp(a, 8)
			if p == nil {
				faultAddr, faultSize, faultWrite = a, 8, true
				goto fault
			}
			atomic64(r, in, (*uint64)(p))
		case opLdAbsB, opLdAbsH, opLdAbsW, opLdIndB, opLdIndH, opLdIndW:
			off := int64(int32(in.imm))
			if in.op >= opLdIndB {
				off = int64(int32(uint32(in.imm) + uint32(r[in.src&15])))
			}
			n := int64(1) << ((in.op - opLdAbsB) % 3)
			if off < 0 || off+n > int64(len(m.data)) {
				// Legacy semantics: an out-of-bounds packet load ends the
				// program with return value 0.
				r[0] = 0
				return 0, nil
			}
			d := m.data[off:]
			switch n {
			case 1:
				r[0] = uint64(d[0])
			case 2:
				r[0] = uint64(d[0])<<8 | uint64(d[1])
			default:
				r[0] = uint64(d[0])<<24 | uint64(d[1])<<16 | uint64(d[2])<<8 | uint64(d[3])
			}
		case opLdCtxData:
			r[in.dst&15] = regionAddr(regionData, 0)
		case opLdCtxDataEnd:
			r[in.dst&15] = regionAddr(regionData, uint64(len(m.data)))
		default:
			return 0, errors.Errorf("engine: instruction %d: invalid internal opcode %d", pc-1, in.op)
		}
	}
	// The slice's budget is spent: Exec's refill ends the run (budget
	// exhausted, interrupted) or resumes it where the charging instruction
	// goes.
overBudget: // a taken backward jump at pc-1
	m.sliceAt, m.sliceResume = pc-1, int(code[pc-1].off)
	return 0, errSlice
overCall: // a local call, whose frame is pushed and pc set to the callee
	m.sliceAt, m.sliceResume = m.frames[m.depth-1].ret-1, pc
	return 0, errSlice
overHelper: // a helper call at pc-1, whose result is in r0
	m.sliceAt, m.sliceResume = pc-1, pc
	return 0, errSlice
fault:
	what := "load"
	if faultWrite {
		what = "store"
	}
	return 0, &Fault{PC: pc - 1, Addr: faultAddr, Size: faultSize, Write: faultWrite, What: what}
}

func div64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func sdiv64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	// Go defines MinInt64 / -1 == MinInt64, as RFC 9669 does.
	return uint64(int64(a) / int64(b))
}

func mod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return a % b
}

func smod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return uint64(int64(a) % int64(b))
}

func div32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return 0
	}
	return uint64(uint32(a) / uint32(b))
}

func sdiv32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return 0
	}
	return uint64(uint32(int32(a) / int32(b)))
}

func mod32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return uint64(uint32(a))
	}
	return uint64(uint32(a) % uint32(b))
}

func smod32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return uint64(uint32(a))
	}
	return uint64(uint32(int32(a) % int32(b)))
}

// Atomic operations. An instance runs on one core and maps are per core, so a
// plain read-modify-write is atomic with respect to everything that can see it.
const (
	atomicFetch   = 0x01
	atomicXchg    = 0xe1
	atomicCmpXchg = 0xf1
)

func atomic32(r *[16]uint64, in *insn, p *uint32) {
	old := *p
	s := uint32(r[in.src&15])
	switch in.imm {
	case atomicXchg:
		*p = s
		r[in.src&15] = uint64(old)
		return
	case atomicCmpXchg:
		if old == uint32(r[0]) {
			*p = s
		}
		r[0] = uint64(old)
		return
	}
	switch in.imm &^ atomicFetch {
	case 0x00:
		*p = old + s
	case 0x40:
		*p = old | s
	case 0x50:
		*p = old & s
	case 0xa0:
		*p = old ^ s
	}
	if in.imm&atomicFetch != 0 {
		r[in.src&15] = uint64(old)
	}
}

func atomic64(r *[16]uint64, in *insn, p *uint64) {
	old := *p
	s := r[in.src&15]
	switch in.imm {
	case atomicXchg:
		*p = s
		r[in.src&15] = old
		return
	case atomicCmpXchg:
		if old == r[0] {
			*p = s
		}
		r[0] = old
		return
	}
	switch in.imm &^ atomicFetch {
	case 0x00:
		*p = old + s
	case 0x40:
		*p = old | s
	case 0x50:
		*p = old & s
	case 0xa0:
		*p = old ^ s
	}
	if in.imm&atomicFetch != 0 {
		r[in.src&15] = old
	}
}
