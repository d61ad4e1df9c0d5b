package engine

import (
	"math"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// runRaw verifies and runs a raw program on data and returns r0.
func runRaw(t *testing.T, insns asm.Instructions, data []byte) uint64 {
	t.Helper()
	p, err := FromInstructions("t", abi.TypeRaw, insns)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	x, err := Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := x.NewInstance()
	m.SetBudget(1 << 20)
	res, err := m.Run(&Context{Data: data}, nil)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res.R0
}

func ld64imm(r asm.Register, v uint64) asm.Instruction { return asm.LoadImm(r, int64(v), asm.DWord) }

func ret(insns ...asm.Instruction) asm.Instructions {
	return append(asm.Instructions(insns), asm.Return())
}

const minInt64 = uint64(1) << 63

// TestISASemantics covers the cases listed in bpf-isa-notes.md, one per row.
func TestISASemantics(t *testing.T) {
	cases := []struct {
		name string
		prog asm.Instructions
		want uint64
	}{
		// 1. Division by zero gives 0; modulo by zero leaves dst (32-bit: upper half zeroed).
		{"div64 by zero", ret(ld64imm(asm.R0, 77), asm.Mov.Imm(asm.R1, 0), asm.Div.Reg(asm.R0, asm.R1)), 0},
		{"div32 by zero", ret(asm.Mov.Imm(asm.R0, 77), asm.Mov.Imm(asm.R1, 0), asm.Div.Reg32(asm.R0, asm.R1)), 0},
		{"mod64 by zero keeps dst", ret(ld64imm(asm.R0, 0x1234_5678_9abc), asm.Mov.Imm(asm.R1, 0), asm.Mod.Reg(asm.R0, asm.R1)), 0x1234_5678_9abc},
		{"mod32 by zero zeroes upper", ret(ld64imm(asm.R0, 0xffff_ffff_0000_0007), asm.Mov.Imm(asm.R1, 0), asm.Mod.Reg32(asm.R0, asm.R1)), 7},
		{"div32 uses 32-bit divisor", ret(asm.Mov.Imm(asm.R0, 100), ld64imm(asm.R1, 1<<32), asm.Div.Reg32(asm.R0, asm.R1)), 0},
		{"mod32 uses 32-bit divisor", ret(asm.Mov.Imm(asm.R0, 100), ld64imm(asm.R1, 1<<32), asm.Mod.Reg32(asm.R0, asm.R1)), 100},
		// 2. DIV immediates: ALU imm as u32; ALU64 sign-extends then unsigned.
		{"div32 imm -1 is u32", ret(asm.Mov.Imm32(asm.R0, -2), asm.Div.Imm32(asm.R0, -1)), 0},
		{"div64 imm -1 sign-extended unsigned", ret(ld64imm(asm.R0, math.MaxUint64), asm.Div.Imm(asm.R0, -1)), 1},
		{"div64 imm -1 small dividend", ret(asm.Mov.Imm(asm.R0, 5), asm.Div.Imm(asm.R0, -1)), 0},
		// 3. SDIV/SMOD truncate toward zero; INT_MIN/-1.
		{"smod -13 % 3", ret(asm.Mov.Imm(asm.R0, -13), asm.SMod.Imm(asm.R0, 3)), uint64(math.MaxUint64)}, // -1
		{"sdiv -13 / 3", ret(asm.Mov.Imm(asm.R0, -13), asm.SDiv.Imm(asm.R0, 3)), uint64(0xffff_ffff_ffff_fffc)},
		{"sdiv INT_MIN / -1", ret(ld64imm(asm.R0, minInt64), asm.SDiv.Imm(asm.R0, -1)), minInt64},
		{"smod INT_MIN % -1", ret(ld64imm(asm.R0, minInt64), asm.SMod.Imm(asm.R0, -1)), 0},
		{"sdiv32 INT_MIN / -1", ret(asm.Mov.Imm32(asm.R0, math.MinInt32), asm.SDiv.Imm32(asm.R0, -1)), 0x8000_0000},
		{"smod32 INT_MIN % -1", ret(asm.Mov.Imm32(asm.R0, math.MinInt32), asm.SMod.Imm32(asm.R0, -1)), 0},
		{"sdiv by zero", ret(asm.Mov.Imm(asm.R0, -5), asm.Mov.Imm(asm.R1, 0), asm.SDiv.Reg(asm.R0, asm.R1)), 0},
		{"smod by zero keeps", ret(asm.Mov.Imm(asm.R0, -5), asm.Mov.Imm(asm.R1, 0), asm.SMod.Reg(asm.R0, asm.R1)), uint64(math.MaxUint64 - 4)},
		{"smod32 by zero zeroes upper", ret(asm.Mov.Imm(asm.R0, -5), asm.Mov.Imm(asm.R1, 0), asm.SMod.Reg32(asm.R0, asm.R1)), 0xffff_fffb},
		{"smod32 -13 % 3", ret(asm.Mov.Imm32(asm.R0, -13), asm.SMod.Imm32(asm.R0, 3)), 0xffff_ffff},
		// 4. Shift counts are masked.
		{"lsh64 by 65", ret(asm.Mov.Imm(asm.R0, 1), asm.Mov.Imm(asm.R1, 65), asm.LSh.Reg(asm.R0, asm.R1)), 2},
		{"lsh32 by 33", ret(asm.Mov.Imm(asm.R0, 1), asm.Mov.Imm(asm.R1, 33), asm.LSh.Reg32(asm.R0, asm.R1)), 2},
		{"rsh64 by 64", ret(asm.Mov.Imm(asm.R0, 8), asm.Mov.Imm(asm.R1, 64), asm.RSh.Reg(asm.R0, asm.R1)), 8},
		{"arsh32 by 32+1", ret(asm.Mov.Imm32(asm.R0, -8), asm.Mov.Imm(asm.R1, 33), asm.ArSh.Reg32(asm.R0, asm.R1)), 0xffff_fffc},
		{"arsh64", ret(asm.Mov.Imm(asm.R0, -8), asm.ArSh.Imm(asm.R0, 1)), uint64(math.MaxUint64 - 3)},
		// 5. ALU32 zero-extends; MOV64 imm sign-extends.
		{"add32 zero-extends", ret(ld64imm(asm.R0, 0xffff_ffff_ffff_ffff), asm.Add.Imm32(asm.R0, 1)), 0},
		{"mov32 reg zero-extends", ret(ld64imm(asm.R1, 0xdead_beef_0000_0001), asm.Mov.Reg32(asm.R0, asm.R1)), 1},
		{"mov64 imm sign-extends", ret(asm.Mov.Imm(asm.R0, -1)), math.MaxUint64},
		{"mov32 imm does not", ret(asm.Mov.Imm32(asm.R0, -1)), 0xffff_ffff},
		{"neg32", ret(asm.Mov.Imm(asm.R0, 1), asm.Neg.Imm32(asm.R0, 0)), 0xffff_ffff},
		{"neg64", ret(asm.Mov.Imm(asm.R0, 1), asm.Neg.Imm(asm.R0, 0)), math.MaxUint64},
		// 6. MOVSX.
		{"movsx8 64", ret(asm.Mov.Imm(asm.R1, 0x80), asm.MovSX8.Reg(asm.R0, asm.R1)), 0xffff_ffff_ffff_ff80},
		{"movsx16 64", ret(asm.Mov.Imm(asm.R1, 0x8000), asm.MovSX16.Reg(asm.R0, asm.R1)), 0xffff_ffff_ffff_8000},
		{"movsx32 64", ret(ld64imm(asm.R1, 0x8000_0000), asm.MovSX32.Reg(asm.R0, asm.R1)), 0xffff_ffff_8000_0000},
		{"movsx8 32 zeroes upper", ret(asm.Mov.Imm(asm.R1, 0xff), asm.MovSX8.Reg32(asm.R0, asm.R1)), 0xffff_ffff},
		{"movsx16 32", ret(asm.Mov.Imm(asm.R1, 0x7fff), asm.MovSX16.Reg32(asm.R0, asm.R1)), 0x7fff},
		// 7. END and BSWAP.
		{"le16 truncates", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.LE, asm.R0, asm.Half)), 0x7788},
		{"le32 truncates", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.LE, asm.R0, asm.Word)), 0x5566_7788},
		{"le64 identity", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.LE, asm.R0, asm.DWord)), 0x1122_3344_5566_7788},
		{"be16 swaps", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.BE, asm.R0, asm.Half)), 0x8877},
		{"be32 swaps", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.BE, asm.R0, asm.Word)), 0x8877_6655},
		{"be64 swaps", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.HostTo(asm.BE, asm.R0, asm.DWord)), 0x8877_6655_4433_2211},
		{"bswap16", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.BSwap(asm.R0, asm.Half)), 0x8877},
		{"bswap32", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.BSwap(asm.R0, asm.Word)), 0x8877_6655},
		{"bswap64", ret(ld64imm(asm.R0, 0x1122_3344_5566_7788), asm.BSwap(asm.R0, asm.DWord)), 0x8877_6655_4433_2211},
		// 8. Jumps: sign-extended imm, unsigned vs signed, JMP32, JA32.
		{"jgt imm -1 unsigned", jmp(asm.JGT.Imm(asm.R1, -1, "yes"), ld64imm(asm.R1, math.MaxUint64-1)), 0},
		{"jge imm -1 unsigned max", jmp(asm.JGE.Imm(asm.R1, -1, "yes"), ld64imm(asm.R1, math.MaxUint64)), 1},
		{"jsgt imm -1 signed", jmp(asm.JSGT.Imm(asm.R1, -1, "yes"), asm.Mov.Imm(asm.R1, 0)), 1},
		{"jslt", jmp(asm.JSLT.Imm(asm.R1, 0, "yes"), asm.Mov.Imm(asm.R1, -5)), 1},
		{"jlt unsigned of negative", jmp(asm.JLT.Imm(asm.R1, 0, "yes"), asm.Mov.Imm(asm.R1, -5)), 0},
		{"jeq32 low bits", jmp(asm.JEq.Imm32(asm.R1, 5, "yes"), ld64imm(asm.R1, 0x7_0000_0005)), 1},
		{"jeq64 all bits", jmp(asm.JEq.Imm(asm.R1, 5, "yes"), ld64imm(asm.R1, 0x7_0000_0005)), 0},
		{"jsgt32 signed low", jmp(asm.JSGT.Imm32(asm.R1, 0, "yes"), ld64imm(asm.R1, 0x1_8000_0000)), 0},
		{"jset", jmp(asm.JSet.Imm(asm.R1, 4, "yes"), asm.Mov.Imm(asm.R1, 6)), 1},
		{"jne reg", jmp(asm.JNE.Reg(asm.R1, asm.R2, "yes"), asm.Mov.Imm(asm.R1, 6), asm.Mov.Imm(asm.R2, 6)), 0},
		{"jsle32 reg", jmp(asm.JSLE.Reg32(asm.R1, asm.R2, "yes"), asm.Mov.Imm32(asm.R1, -1), asm.Mov.Imm(asm.R2, 0)), 1},
		{"ja32 uses imm", asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Mov.Imm(asm.R3, 0),
			asm.JNE.Imm(asm.R3, 0, "four"),
			{OpCode: asm.OpCode(asm.Jump32Class).SetJumpOp(asm.Ja), Constant: 1},
			asm.Mov.Imm(asm.R0, 2).WithSymbol("four"),
			asm.Return(),
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := runRaw(t, tc.prog, nil); got != tc.want {
				t.Fatalf("r0 = %#x, want %#x", got, tc.want)
			}
		})
	}
}

