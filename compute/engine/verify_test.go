package engine_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

type rejectCase struct {
	name   string
	prog   asm.Instructions
	index  int    // expected instruction slot
	reason string // substring of the reason
	kernel bool   // the kernel's verifier must reject it too (as XDP)
}

// xdpData is the XDP prologue r2 = data, r3 = data_end.
func xdpData() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
	}
}

func cat(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func rejectCases() []rejectCase {
	exit0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	return []rejectCase{
		{"uninitialised register", asm.Instructions{asm.Mov.Reg(asm.R0, asm.R3), asm.Return()}, 0, "uninitialised register r3", true},
		{"uninitialised r0 at exit", asm.Instructions{asm.Return()}, 0, "R0 is not set", true},
		{"uninitialised stack", cat(asm.Instructions{asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord)}, asm.Instructions{asm.Return()}), 0, "uninitialised stack", false},
		{"write to R10", cat(asm.Instructions{asm.Mov.Imm(asm.R10, 0)}, exit0), 0, "R10", true},
		{"unknown helper", cat(asm.Instructions{asm.BuiltinFunc(9999).Call()}, exit0), 0, "unknown helper 9999", true},
		{"stack below frame", cat(asm.Instructions{asm.StoreImm(asm.RFP, -516, 1, asm.Word)}, exit0), 0, "outside the 512-byte frame", true},
		{"stack above frame", cat(asm.Instructions{asm.StoreImm(asm.RFP, 0, 1, asm.Word)}, exit0), 0, "outside the 512-byte frame", true},
		{"context out of bounds", cat(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 100, asm.Word)}, exit0), 0, "invalid xdp_md access", true},
		{"context write", cat(asm.Instructions{asm.StoreImm(asm.R1, 0, 1, asm.Word)}, exit0), 0, "read-only context", true},
		{"data not proven", cat(xdpData(), asm.Instructions{asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte)}, asm.Instructions{asm.Return()}), 2, "not proven inside [data, data_end)", true},
		{"data beyond proven", cat(xdpData(), asm.Instructions{
			asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, 4),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R0, asm.R2, 4, asm.Byte), // byte 4 is not proven
			asm.Return(),
		}, labeled("out", exit0)), 5, "not proven", true},
		{"data before start", cat(xdpData(), asm.Instructions{
			asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, 4),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R0, asm.R2, -1, asm.Byte),
			asm.Return(),
		}, labeled("out", exit0)), 5, "before data", true},
		{"pointer returned", asm.Instructions{asm.Mov.Reg(asm.R0, asm.R10), asm.Return()}, 1, "returns a stack pointer", false},
		{"jump out of range", cat(asm.Instructions{{OpCode: asm.Ja.Op(asm.ImmSource), Offset: 50}}, exit0), 0, "outside the program", true},
		{"jump into lddw", cat(asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			{OpCode: asm.JEq.Op(asm.ImmSource), Dst: asm.R0, Offset: 1},
			asm.LoadImm(asm.R0, 1<<40, asm.DWord),
		}, asm.Instructions{asm.Return()}), 1, "second half of a 64-bit immediate", true},
		{"fall off the end", asm.Instructions{asm.Mov.Imm(asm.R0, 0)}, 0, "falls off the end", true},
		{"unreachable", cat(exit0, exit0), 2, "unreachable", true},
		{"recursion", asm.Instructions{
			asm.Call.Label("f"), asm.Return(),
			asm.Call.Label("f").WithSymbol("f"), asm.Mov.Imm(asm.R0, 0), asm.Return(),
		}, 2, "recursive call", true},
		{"scalar dereference", cat(asm.Instructions{asm.Mov.Imm(asm.R2, 4096), asm.LoadMem(asm.R0, asm.R2, 0, asm.DWord)}, asm.Instructions{asm.Return()}), 1, "memory access through a scalar", true},
		{"pointer bitwise", cat(asm.Instructions{asm.Mov.Reg(asm.R2, asm.R10), asm.And.Imm(asm.R2, 0xff)}, exit0), 1, "pointer arithmetic with And", true},
		{"32-bit pointer arithmetic", cat(asm.Instructions{asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm32(asm.R2, 8)}, exit0), 1, "32-bit arithmetic on a pointer", true},
		{"emit from xdp", cat(asm.Instructions{asm.Mov.Imm(asm.R2, 1), asm.BuiltinFunc(abi.HelperEmit).Call()}, exit0), 1, "", true},
		// Helpers that read memory: a length that is not a constant counts
		// as its largest value, and every byte up to it must be inside the
		// frame and initialised (the stack keeps what the last run left).
		{"trace_printk of uninitialised stack, variable length", cat(asm.Instructions{
			asm.StoreImm(asm.RFP, -8, 0x6425, asm.Word), asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), asm.And.Imm(asm.R2, 15), // 0..15 bytes
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16),
			asm.BuiltinFunc(abi.HelperTrace).Call(),
		}, exit0), 6, "uninitialised stack at fp-16", true},
		{"trace_printk length unbounded", cat(asm.Instructions{
			asm.StoreImm(asm.RFP, -8, 0x6425, asm.Word), asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), asm.LSh.Imm(asm.R2, 32),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8),
			asm.BuiltinFunc(abi.HelperTrace).Call(),
		}, exit0), 6, "bound it", true},
		{"trace_printk past the frame", cat(asm.Instructions{
			asm.StoreImm(asm.RFP, -8, 0x6425, asm.Word), asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), asm.And.Imm(asm.R2, 15),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8),
			asm.BuiltinFunc(abi.HelperTrace).Call(),
		}, exit0), 6, "outside the 512-byte frame", true},
		{"memcmp of uninitialised stack, variable length", cat(stackInit(-32, 16), asm.Instructions{
			asm.LoadMem(asm.R3, asm.R1, 16, asm.Word), asm.And.Imm(asm.R3, 15),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -32), // initialised
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -16), // not
			asm.BuiltinFunc(abi.HelperMemcmp).Call(),
		}, exit0), 10, "argument r2 (15 bytes, from r3): read of uninitialised stack at fp-16", false},
		{"memcmp of uninitialised stack, large constant length", cat(stackInit(-32, 32), asm.Instructions{
			asm.Mov.Imm(asm.R3, 100000),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -32),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -32),
			asm.BuiltinFunc(abi.HelperMemcmp).Call(),
		}, exit0), 13, "outside the 512-byte frame", false},
		{"memmem needle of uninitialised stack", cat(stackInit(-8, 8), asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R4, asm.R6, 16, asm.Word), asm.And.Imm(asm.R4, 7), asm.Add.Imm(asm.R4, 1), // 1..8
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 8),
			asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -12), // 4 bytes below the initialised 8
			asm.BuiltinFunc(abi.HelperMemmem).Call(),
		}, exit0), 11, "argument r3 (8 bytes, from r4): read of uninitialised stack at fp-12", false},
	}
}

