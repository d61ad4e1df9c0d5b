//go:build linux && amd64

package engine_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
)

// swapShiftProgram loads 16, 32 and 64 bits and swaps each (both swap
// forms), then shifts by registers (32 and 64 bits, every kind, counts
// beyond the width): what the JIT compiles to MOVBE and SHLX/SHRX/SARX.
var swapShiftProgram = asm.Instructions{
	asm.LoadMem(asm.R3, asm.R1, 0, asm.Half), asm.HostTo(asm.BE, asm.R3, asm.Half),
	asm.LoadMem(asm.R4, asm.R1, 2, asm.Word), asm.BSwap(asm.R4, asm.Word),
	asm.LoadMem(asm.R5, asm.R1, 8, asm.DWord), asm.HostTo(asm.BE, asm.R5, asm.DWord),
	asm.LoadMem(asm.R6, asm.R1, 16, asm.DWord), asm.BSwap(asm.R6, asm.DWord),
	asm.LoadMem(asm.R7, asm.R1, 24, asm.Word), asm.HostTo(asm.BE, asm.R7, asm.Word),
	asm.LoadMem(asm.R8, asm.R1, 28, asm.Half), asm.BSwap(asm.R8, asm.Half),
	asm.Mov.Reg(asm.R0, asm.R5), asm.LSh.Reg(asm.R0, asm.R3),
	asm.Mov.Reg(asm.R9, asm.R6), asm.RSh.Reg(asm.R9, asm.R4), asm.Xor.Reg(asm.R0, asm.R9),
	asm.Mov.Reg(asm.R9, asm.R6), asm.ArSh.Reg(asm.R9, asm.R7), asm.Add.Reg(asm.R0, asm.R9),
	asm.Mov.Reg(asm.R9, asm.R5), asm.LSh.Reg32(asm.R9, asm.R8), asm.Xor.Reg(asm.R0, asm.R9),
	asm.Mov.Reg(asm.R9, asm.R6), asm.RSh.Reg32(asm.R9, asm.R3), asm.Add.Reg(asm.R0, asm.R9),
	asm.Mov.Reg(asm.R9, asm.R5), asm.ArSh.Reg32(asm.R9, asm.R4), asm.Xor.Reg(asm.R0, asm.R9),
	asm.Return(),
}

// TestJITCPUFeatures runs byte swaps of loads and shifts by registers on
// the JIT with the CPU's BMI2 and MOVBE (where it has them) and with the
// baseline forced, against the interpreter; and the generated programs of
// TestJITMatchesInterpreter with the baseline forced.
func TestJITCPUFeatures(t *testing.T) {
	needJIT(t)
	bmi2, movbe := engine.JITUsesCPUFeatures()
	t.Logf("this CPU: BMI2 %v, MOVBE %v", bmi2, movbe)
	p, err := engine.FromInstructions("swapshift", abi.TypeRaw, swapShiftProgram)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 64; k++ {
		data := make([]byte, 32)
		for i := range data {
			data[i] = byte(k*37 + i*11)
		}
		binary.LittleEndian.PutUint16(data[28:], uint16(k*5)) // counts over 31 and 63
		agree(t, p, data, 0, 1<<16, fmt.Sprintf("swaps and shifts %d, CPU features", k))
		restore := engine.SetJITBaseline()
		agree(t, p, data, 0, 1<<16, fmt.Sprintf("swaps and shifts %d, baseline", k))
		restore()
	}
	restore := engine.SetJITBaseline()
	defer restore()
	for i, s := range seedInputs(150) {
		p, err := engine.FromInstructions("gen", abi.TypeXDP, genProgram(s))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		agree(t, p, genData(s), 0, 1<<20, fmt.Sprintf("seed %d, baseline", i))
	}
}