// jmp builds: setup...; r0 = 0; if cond goto yes; exit; yes: r0 = 1; exit.
func jmp(cond asm.Instruction, setup ...asm.Instruction) asm.Instructions {
	p := append(asm.Instructions{}, setup...)
	p = append(p, asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R0, 0), cond, asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("yes"), asm.Return())
	// keep r2 set when the condition uses it
	for i, ins := range p[:len(setup)] {
		if ins.Dst == asm.R2 {
			p[len(setup)] = p[i]
		}
	}
	return p
}

// TestFusedPairs checks the superinstructions, including a jump that lands on
// the second instruction of a fused pair.
func TestFusedPairs(t *testing.T) {
	prog := asm.Instructions{
		asm.Mov.Imm(asm.R3, 5),
		asm.Mov.Imm(asm.R4, 100),
		asm.Mov.Imm(asm.R0, 1),
		asm.JEq.Imm(asm.R3, 5, "second"), // taken: skips the mov
		asm.Mov.Reg(asm.R0, asm.R3),
		asm.Add.Imm(asm.R0, 7).WithSymbol("second"), // r0 = 1 + 7 = 8
		asm.Mov.Reg(asm.R5, asm.R4),
		asm.Add.Reg(asm.R5, asm.R3), // r5 = 105
		asm.Mov.Reg(asm.R6, asm.R3),
		asm.Add.Reg(asm.R6, asm.R6), // not fused (src == dst): 10
		ld64imm(asm.R7, 0xdead_beef_0000_0009),
		asm.LSh.Imm(asm.R7, 32),
		asm.RSh.Imm(asm.R7, 32), // 9
		asm.Add.Reg(asm.R0, asm.R5),
		asm.Add.Reg(asm.R0, asm.R6),
		asm.Add.Reg(asm.R0, asm.R7),
		asm.Return(),
	}
	if got := runRaw(t, prog, nil); got != 8+105+10+9 {
		t.Fatalf("r0 = %d, want %d", got, 8+105+10+9)
	}
	// The same program without the jump: the mov runs, r0 = 5 + 7.
	prog[3] = asm.JEq.Imm(asm.R3, 6, "second")
	if got := runRaw(t, prog, nil); got != 12+105+10+9 {
		t.Fatalf("r0 = %d, want %d", got, 12+105+10+9)
	}
}
