package verifier

import (
	"slices"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// checkEncoding rejects unknown opcodes and instructions whose unused fields are
// not zero (RFC 9669 section 3: such fields are reserved and must be zero).
func (c *code) checkEncoding(typ abi.Type) *Error {
	for pc := 0; pc < len(c.Insns); pc++ {
		if c.Half[pc] {
			continue
		}
		if err := c.checkInsn(pc, typ); err != nil {
			return err
		}
	}
	return nil
}

func (c *code) checkInsn(pc int, typ abi.Type) *Error {
	ins := c.Insns[pc]
	op := ins.OpCode
	if ins.Dst > asm.R10 || ins.Src > asm.R10 {
		if !(op.IsDWordLoad() && ins.Dst <= asm.R10) {
			return c.reject(pc, "invalid register number")
		}
	}
	switch cls := op.Class(); cls {
	case asm.ALUClass, asm.ALU64Class:
		return c.checkALU(pc, ins, cls)
	case asm.JumpClass, asm.Jump32Class:
		return c.checkJump(pc, ins, cls)
	case asm.LdClass:
		switch op.Mode() {
		case asm.ImmMode:
			if op.Size() != asm.DWord || !op.IsDWordLoad() {
				return c.reject(pc, "unknown opcode %#02x", uint8(op))
			}
			if ins.Offset != 0 {
				return c.reject(pc, "reserved offset field is not zero")
			}
			switch ins.Src {
			case 0:
			case asm.PseudoMapFD, asm.PseudoMapValue, 3, 4:
				if c.MapRef[pc] < 0 {
					return c.reject(pc, "map reference is not resolved to a map of this program")
				}
				if ins.Src == 3 || ins.Src == 4 {
					return c.reject(pc, "map-by-index loads are not supported")
				}
				if ins.Src == asm.PseudoMapFD && uint64(ins.Constant)>>32 != 0 {
					return c.reject(pc, "reserved upper immediate of a map pointer load is not zero")
				}
			case 5:
				return c.reject(pc, "kernel variable address loads are not supported")
			case 6:
				return c.reject(pc, "code address loads are not supported")
			default:
				return c.reject(pc, "unknown LDDW source %d", ins.Src)
			}
			return nil
		case asm.AbsMode, asm.IndMode:
			if op.Size() == asm.DWord {
				return c.reject(pc, "legacy packet load of a double word is not defined")
			}
			if ins.Dst != 0 || ins.Offset != 0 || (op.Mode() == asm.AbsMode && ins.Src != 0) {
				return c.reject(pc, "reserved field of a legacy packet load is not zero")
			}
			return nil
		}
		return c.reject(pc, "unknown opcode %#02x", uint8(op))
	case asm.LdXClass:
		switch op.Mode() {
		case asm.MemMode:
		case asm.MemSXMode:
			if op.Size() == asm.DWord {
				return c.reject(pc, "sign-extending load of a double word is not defined")
			}
		default:
			return c.reject(pc, "unknown opcode %#02x", uint8(op))
		}
		if ins.Constant != 0 {
			return c.reject(pc, "reserved immediate field is not zero")
		}
		return nil
	case asm.StClass:
		if op.Mode() != asm.MemMode {
			return c.reject(pc, "unknown opcode %#02x", uint8(op))
		}
		if ins.Src != 0 {
			return c.reject(pc, "reserved source register field is not zero")
		}
		return nil
	case asm.StXClass:
		switch op.Mode() {
		case asm.MemMode:
			if ins.Constant != 0 {
				return c.reject(pc, "reserved immediate field is not zero")
			}
			return nil
		case asm.AtomicMode:
			if op.Size() != asm.Word && op.Size() != asm.DWord {
				return c.reject(pc, "atomic operation on %d bytes is not defined", op.Size().Sizeof())
			}
			switch uint32(ins.Constant) {
			case 0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1:
				return nil
			}
			return c.reject(pc, "unknown atomic operation %#x", uint32(ins.Constant))
		}
		return c.reject(pc, "unknown opcode %#02x", uint8(op))
	}
	return c.reject(pc, "unknown opcode %#02x", uint8(op))
}

func (c *code) checkALU(pc int, ins asm.Instruction, cls asm.Class) *Error {
	op := ins.OpCode
	aop := op.ALUOp()
	src := op.Source()
	if ins.Offset != 0 {
		return c.reject(pc, "reserved offset field is not zero")
	}
	switch aop {
	case asm.Add, asm.Sub, asm.Mul, asm.Div, asm.SDiv, asm.Or, asm.And, asm.LSh,
		asm.RSh, asm.Mod, asm.SMod, asm.Xor, asm.Mov, asm.ArSh:
	case asm.MovSX8, asm.MovSX16, asm.MovSX32:
		if src != asm.RegSource {
			return c.reject(pc, "sign-extending move takes a register source")
		}
		if aop == asm.MovSX32 && cls == asm.ALUClass {
			return c.reject(pc, "32-bit sign-extending move of 32 bits is not defined")
		}
	case asm.Neg:
		if src != asm.ImmSource || ins.Src != 0 || ins.Constant != 0 {
			return c.reject(pc, "reserved fields of NEG are not zero")
		}
		return nil
	case asm.Swap:
		if cls == asm.ALU64Class && op.Endianness() != asm.LE {
			return c.reject(pc, "unknown opcode %#02x", uint8(op))
		}
		if ins.Src != 0 {
			return c.reject(pc, "reserved source register field is not zero")
		}
		switch ins.Constant {
		case 16, 32, 64:
		default:
			return c.reject(pc, "byte swap width %d is not 16, 32 or 64", ins.Constant)
		}
		return nil
	default:
		return c.reject(pc, "unknown opcode %#02x", uint8(op))
	}
	if src == asm.ImmSource && ins.Src != 0 {
		return c.reject(pc, "reserved source register field is not zero")
	}
	if src == asm.RegSource && ins.Constant != 0 {
		return c.reject(pc, "reserved immediate field is not zero")
	}
	return nil
}

func (c *code) checkJump(pc int, ins asm.Instruction, cls asm.Class) *Error {
	op := ins.OpCode
	jop := op.JumpOp()
	src := op.Source()
	switch jop {
	case asm.Ja:
		if src != asm.ImmSource || ins.Src != 0 || ins.Dst != 0 {
			return c.reject(pc, "reserved fields of JA are not zero")
		}
		if cls == asm.JumpClass && ins.Constant != 0 {
			return c.reject(pc, "reserved immediate field of JA is not zero")
		}
		if cls == asm.Jump32Class && ins.Offset != 0 {
			return c.reject(pc, "reserved offset field of JA32 is not zero")
		}
		return nil
	case asm.Call:
		if src != asm.ImmSource || ins.Dst != 0 || ins.Offset != 0 {
			return c.reject(pc, "reserved fields of CALL are not zero")
		}
		switch ins.Src {
		case 0, asm.PseudoCall:
			return nil
		case asm.PseudoKfuncCall:
			return c.reject(pc, "kernel function calls are not supported")
		}
		return c.reject(pc, "unknown call source %d", ins.Src)
	case asm.Exit:
		if src != asm.ImmSource || ins.Dst != 0 || ins.Src != 0 || ins.Offset != 0 || ins.Constant != 0 {
			return c.reject(pc, "reserved fields of EXIT are not zero")
		}
		return nil
	case asm.JEq, asm.JGT, asm.JGE, asm.JSet, asm.JNE, asm.JSGT, asm.JSGE, asm.JLT, asm.JLE, asm.JSLT, asm.JSLE:
		if src == asm.ImmSource && ins.Src != 0 {
			return c.reject(pc, "reserved source register field is not zero")
		}
		if src == asm.RegSource && ins.Constant != 0 {
			return c.reject(pc, "reserved immediate field is not zero")
		}
		return nil
	case asm.JCOND:
		return c.reject(pc, "may_goto is not supported")
	}
	return c.reject(pc, "unknown opcode %#02x", uint8(op))
}

// IsLocalCall reports whether the instruction is a bpf-to-bpf call.
func IsLocalCall(ins asm.Instruction) bool {
	return ins.OpCode.JumpOp() == asm.Call && ins.Src == asm.PseudoCall
}

// checkFlow checks jump targets, function boundaries and reachability, and
// returns the entry slots of all functions (0 first).
func (c *code) checkFlow() ([]int, *Error) {
	n := len(c.Insns)
	if n == 0 {
		return nil, c.reject(-1, "program has no instructions")
	}
	starts := map[int]bool{0: true}
	for pc := 0; pc < n; pc++ {
		if c.Half[pc] {
			continue
		}
		ins := c.Insns[pc]
		if !ins.OpCode.Class().IsJump() {
			continue
		}
		jop := ins.OpCode.JumpOp()
		if jop == asm.Exit || (jop == asm.Call && !IsLocalCall(ins)) {
			continue
		}
		t := c.JumpTarget(pc)
		if t < 0 || t >= n {
			return nil, c.reject(pc, "jump target %d is outside the program (0..%d)", t, n-1)
		}
		if c.Half[t] {
			return nil, c.reject(pc, "jump target %d is the second half of a 64-bit immediate load", t)
		}
		if jop == asm.Call {
			starts[t] = true
		}
	}
	var entries []int
	for s := range starts {
		entries = append(entries, s)
	}
	sortInts(entries)
	funcOf := make([]int, n)
	for i, s := range entries {
		end := n
		if i+1 < len(entries) {
			end = entries[i+1]
		}
		for pc := s; pc < end; pc++ {
			funcOf[pc] = s
		}
		// The last instruction of a function must leave it: exit or jump.
		last := end - 1
		if c.Half[last] {
			return nil, c.reject(last-1, "control falls off the end of the function")
		}
		li := c.Insns[last]
		if !(li.OpCode.JumpOp() == asm.Exit || li.OpCode.JumpOp() == asm.Ja) {
			return nil, c.reject(last, "control falls off the end of the function")
		}
	}
	for pc := 0; pc < n; pc++ {
		if c.Half[pc] {
			continue
		}
		ins := c.Insns[pc]
		if !ins.OpCode.Class().IsJump() {
			continue
		}
		jop := ins.OpCode.JumpOp()
		if jop == asm.Exit || jop == asm.Call {
			continue
		}
		if t := c.JumpTarget(pc); funcOf[t] != funcOf[pc] {
			return nil, c.reject(pc, "jump target %d is in another function", t)
		}
	}
	// Structural reachability.
	seen := make([]bool, n)
	work := append([]int(nil), entries...)
	for _, e := range entries {
		seen[e] = true
	}
	push := func(t int) {
		if t >= 0 && t < n && !seen[t] {
			seen[t] = true
			work = append(work, t)
		}
	}
	for len(work) > 0 {
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		ins := c.Insns[pc]
		next := pc + 1
		if ins.OpCode.IsDWordLoad() {
			next = pc + 2
		}
		switch {
		case ins.OpCode.JumpOp() == asm.Exit:
		case ins.OpCode.JumpOp() == asm.Ja:
			push(c.JumpTarget(pc))
		case ins.OpCode.JumpOp() == asm.Call:
			push(next)
		case ins.OpCode.Class().IsJump():
			push(c.JumpTarget(pc))
			push(next)
		default:
			push(next)
		}
	}
	for pc := 0; pc < n; pc++ {
		if !seen[pc] && !c.Half[pc] {
			return nil, c.reject(pc, "unreachable instruction")
		}
	}
	return entries, nil
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// CanonicalAtomics returns insns with the operation of every atomic
// instruction in its immediate, where the RFC encodes it and where this
// package and the engine read it. Instructions built with cilium/ebpf/asm
// (e.g. asm.Xchg.Mem) carry the operation only in the upper bits of their
// OpCode, and cilium/ebpf v0.22's Marshal writes the immediate before it
// moves those bits there, so without this step such an instruction would be
// verified, run and handed to the kernel as an atomic add. Only an
// immediate of 0 is filled in: a decoded instruction's immediate is what was
// encoded, reserved bits included, and stays as it is. insns is copied only
// when something changes.
func CanonicalAtomics(insns asm.Instructions) asm.Instructions {
	copied := false
	for i, ins := range insns {
		op := ins.OpCode.AtomicOp()
		if op == asm.InvalidAtomic || op == asm.AddAtomic || ins.Constant != 0 {
			continue
		}
		if !copied {
			insns = slices.Clone(insns)
			copied = true
		}
		insns[i].Constant = int64(op >> 8)
	}
	return insns
}