// stackInit initialises n bytes of the stack from fp+off with zero words.
func stackInit(off int16, n int16) asm.Instructions {
	var out asm.Instructions
	for o := off; o < off+n; o += 4 {
		out = append(out, asm.StoreImm(asm.RFP, o, 0, asm.Word))
	}
	return out
}

// TestHelperLengthsUpToTheirBound: a bounded variable length over memory
// that is initialised up to the bound verifies, and so does data_end - data
// over the data (checked at run time), as pattern_memmem does.
func TestHelperLengthsUpToTheirBound(t *testing.T) {
	prog := cat(stackInit(-16, 16), asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R3, asm.R6, abi.CtxLBA, asm.Word), asm.And.Imm(asm.R3, 15),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16),
		asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -16),
		asm.BuiltinFunc(abi.HelperMemcmp).Call(),
		asm.LoadMem(asm.R1, asm.R6, abi.CtxData, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, abi.CtxDataEnd, asm.DWord),
		asm.Sub.Reg(asm.R2, asm.R1),
		asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 4),
		asm.BuiltinFunc(abi.HelperMemmem).Call(),
		asm.Return(),
	})
	if _, err := engine.FromInstructions("bounded", abi.TypeFilter, prog); err != nil {
		t.Fatal(err)
	}
}

