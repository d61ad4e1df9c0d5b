package engine

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// TestEveryHelperImplemented checks callHelper against abi's helper table:
// every row has an implementation, and an id not in the table has none.
func TestEveryHelperImplemented(t *testing.T) {
	p, err := FromInstructions("h", abi.TypeScan, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
	if err != nil {
		t.Fatal(err)
	}
	x, err := Compile(p, Interpreter)
	if err != nil {
		t.Fatal(err)
	}
	m := x.NewInstance()
	unknown := func(id uint32) bool {
		_, err := m.callHelper(0, id)
		return err != nil && strings.Contains(err.Error(), "unknown helper")
	}
	for _, h := range abi.Helpers() {
		if unknown(h.ID) {
			t.Errorf("helper %s (%#x) of abi's table has no implementation", h.Name, h.ID)
		}
	}
	for _, id := range []uint32{0, 4, 5, 7, 0xfff, 0x1003, 0x7777} {
		if _, ok := abi.HelperByID(id); !ok && !unknown(id) {
			t.Errorf("helper %#x is not in abi's table but runs", id)
		}
	}
}
