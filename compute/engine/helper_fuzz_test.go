package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/internal/layout"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// unverified builds a Program without running the verifier, to show what the
// engine alone does with arguments the verifier would refuse.
func unverified(typ abi.Type, insns asm.Instructions, maps []MapSpec) *Program {
	code := layout.New(insns, nil)
	return &Program{Name: "unverified", Type: typ, Insns: insns, Maps: maps, code: code,
		info: &verifier.Info{CtxField: make([]verifier.CtxField, code.Len()), Functions: []int{0}}}
}

var fuzzHelpers = []uint32{abi.HelperMapLookup, abi.HelperMapUpdate, abi.HelperMapDelete,
	abi.HelperTrace, abi.HelperEmit, abi.HelperMemcmp, abi.HelperMemmem, 0x7777}

var fuzzMaps = []MapSpec{
	{Map: verifier.Map{Name: "arr", Kind: verifier.MapArray, KeySize: 4, ValueSize: 16, MaxEntries: 4}},
	{Map: verifier.Map{Name: "hash", Kind: verifier.MapHash, KeySize: 8, ValueSize: 8, MaxEntries: 4}},
	{Map: verifier.Map{Name: ".rodata", Kind: verifier.MapArray, KeySize: 4, ValueSize: 32, MaxEntries: 1, ReadOnly: true},
		Init: []byte("%d %x %llu %c %% %s\x00abcdef0123456789")},
}

// helperArg turns 9 fuzz bytes into a register value: an address inside,
// at the edge of or just outside one of the regions (data, context, stack,
// each map's values), a map handle, or any 64-bit value.
func helperArg(b []byte) uint64 {
	off := uint64(binary.LittleEndian.Uint32(b[1:]))
	raw := binary.LittleEndian.Uint64(b[1:])
	switch b[0] % 10 {
	case 0:
		return regionAddr(regionData, off%300)
	case 1:
		return regionAddr(regionStack, abi.StackSize*abi.MaxFrames-off%600)
	case 2:
		return regionAddr(regionCtx, off%80)
	case 3, 4:
		return regionAddr(regionMap0+int(b[0]/10)%len(fuzzMaps), off%80)
	case 5:
		return mapHandle(int(off % 5))
	case 6: // a small length
		return off % 300
	case 7: // a length close to a limit
		return []uint64{abi.MaxCmpLen, abi.MaxCmpLen + 1, 1 << 31, 1<<31 + 1, 1 << 32, math.MaxUint64,
			math.MaxUint64 - 7, math.MaxUint32, 1 << 63}[off%9] - uint64(b[0]>>7)
	}
	return raw
}

// FuzzHelpers calls every helper with arbitrary arguments in r1-r5, in a
// program the verifier never sees (it would refuse most of them), on both
// engines: nothing may panic, and the engines must agree on the return
// value, the error, the registers, the emitted values, the maps and the
// trace output.
func FuzzHelpers(f *testing.F) {
	seed := func(id uint32, args ...[9]byte) {
		b := binary.LittleEndian.AppendUint32(nil, id)
		for len(args) < 5 {
			args = append(args, [9]byte{})
		}
		for _, a := range args {
			b = append(b, a[:]...)
		}
		f.Add(b)
	}
	arg := func(kind byte, v uint64) [9]byte {
		var a [9]byte
		a[0] = kind
		binary.LittleEndian.PutUint64(a[1:], v)
		return a
	}
	seed(abi.HelperTrace, arg(1, 16), arg(9, math.MaxUint64))    // the wrapping trace_printk
	seed(abi.HelperTrace, arg(3+20, 0), arg(6, 32), arg(9, 42))  // the .rodata format
	seed(abi.HelperMemcmp, arg(0, 0), arg(1, 64), arg(9, 1<<62)) // huge length
	seed(abi.HelperMemcmp, arg(0, 0), arg(0, 8), arg(6, 16))
	seed(abi.HelperMemmem, arg(0, 0), arg(9, 256), arg(1, 8), arg(6, 4))
	seed(abi.HelperMemmem, arg(0, 0), arg(9, math.MaxUint64-2), arg(1, 8), arg(9, math.MaxUint64))
	seed(abi.HelperMapLookup, arg(5, 1), arg(1, 16))
	seed(abi.HelperMapUpdate, arg(5, 1), arg(1, 16), arg(1, 32), arg(9, 0))
	seed(abi.HelperMapUpdate, arg(5, 2), arg(1, 16), arg(1, 32), arg(9, 0))
	seed(abi.HelperMapDelete, arg(5, 1), arg(3+10, 0))
	seed(abi.HelperEmit, arg(2, 0), arg(9, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 4+5*9 {
			return
		}
		id := fuzzHelpers[binary.LittleEndian.Uint32(b)%uint32(len(fuzzHelpers))]
		prog := asm.Instructions{}
		for r := 1; r <= 5; r++ {
			prog = append(prog, asm.LoadImm(asm.Register(r), int64(helperArg(b[4+9*(r-1):])), asm.DWord))
		}
		// Call the helper twice, so that state it left (a map entry, a
		// charge to the budget) is seen by the second call.
		prog = append(prog, asm.BuiltinFunc(id).Call(), asm.Mov.Reg(asm.R6, asm.R0))
		for r := 1; r <= 5; r++ {
			prog = append(prog, asm.LoadImm(asm.Register(r), int64(helperArg(b[4+9*(r-1):])), asm.DWord))
		}
		prog = append(prog, asm.BuiltinFunc(id).Call(), asm.Return())
		budget := int64(1 + b[len(b)-1])
		if b[len(b)-1]&1 == 0 {
			budget = 1 << 30
		}
		var want string
		for i, e := range []Engine{Interpreter, JIT} {
			if e == JIT && !jitAvailable {
				continue
			}
			got := runHelperProgram(t, e, unverified(abi.TypeScan, prog, fuzzMaps), budget)
			if i == 0 {
				want = got
			} else if got != want {
				t.Fatalf("engines differ\ninterpreter: %s\n%s:         %s\nprogram:\n%v", want, e.Name(), got, prog)
			}
		}
	})
}

