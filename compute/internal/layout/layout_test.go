package layout

import (
	"testing"

	"github.com/cilium/ebpf/asm"
)

// TestSlots: an LDDW takes two slots (the second marked Half, with the same
// map reference), and jump targets count in slots.
func TestSlots(t *testing.T) {
	insns := asm.Instructions{
		asm.LoadImm(asm.R1, 1<<40, asm.DWord), // slots 0, 1
		asm.Ja.Label("out"),                   // slot 2
		asm.Mov.Imm(asm.R0, 1),                // slot 3
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	insns[1].Offset = 1 // to slot 4
	c := New(insns, func(i int) int {
		if i == 0 {
			return 7
		}
		return -1
	})
	if c.Len() != 6 || c.Half[0] || !c.Half[1] || c.Half[2] || c.MapRef[0] != 7 || c.MapRef[1] != 7 || c.MapRef[2] != -1 {
		t.Fatalf("layout: len %d half %v mapref %v", c.Len(), c.Half, c.MapRef)
	}
	if got := c.JumpTarget(2); got != 4 {
		t.Fatalf("jump at slot 2 goes to %d, want 4", got)
	}
	if New(insns, nil).MapRef[0] != -1 {
		t.Fatal("nil mapRef refers to a map")
	}
}