// labeled returns insns with sym on the first instruction.
func labeled(sym string, insns asm.Instructions) asm.Instructions {
	out := append(asm.Instructions{}, insns...)
	out[0] = out[0].WithSymbol(sym)
	return out
}

func TestVerifierRejects(t *testing.T) {
	for _, tc := range rejectCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.FromInstructions("t", abi.TypeXDP, tc.prog)
			var ve *verifier.Error
			if !errors.As(err, &ve) {
				t.Fatalf("want a *verifier.Error, got %v", err)
			}
			if ve.Index != tc.index || !strings.Contains(ve.Reason, tc.reason) || ve.Insn == "" {
				t.Fatalf("got %q (index %d); want index %d and reason containing %q", err, ve.Index, tc.index, tc.reason)
			}
			if !strings.Contains(err.Error(), "instruction ") {
				t.Fatalf("error %q does not name the instruction", err)
			}
		})
	}
}

// rawInsn encodes one instruction by hand, to reach encodings asm refuses.
func rawInsn(op uint8, dst, src uint8, off int16, imm int32) []byte {
	b := make([]byte, 8)
	b[0] = op
	b[1] = src<<4 | dst
	binary.LittleEndian.PutUint16(b[2:], uint16(off))
	binary.LittleEndian.PutUint32(b[4:], uint32(imm))
	return b
}

func TestVerifierRejectsEncodings(t *testing.T) {
	exit := rawInsn(0x95, 0, 0, 0, 0)
	mov0 := rawInsn(0xb7, 0, 0, 0, 0)
	cases := []struct {
		name   string
		code   [][]byte
		reason string
	}{
		{"unknown opcode", [][]byte{rawInsn(0xff, 0, 0, 0, 0), mov0, exit}, "unknown opcode"},
		{"unknown ALU op 0xe0", [][]byte{mov0, rawInsn(0xe7, 0, 0, 0, 1), exit}, "unknown opcode"},
		{"ALU imm with src register", [][]byte{rawInsn(0xb7, 0, 3, 0, 0), exit}, "reserved source register"},
		{"ALU reg with imm", [][]byte{mov0, rawInsn(0x0f, 0, 0, 0, 5), exit}, "reserved immediate"},
		{"ALU with offset", [][]byte{mov0, rawInsn(0x07, 0, 0, 3, 1), exit}, "reserved offset"},
		{"div offset 2", [][]byte{mov0, rawInsn(0x37, 0, 0, 2, 1), exit}, "reserved offset"},
		{"movsx with imm source", [][]byte{rawInsn(0xb7, 0, 0, 8, 1), exit}, "register source"},
		{"movsx32 in ALU32", [][]byte{mov0, rawInsn(0xbc, 0, 0, 32, 0), exit}, "not defined"},
		{"bswap from reg class", [][]byte{mov0, rawInsn(0xdf, 0, 0, 0, 16), exit}, "unknown opcode"},
		{"end width 8", [][]byte{mov0, rawInsn(0xd4, 0, 0, 0, 8), exit}, "byte swap width"},
		{"exit with imm", [][]byte{mov0, rawInsn(0x95, 0, 0, 0, 1)}, "reserved fields of EXIT"},
		{"ja with imm", [][]byte{mov0, rawInsn(0x05, 0, 0, 0, 1), exit}, "reserved immediate field of JA"},
		{"ja32 with offset", [][]byte{mov0, rawInsn(0x06, 0, 0, 1, 0), exit}, "reserved offset field of JA32"},
		{"jmp32 exit", [][]byte{mov0, rawInsn(0x96, 0, 0, 0, 0), exit}, "unknown opcode"},
		{"call kfunc", [][]byte{rawInsn(0x85, 0, 2, 0, 1), mov0, exit}, "kernel function"},
		{"ldx with imm", [][]byte{rawInsn(0x79, 0, 10, -8, 1), exit}, "reserved immediate"},
		{"memsx dword", [][]byte{rawInsn(0x99, 0, 10, -8, 0), exit}, "not defined"},
		{"st with src", [][]byte{rawInsn(0x7a, 10, 1, -8, 0), mov0, exit}, "reserved source register"},
		{"atomic on bytes", [][]byte{rawInsn(0xd3, 10, 1, -8, 0), mov0, exit}, "atomic operation on 1 bytes"},
		{"unknown atomic", [][]byte{rawInsn(0xdb, 10, 1, -8, 0x33), mov0, exit}, "unknown atomic operation"},
		{"lddw code address", [][]byte{rawInsn(0x18, 0, 6, 0, 0), rawInsn(0, 0, 0, 0, 0), mov0, exit}, "code address"},
		{"may_goto", [][]byte{mov0, rawInsn(0xe5, 0, 0, 0, 0), exit}, "may_goto"},
		{"legacy load dword", [][]byte{rawInsn(0x38, 0, 0, 0, 0), exit}, "double word"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			for _, c := range tc.code {
				b = append(b, c...)
			}
			_, err := engine.FromBytes("t", abi.TypeRaw, b)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want a rejection containing %q", err, tc.reason)
			}
		})
	}
	// The second half of an LDDW must be zero apart from its immediate.
	b := append(rawInsn(0x18, 0, 0, 0, 1), rawInsn(0x18, 0, 0, 0, 0)...)
	b = append(b, rawInsn(0x95, 0, 0, 0, 0)...)
	if _, err := engine.FromBytes("t", abi.TypeRaw, b); err == nil {
		t.Fatal("LDDW with a non-zero second half accepted")
	}
	if _, err := engine.FromBytes("t", abi.TypeRaw, []byte{1, 2, 3}); err == nil {
		t.Fatal("truncated instruction accepted")
	}
}