func runHelperProgram(t *testing.T, e Engine, p *Program, budget int64) string {
	x, err := Compile(p, e)
	if err != nil {
		t.Fatalf("%s: %v", e.Name(), err)
	}
	inst := x.NewInstance()
	inst.SetBudget(budget)
	var trace bytes.Buffer
	inst.SetTrace(io.Writer(&trace))
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	emit := make([]uint64, 4)
	res, err := inst.Run(&Context{Data: data, BlockSize: 256, LBA: 5, NSID: 1}, emit)
	out := fmt.Sprintf("r0 %#x emitted %v err %v regs %#x trace %q", res.R0, emit[:res.Emitted], err, inst.Regs(), trace.Bytes())
	var f *Fault
	if errors.As(err, &f) && f.Size < 0 {
		t.Fatalf("%s: fault with a negative size: %v", e.Name(), f)
	}
	for _, md := range inst.Maps() {
		out += fmt.Sprintf(" map %s %x", md.Name, md)
	}
	return out
}

// TestHostileTraceLength is the bpf_trace_printk whose length a program read
// from its data: a length near 2^64 once wrapped the bounds check and made
// unsafe.Slice panic. Now it is a fault, on both engines (TestMain), through
// Instance.Run, whether or not a trace writer is set. The verifier refuses
// such a program (see TestVerifierBoundsHelperLengths); this runs it without
// the verifier.
func TestHostileTraceLength(t *testing.T) {
	for _, n := range []uint64{math.MaxUint64, math.MaxUint64 - 100, 1 << 63, 1<<32 + 8, abi.MaxCmpLen + 1, 4097} {
		prog := asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Imm(asm.R1, 0x6425), // "%d"
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
			asm.LoadMem(asm.R2, asm.R6, abi.CtxData, asm.DWord),
			asm.LoadMem(asm.R2, asm.R2, 0, asm.DWord), // n from the data
			asm.BuiltinFunc(abi.HelperTrace).Call(),
			asm.Return(),
		}
		x, err := Compile(unverified(abi.TypeFilter, prog, nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []io.Writer{nil, io.Discard} {
			inst := x.NewInstance()
			inst.SetTrace(w)
			data := binary.LittleEndian.AppendUint64(nil, n)
			data = append(data, make([]byte, 56)...)
			res, err := inst.Run(&Context{Data: data, BlockSize: 64}, nil)
			var f *Fault
			switch {
			case n > abi.MaxCmpLen:
				// Longer than any format: -EINVAL, as for memcmp.
				if err != nil || inst.Regs()[0] != negErrno(abi.EINVAL) {
					t.Fatalf("n %#x: r0 %#x, %v, err %v; want -EINVAL", n, inst.Regs()[0], res, err)
				}
			case !errors.As(err, &f) || f.PC != 7 || f.Size != int(n):
				t.Fatalf("n %#x: want a fault at instruction 7 of %d bytes, got %v", n, n, err)
			}
		}
	}
}

// TestBytesAtCannotWrap: lengths near 2^64 must not wrap the bounds check.
func TestBytesAtCannotWrap(t *testing.T) {
	x, err := Compile(unverified(abi.TypeRaw, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, nil), Interpreter)
	if err != nil {
		t.Fatal(err)
	}
	m := x.NewInstance()
	top := regionAddr(regionStack, abi.StackSize*abi.MaxFrames)
	for _, c := range []struct {
		addr, n uint64
		ok      bool
	}{
		{top - 8, 8, true}, {top - 8, 9, false}, {top, 0, true}, {top - 8, math.MaxUint64, false},
		{top - 8, math.MaxUint64 - 6, false}, {regionAddr(regionStack, 0xffff_ffff), 2, false},
		{regionAddr(regionStack, 0), 1 << 63, false}, {regionAddr(regionStack, 16), math.MaxUint64 - 15, false},
	} {
		if got := m.bytesAt(c.addr, c.n); (got != nil) != c.ok || got != nil && uint64(len(got)) != c.n {
			t.Errorf("bytesAt(%#x, %#x) = %d bytes, want ok %v", c.addr, c.n, len(got), c.ok)
		}
	}
}
