package engine_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
)

func mustInstance(t *testing.T, typ abi.Type, insns asm.Instructions) *engine.Instance {
	t.Helper()
	p, err := engine.FromInstructions("hostile", typ, insns)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x.NewInstance()
}

// canaried returns a data slice of n bytes inside a larger buffer whose
// surrounding bytes are checked by the returned function.
func canaried(n int) ([]byte, func(t *testing.T)) {
	buf := bytes.Repeat([]byte{0xa5}, n+2048)
	data := buf[1024 : 1024+n : 1024+n]
	for i := range data {
		data[i] = byte(i)
	}
	return data, func(t *testing.T) {
		t.Helper()
		for i, b := range buf {
			if (i < 1024 || i >= 1024+n) && b != 0xa5 {
				t.Fatalf("byte %d outside the data was changed", i-1024)
			}
		}
	}
}

// TestHostileAccessesFault runs raw programs (whose data accesses the
// verifier cannot prove, so they are checked at run time) that reach outside
// their memory: each must stop with a *engine.Fault and touch nothing.
func TestHostileAccessesFault(t *testing.T) {
	exit := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	cases := []struct {
		name string
		prog asm.Instructions
	}{
		{"read before data", cat(asm.Instructions{asm.LoadMem(asm.R0, asm.R1, -1, asm.Byte)}, asm.Instructions{asm.Return()})},
		{"read at data_end", cat(asm.Instructions{asm.Add.Reg(asm.R1, asm.R2), asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, asm.Instructions{asm.Return()})},
		{"read straddling data_end", cat(asm.Instructions{asm.Add.Reg(asm.R1, asm.R2), asm.LoadMem(asm.R0, asm.R1, -4, asm.DWord)}, asm.Instructions{asm.Return()})},
		{"write far after data", cat(asm.Instructions{asm.Add.Reg(asm.R1, asm.R2), asm.StoreMem(asm.R1, 1000, asm.R2, asm.DWord)}, exit)},
		{"write before data", cat(asm.Instructions{asm.Mov.Imm(asm.R3, -100), asm.Add.Reg(asm.R1, asm.R3), asm.StoreMem(asm.R1, 0, asm.R2, asm.Byte)}, exit)},
		{"forged pointer into the context (read-only)", cat(asm.Instructions{
			// len (64) << 26 == 1 << 32: the context's region, hidden from
			// the verifier behind the data length.
			asm.Mov.Reg(asm.R3, asm.R2), asm.LSh.Imm(asm.R3, 26), asm.Add.Reg(asm.R1, asm.R3),
			asm.StoreMem(asm.R1, 0, asm.R2, asm.DWord)}, exit)},
		{"forged pointer beyond all regions", cat(asm.Instructions{
			asm.Mov.Reg(asm.R3, asm.R2), asm.LSh.Imm(asm.R3, 41), asm.Add.Reg(asm.R1, asm.R3),
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, asm.Instructions{asm.Return()})},
		{"wrap around to below data", cat(asm.Instructions{
			asm.Mov.Reg(asm.R3, asm.R2), asm.Neg.Imm(asm.R3, 0), asm.LSh.Imm(asm.R3, 27), asm.Add.Reg(asm.R1, asm.R3),
			asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte)}, asm.Instructions{asm.Return()})},
		{"atomic beyond data", cat(asm.Instructions{asm.Add.Reg(asm.R1, asm.R2), asm.AddAtomic.Mem(asm.R1, asm.R2, asm.DWord, 0)}, exit)},
		{"memcmp reading past data", cat(asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1), asm.Mov.Reg(asm.R2, asm.R1), asm.Mov.Imm(asm.R3, 1<<20),
			asm.Mov.Reg(asm.R1, asm.R6), asm.BuiltinFunc(abi.HelperMemcmp).Call()}, asm.Instructions{asm.Return()})},
		{"memmem haystack past data", cat(asm.Instructions{
			asm.Mov.Imm(asm.R2, 4096), asm.Mov.Reg(asm.R3, asm.R1), asm.Mov.Imm(asm.R4, 1),
			asm.BuiltinFunc(abi.HelperMemmem).Call()}, asm.Instructions{asm.Return()})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inst := mustInstance(t, abi.TypeRaw, tc.prog)
			data, check := canaried(64)
			_, err := inst.Run(&engine.Context{Data: data}, nil)
			var f *engine.Fault
			if !errors.As(err, &f) {
				t.Fatalf("want a fault, got %v", err)
			}
			if f.Error() == "" || f.Size == 0 {
				t.Fatalf("fault without detail: %+v", f)
			}
			check(t)
		})
	}
}