// TestVerifierRejectsContext covers struct bpfblk_ctx: bounds, the whole-
// __u64 rule for data/data_end, read-only fields, and emit's argument.
func TestVerifierRejectsContext(t *testing.T) {
	exit0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	cases := []struct {
		name   string
		prog   asm.Instructions
		reason string
	}{
		{"past the end", cat(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, abi.CtxSize, asm.Word)}, exit0), "invalid context access at offset 40"},
		{"straddling a field", cat(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, abi.CtxNSID+2, asm.Word)}, exit0), "invalid context access"},
		{"half of data", cat(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, abi.CtxData, asm.Word)}, exit0), "read as whole __u64"},
		{"negative offset", cat(asm.Instructions{asm.LoadMem(asm.R2, asm.R1, -8, asm.DWord)}, exit0), "invalid context access"},
		{"write lba", cat(asm.Instructions{asm.StoreImm(asm.R1, abi.CtxLBA, 1, asm.Word)}, exit0), "read-only context"},
		{"variable offset", cat(asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, abi.CtxNSID, asm.Word), asm.Add.Reg(asm.R1, asm.R2),
			asm.LoadMem(asm.R3, asm.R1, 0, asm.Byte)}, exit0), "variable offset added to the context pointer"},
		{"emit without ctx", cat(asm.Instructions{asm.Mov.Reg(asm.R1, asm.R10), asm.Mov.Imm(asm.R2, 1), asm.BuiltinFunc(abi.HelperEmit).Call()}, exit0), "must be the context pointer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.FromInstructions("t", abi.TypeScan, tc.prog)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want %q", err, tc.reason)
			}
		})
	}
	// The fields a filter may read are accepted.
	ok := cat(asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, abi.CtxLBA, asm.DWord),
		asm.LoadMem(asm.R3, asm.R1, abi.CtxNSID, asm.Word),
		asm.LoadMem(asm.R4, asm.R1, abi.CtxBlockSize, asm.Word),
		asm.LoadMem(asm.R5, asm.R1, abi.CtxBlockCount, asm.Half),
		asm.LoadMem(asm.R6, asm.R1, abi.CtxData, asm.DWord),
		asm.LoadMem(asm.R7, asm.R1, abi.CtxDataEnd, asm.DWord),
	}, exit0)
	if _, err := engine.FromInstructions("t", abi.TypeFilter, ok); err != nil {
		t.Fatal(err)
	}
}
