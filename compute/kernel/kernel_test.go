package kernel_test

import (
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/kernel"
)

func TestRunInKernel(t *testing.T) {
	if err := kernel.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	// r0 = data[0] + 1 after a bounds check; data[1] = 0x5a.
	p, err := kernel.LoadInstructions(asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 2),
		asm.Mov.Imm(asm.R0, 0),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Add.Imm(asm.R0, 1),
		asm.StoreImm(asm.R2, 1, 0x5a, asm.Byte),
		asm.Return().WithSymbol("out"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data := make([]byte, kernel.MinData)
	data[0] = 41
	ret, out, err := p.Run(data)
	if err != nil || ret != 42 || out[1] != 0x5a {
		t.Fatalf("ret %d, out[1] %#x, err %v", ret, out[1], err)
	}
	if _, err := kernel.LoadInstructions(asm.Instructions{asm.Return()}); err == nil {
		t.Fatal("kernel accepted an exit without r0")
	}
}
