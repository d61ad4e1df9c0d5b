package engine_test

import (
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
)

// TestPacketLoads covers the legacy BPF_ABS/BPF_IND loads: big-endian reads
// of the data at imm (+ src as a 32-bit sum), and a load outside the data
// ends the program with r0 = 0, from any call depth.
func TestPacketLoads(t *testing.T) {
	data := make([]byte, 64)
	for i := range data {
		data[i] = byte(i)
	}
	ret := func(insns ...asm.Instruction) asm.Instructions {
		return append(append(asm.Instructions{asm.Mov.Imm(asm.R6, 0)}, insns...), asm.Return())
	}
	cases := []struct {
		name string
		prog asm.Instructions
		want uint64
	}{
		{"abs byte", ret(asm.LoadAbs(5, asm.Byte)), 5},
		{"abs half is big-endian", ret(asm.LoadAbs(10, asm.Half)), 0x0a0b},
		{"abs word at the end", ret(asm.LoadAbs(60, asm.Word)), 0x3c3d3e3f},
		{"abs word past the end returns 0", ret(asm.Mov.Imm(asm.R0, 99), asm.LoadAbs(61, asm.Word), asm.Mov.Imm(asm.R0, 98)), 0},
		{"abs negative returns 0", ret(asm.Mov.Imm(asm.R0, 99), asm.LoadAbs(-1, asm.Byte), asm.Mov.Imm(asm.R0, 98)), 0},
		{"ind word", ret(asm.Mov.Imm(asm.R2, 8), asm.LoadInd(asm.R0, asm.R2, 4, asm.Word)), 0x0c0d0e0f},
		{"ind 32-bit sum wraps", ret(asm.Mov.Imm32(asm.R2, -1), asm.LoadInd(asm.R0, asm.R2, 6, asm.Byte)), 5},
		{"ind uses the low word of src", ret(asm.LoadImm(asm.R2, 0x1_0000_0005, asm.DWord), asm.LoadInd(asm.R0, asm.R2, 0, asm.Half)), 0x0506},
		{"ind negative sum returns 0", ret(asm.Mov.Imm(asm.R0, 99), asm.Mov.Imm(asm.R2, -8), asm.LoadInd(asm.R0, asm.R2, 4, asm.Byte), asm.Mov.Imm(asm.R0, 98)), 0},
		{"out of bounds in a callee ends the program", asm.Instructions{
			asm.Mov.Imm(asm.R6, 0),
			asm.Call.Label("f"),
			asm.Mov.Imm(asm.R0, 98),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 99).WithSymbol("f"),
			asm.LoadAbs(64, asm.Byte),
			asm.Return(),
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := engine.FromInstructions("packet", abi.TypeRaw, tc.prog)
			if err != nil {
				t.Fatal(err)
			}
			x, err := engine.Compile(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			inst := x.NewInstance()
			res, err := inst.Run(&engine.Context{Data: data}, nil)
			if err != nil || res.R0 != tc.want {
				t.Fatalf("r0 = %#x, %v; want %#x", res.R0, err, tc.want)
			}
			// The registers agree with the result, also after a load
			// past the end ended the program.
			if r0 := inst.Regs()[0]; r0 != res.R0 {
				t.Fatalf("Regs()[0] = %#x after a run that returned %#x", r0, res.R0)
			}
		})
	}
}
