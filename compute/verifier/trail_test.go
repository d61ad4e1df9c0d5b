package verifier_test

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

func code(t *testing.T, insns asm.Instructions) asm.Instructions {
	t.Helper()
	if err := insns.Marshal(io.Discard, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	return insns
}

// badRead reads data[block_size] when block_size > 64, unchecked: the
// taken branch fails; the fall-through path (3, 4) succeeds and is explored
// first.
func badRead(t *testing.T) asm.Instructions {
	return code(t, asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R3, asm.R1, 28, asm.Word),
		asm.JGT.Imm(asm.R3, 64, "big"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Add.Reg(asm.R2, asm.R3).WithSymbol("big"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Return(),
	})
}

func rejection(t *testing.T, err error) *verifier.Error {
	t.Helper()
	var ve *verifier.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want a *verifier.Error, got %v", err)
	}
	return ve
}

// TestLogPath: with Options.Log the rejection carries the path that led to
// it, kernel-style: the branch it continued from with the register state
// there, each instruction with the state after it, and the reason; the
// other path explored (2, 3) is not part of it.
func TestLogPath(t *testing.T) {
	_, err := verifier.VerifyWith(badRead(t), nil, nil, abi.TypeFilter, &verifier.Options{Log: true})
	ve := rejection(t, err)
	if ve.Index != 6 {
		t.Fatalf("rejected at %d: %v", ve.Index, ve)
	}
	want := "from entry to 0: R1=ctx() R10=fp0\n" +
		"0: LdXMemDW dst: r2 src: r1 off: 0 imm: 0\t; R1=ctx() R2=pkt(r=0) R10=fp0\n" +
		"1: LdXMemW dst: r3 src: r1 off: 28 imm: 0\t; R2=pkt(r=0) R3=scalar(umin=0,umax=4294967295) R10=fp0\n" +
		"2: JGTImm dst: r3 off: 2 imm: 64 <big>\n" +
		"from 2 to 5: R2=pkt(r=0) R3=scalar(umin=65,umax=4294967295) R10=fp0\n" +
		"5: AddReg dst: r2 src: r3\t; R2=pkt(var=(umin=65,umax=4294967295),r=0) R10=fp0\n" +
		"6: LdXMemB dst: r0 src: r2 off: 0 imm: 0\n" +
		"6: " + ve.Reason + "\n"
	if ve.Log != want {
		t.Fatalf("log:\n%s\nwant:\n%s", ve.Log, want)
	}
	// Without the option nothing is recorded.
	_, err = verifier.Verify(badRead(t), nil, nil, abi.TypeFilter)
	if ve := rejection(t, err); ve.Log != "" || ve.Index != 6 {
		t.Fatalf("Verify without log: index %d, log %q", ve.Index, ve.Log)
	}
}

// TestLogBounded: a path longer than LogSteps shows only its end, and says
// so.
func TestLogBounded(t *testing.T) {
	insns := asm.Instructions{asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord)}
	for i := 1; i < 200; i++ {
		insns = append(insns, asm.Mov.Imm(asm.R0, int32(i)))
	}
	insns = append(insns, asm.LoadMem(asm.R0, asm.R1, 100, asm.Byte), asm.Return())
	_, err := verifier.VerifyWith(code(t, insns), nil, nil, abi.TypeFilter, &verifier.Options{Log: true, LogSteps: 8})
	ve := rejection(t, err)
	lines := strings.Split(strings.TrimSpace(ve.Log), "\n")
	if len(lines) != 11 || !strings.Contains(lines[0], "not kept") || lines[1] != "from ? to 193: R1=pkt(r=0) R10=fp0" ||
		!strings.HasPrefix(lines[len(lines)-1], "200: data access") {
		t.Fatalf("%d lines:\n%s", len(lines), ve.Log)
	}
}
