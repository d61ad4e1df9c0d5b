// Package layout lays a program's instructions out by slot, the unit eBPF
// jump offsets count in, for the verifier and the engine, which index
// everything they know about a program by slot.
package layout

import "github.com/cilium/ebpf/asm"

// Code is a program laid out by instruction slot: a 64-bit immediate load
// (LDDW) occupies two slots and the second one is marked in Half.
type Code struct {
	// Insns holds one decoded instruction per slot; the second slot of an LDDW
	// repeats the first.
	Insns []asm.Instruction
	// Half marks the second slot of an LDDW.
	Half []bool
	// MapRef is, for an LDDW that loads a map pointer or map value address, the
	// index of the map in the program's maps; -1 otherwise.
	MapRef []int
}

// New lays out decoded instructions by slot. mapRef(i) returns the map
// index referenced by instruction i (in insns order) or -1; nil means none.
func New(insns asm.Instructions, mapRef func(i int) int) *Code {
	c := &Code{}
	for i, ins := range insns {
		ref := -1
		if mapRef != nil {
			ref = mapRef(i)
		}
		c.Insns = append(c.Insns, ins)
		c.Half = append(c.Half, false)
		c.MapRef = append(c.MapRef, ref)
		if ins.OpCode.IsDWordLoad() {
			c.Insns = append(c.Insns, ins)
			c.Half = append(c.Half, true)
			c.MapRef = append(c.MapRef, ref)
		}
	}
	return c
}

// Len returns the number of slots.
func (c *Code) Len() int { return len(c.Insns) }

// JumpTarget returns the slot a jump or local call at pc transfers control to.
func (c *Code) JumpTarget(pc int) int {
	ins := c.Insns[pc]
	if ins.OpCode.Class() == asm.Jump32Class && ins.OpCode.JumpOp() == asm.Ja {
		return pc + 1 + int(int32(ins.Constant))
	}
	if ins.OpCode.JumpOp() == asm.Call {
		return pc + 1 + int(int32(ins.Constant))
	}
	return pc + 1 + int(ins.Offset)
}
