package verifier

import (
	"github.com/cilium/ebpf/asm"
)

// liveness computes, per slot, the registers (bit r) that may be read before
// being written on some path from that slot. Calls read r1-r5 and write
// r0-r5; exit reads r0.
func (c *code) liveness() []uint16 {
	n := len(c.Insns)
	live := make([]uint16, n)
	use := make([]uint16, n)
	def := make([]uint16, n)
	succ := make([][]int, n)
	const args = 0b111110
	for pc := 0; pc < n; pc++ {
		if c.Half[pc] {
			continue
		}
		ins := c.Insns[pc]
		op := ins.OpCode
		d, s := uint16(1)<<(ins.Dst&15), uint16(1)<<(ins.Src&15)
		next := pc + 1
		if op.IsDWordLoad() {
			next = pc + 2
		}
		succ[pc] = []int{next}
		switch cls := op.Class(); cls {
		case asm.ALUClass, asm.ALU64Class:
			def[pc] = d
			switch op.ALUOp() {
			case asm.Mov, asm.MovSX8, asm.MovSX16, asm.MovSX32:
				if op.Source() == asm.RegSource {
					use[pc] = s
				}
			default:
				use[pc] = d
				if op.Source() == asm.RegSource {
					use[pc] |= s
				}
			}
		case asm.LdClass:
			if op.IsDWordLoad() {
				def[pc] = d
			} else {
				use[pc] = 1 << 6
				if op.Mode() == asm.IndMode {
					use[pc] |= s
				}
				def[pc] = 0b111111
			}
		case asm.LdXClass:
			use[pc], def[pc] = s, d
		case asm.StClass:
			use[pc] = d
		case asm.StXClass:
			use[pc] = d | s
			if op.Mode() == asm.AtomicMode {
				if uint32(ins.Constant) == 0xf1 {
					use[pc] |= 1
					def[pc] = 1
				} else if ins.Constant&1 != 0 {
					def[pc] = s
				}
			}
		case asm.JumpClass, asm.Jump32Class:
			switch op.JumpOp() {
			case asm.Exit:
				use[pc] = 1
				succ[pc] = nil
			case asm.Call:
				use[pc], def[pc] = args, 0b111111
			case asm.Ja:
				succ[pc] = []int{c.JumpTarget(pc)}
			default:
				use[pc] = d
				if op.Source() == asm.RegSource {
					use[pc] |= s
				}
				succ[pc] = []int{next, c.JumpTarget(pc)}
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for pc := n - 1; pc >= 0; pc-- {
			if c.Half[pc] {
				continue
			}
			var out uint16
			for _, t := range succ[pc] {
				if t >= 0 && t < n {
					out |= live[t]
				}
			}
			in := use[pc] | out&^def[pc]
			if in != live[pc] {
				live[pc] = in
				changed = true
			}
		}
	}
	return live
}

// fingerprint hashes the whole state, field by field.
func (s *state) fingerprint(_ *[]byte) uint64 {
	h := uint64(14695981039346656037)
	mix := func(w uint64) {
		h ^= w
		h *= 1099511628211
		h ^= h >> 29
	}
	val := func(v *value) {
		mix(uint64(v.k))
		if v.k == kUninit {
			return
		}
		mix(v.min)
		mix(v.max)
		mix(uint64(v.off))
		mix(uint64(v.rng))
		mix(uint64(uint32(v.id))<<32 | uint64(uint32(v.idx)))
	}
	for i := range s.regs {
		val(&s.regs[i])
	}
	for _, f := range s.frames {
		for _, w := range f.init {
			mix(w)
		}
		mix(f.spilled)
		for i := 0; i < stackSlots; i++ {
			if f.spilled&(1<<i) != 0 {
				val(&f.slots[i])
			}
		}
		for i := range f.saved {
			val(&f.saved[i])
		}
		mix(uint64(f.fn)<<32 | uint64(uint32(f.ret)))
	}
	return h
}