// TestInfiniteLoopStops: loops are not proven bounded; the per-run budget
// stops them with ErrBudget.
func TestInfiniteLoopStops(t *testing.T) {
	for _, prog := range []asm.Instructions{
		{asm.Mov.Imm(asm.R0, 0), asm.Add.Imm(asm.R0, 1).WithSymbol("l"), asm.Ja.Label("l"), asm.Return()},
		{asm.Mov.Imm(asm.R0, 0), asm.Ja.Label("self").WithSymbol("self"), asm.Return()},
		// A loop whose exit test can never succeed.
		{asm.Mov.Imm(asm.R0, 0), asm.Add.Imm(asm.R0, 2).WithSymbol("l"), asm.JNE.Imm(asm.R0, 1, "l"), asm.Return()},
	} {
		p, err := engine.FromInstructions("loop", abi.TypeRaw, prog)
		if err != nil {
			// Unreachable exits are rejected; that is also a stop.
			t.Logf("rejected at load: %v", err)
			continue
		}
		x, _ := engine.Compile(p, nil)
		inst := x.NewInstance()
		inst.SetBudget(100000)
		_, err = inst.Run(&engine.Context{Data: make([]byte, 8)}, nil)
		if !errors.Is(err, engine.ErrBudget) {
			t.Fatalf("want ErrBudget, got %v", err)
		}
		// The instance stays usable.
		if _, err := inst.Run(&engine.Context{Data: make([]byte, 8)}, nil); !errors.Is(err, engine.ErrBudget) {
			t.Fatalf("second run: %v", err)
		}
	}
}

// TestFilterDataIsReadOnly: a filter cannot write its block data.
func TestFilterDataIsReadOnly(t *testing.T) {
	prog := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, abi.CtxData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R1, abi.CtxDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R0, 0),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.StoreImm(asm.R2, 0, 1, asm.Byte),
		asm.Return().WithSymbol("out"),
	}
	_, err := engine.FromInstructions("w", abi.TypeFilter, prog)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("read-only block data")) {
		t.Fatalf("got %v", err)
	}
}

// TestLocalCalls runs bpf-to-bpf calls with their own frames: the callee's
// stack does not clobber the caller's, and r6-r9 survive.
func TestLocalCalls(t *testing.T) {
	prog := asm.Instructions{
		asm.Mov.Imm(asm.R6, 7),
		asm.Mov.Imm(asm.R2, 100),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R1, 5),
		asm.Call.Label("double"),
		asm.LoadMem(asm.R2, asm.RFP, -8, asm.DWord), // still 100
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Add.Reg(asm.R0, asm.R6), // 10 + 100 + 7
		asm.Return(),
		asm.Mov.Imm(asm.R6, 1000).WithSymbol("double"),
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord), // the callee's own frame
		asm.Mov.Reg(asm.R0, asm.R1),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
	}
	inst := mustInstance(t, abi.TypeRaw, prog)
	res, err := inst.Run(&engine.Context{Data: make([]byte, 8)}, nil)
	if err != nil || res.R0 != 117 {
		t.Fatalf("r0 = %d, err %v; want 117", res.R0, err)
	}
	// Nine nested frames exceed the call depth.
	var deep asm.Instructions
	for i := 0; i < 9; i++ {
		f := asm.Call.Label("f" + string(rune('a'+i+1)))
		if i > 0 {
			f = f.WithSymbol("f" + string(rune('a'+i)))
		}
		deep = append(deep, f, asm.Return())
	}
	deep = append(deep, asm.Mov.Imm(asm.R0, 0).WithSymbol("fj"), asm.Return())
	if _, err := engine.FromInstructions("deep", abi.TypeRaw, deep); err == nil {
		t.Fatal("9-deep call chain accepted")
	}
}
