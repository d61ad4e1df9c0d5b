package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// Programs aimed at the JIT's trust in the verifier: it runs accesses the
// verifier proved without a check (RATIONALE.md, "Proven accesses"). Each
// must be rejected, or run on the JIT with proofs, the JIT with every check
// (Program.Checked) and the interpreter with the same result, the same error
// kind, the same data, and nothing outside the data changed.

var proofMaps = []MapSpec{
	{Map: verifier.Map{Name: "a", Kind: verifier.MapArray, KeySize: 4, ValueSize: 16, MaxEntries: 2}},
	{Map: verifier.Map{Name: "b", Kind: verifier.MapArray, KeySize: 4, ValueSize: 16, MaxEntries: 2}},
	{Map: verifier.Map{Name: "h", Kind: verifier.MapHash, KeySize: 8, ValueSize: 8, MaxEntries: 4}},
}

// xdpData: r6 = data, r7 = data_end.
var xdpData = asm.Instructions{
	asm.LoadMem(asm.R6, asm.R1, abi.XDPData, asm.Word),
	asm.LoadMem(asm.R7, asm.R1, abi.XDPDataEnd, asm.Word),
}

// proveBytes: r2 = r6 + n; if r2 > r7 return 0.
func proveBytes(n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R2, asm.R6), asm.Add.Imm(asm.R2, n),
		asm.Mov.Imm(asm.R0, 0), asm.JGT.Reg(asm.R2, asm.R7, "out"),
	}
}

var outExit = asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}

func proofProgram(t *testing.T, prog asm.Instructions) (*Program, error) {
	t.Helper()
	prog = slices.Clone(prog)
	if err := prog.Marshal(discard{}, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	ref := func(i int) int { return int(prog[i].Constant) }
	return newProgram("proof", abi.TypeXDP, prog, proofMaps, ref)
}

type proofRun struct {
	r0    uint64
	fault bool
	err   bool
	data  []byte
}

func runProof(t *testing.T, p *Program, e Engine, checked bool, n int, prep func([]byte)) proofRun {
	t.Helper()
	q := *p
	q.Checked = checked
	x, err := Compile(&q, e)
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0xa5}, n+2048)
	data := buf[1024 : 1024+n : 1024+n]
	for i := range data {
		data[i] = byte(i)
	}
	if prep != nil {
		prep(data)
	}
	res, err := x.NewInstance().Run(&Context{Data: data}, nil)
	for i, b := range buf {
		if (i < 1024 || i >= 1024+n) && b != 0xa5 {
			t.Fatalf("%s (checked %v): byte %d outside the data was changed", e.Name(), checked, i-1024)
		}
	}
	var f *Fault
	return proofRun{r0: res.R0, fault: errors.As(err, &f), err: err != nil, data: bytes.Clone(data)}
}

func TestHostileProofs(t *testing.T) {
	forged := int64(regionAddr(regionData, 100)) // 36 bytes past a 64-byte data, in the canary
	cases := []struct {
		name       string
		prog       asm.Instructions
		n          int
		prep       func([]byte)
		wantReject string // the reason
	}{
		{
			// A data pointer made by an earlier execution of the same
			// instruction shares its id with the new one: comparing the
			// new one with data_end must not prove the old one.
			name: "stale pointer from an earlier loop iteration", n: 64, wantReject: "not proven inside",
			prep: func(d []byte) { d[0], d[1] = 255, 0 },
			prog: proofCat(xdpData, proveBytes(2), asm.Instructions{
				asm.LoadMem(asm.R2, asm.R6, 0, asm.Byte),
				asm.LoadMem(asm.R4, asm.R6, 1, asm.Byte),
				asm.Mov.Imm(asm.R9, 0),
				asm.Mov.Reg(asm.R5, asm.R6).WithSymbol("loop"),
				asm.Add.Reg(asm.R5, asm.R2),
				asm.JNE.Imm(asm.R9, 0, "second"),
				asm.Mov.Reg(asm.R8, asm.R5),
				asm.Mov.Imm(asm.R9, 1),
				asm.Mov.Reg(asm.R2, asm.R4),
				asm.Ja.Label("loop"),
				asm.Mov.Reg(asm.R0, asm.R5).WithSymbol("second"),
				asm.Add.Imm(asm.R0, 1),
				asm.JGT.Reg(asm.R0, asm.R7, "out"),
				asm.LoadMem(asm.R0, asm.R8, 0, asm.Byte),
				asm.StoreImm(asm.R8, 0, 0x5a, asm.Byte),
				asm.Return(),
			}, outExit),
		},
		{
			name: "spilled pointer overwritten through an alias of its slot", n: 64, wantReject: "through a scalar",
			prog: proofCat(xdpData, proveBytes(8), asm.Instructions{
				asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
				asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -8),
				asm.LoadImm(asm.R4, forged, asm.DWord),
				asm.StoreMem(asm.R3, 0, asm.R4, asm.DWord),
				asm.LoadMem(asm.R5, asm.RFP, -8, asm.DWord),
				asm.StoreImm(asm.R5, 0, 0x5a, asm.Byte),
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}, outExit),
		},
		{
			name: "spilled pointer partly overwritten", n: 64, wantReject: "through a scalar",
			prog: proofCat(xdpData, proveBytes(8), asm.Instructions{
				asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
				asm.StoreImm(asm.RFP, -8, 100, asm.Byte),
				asm.LoadMem(asm.R5, asm.RFP, -8, asm.DWord),
				asm.StoreImm(asm.R5, 0, 0x5a, asm.Byte),
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}, outExit),
		},
		{
			name: "spilled pointer overwritten by a callee through a pointer to the slot", n: 64, wantReject: "through a scalar",
			prog: proofCat(xdpData, proveBytes(8), asm.Instructions{
				asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
				asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8),
				asm.Call.Label("clobber"),
				asm.LoadMem(asm.R5, asm.RFP, -8, asm.DWord),
				asm.StoreImm(asm.R5, 0, 0x5a, asm.Byte),
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}, outExit, asm.Instructions{
				asm.LoadImm(asm.R2, forged, asm.DWord).WithSymbol("clobber"),
				asm.StoreMem(asm.R1, 0, asm.R2, asm.DWord),
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}),
		},
		{
			name: "a bounds check in a callee does not prove the caller's pointer", n: 4, wantReject: "not proven inside",
			prog: proofCat(xdpData, asm.Instructions{
				asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Reg(asm.R2, asm.R7),
				asm.Call.Label("check"),
				asm.StoreImm(asm.R6, 8, 0x5a, asm.Word),
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}, asm.Instructions{
				asm.Mov.Reg(asm.R3, asm.R1).WithSymbol("check"), asm.Add.Imm(asm.R3, 16),
				asm.Mov.Imm(asm.R0, 0), asm.JGT.Reg(asm.R3, asm.R2, "ret"),
				asm.Mov.Imm(asm.R0, 1),
				asm.Return().WithSymbol("ret"),
			}),
		},
		{
			// Valid: the callee adds a bounded scalar to the caller's
			// pointer and proves the result itself.
			name: "pointer arithmetic with a bounded scalar in a callee", n: 32,
			prep: func(d []byte) { d[0] = 13 },
			prog: proofCat(xdpData, proveBytes(1), asm.Instructions{
				asm.LoadMem(asm.R2, asm.R6, 0, asm.Byte),
				asm.And.Imm(asm.R2, 15),
				asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Reg(asm.R3, asm.R7),
				asm.Call.Label("f"),
				asm.Return(),
			}, outExit, asm.Instructions{
				asm.Add.Reg(asm.R1, asm.R2).WithSymbol("f"),
				asm.Mov.Reg(asm.R4, asm.R1), asm.Add.Imm(asm.R4, 4),
				asm.Mov.Imm(asm.R0, 7), asm.JGT.Reg(asm.R4, asm.R3, "fret"),
				asm.LoadMem(asm.R0, asm.R1, 0, asm.Word),
				asm.StoreImm(asm.R1, 0, 0x5a5a, asm.Word),
				asm.Return().WithSymbol("fret"),
			}),
		},
		{
			// A variable part the verifier cannot bound may wrap the
			// pointer below the data's region, where the comparison with
			// data_end passes: such accesses stay checked.
			name: "unbounded variable offset wrapped below the data", n: 64,
			prep: func(d []byte) { binary.LittleEndian.PutUint64(d, ^uint64(1<<32-1)) },
			prog: proofCat(xdpData, proveBytes(8), asm.Instructions{
				asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
				asm.Add.Reg(asm.R6, asm.R2),
				asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, 1),
				asm.JGT.Reg(asm.R3, asm.R7, "out"),
				asm.LoadMem(asm.R0, asm.R6, 0, asm.Byte),
				asm.Return(),
			}, outExit),
		},
		{
			// Helpers never change the data or its length during a run,
			// so a proof survives a helper call.
			name: "proof used after a helper call", n: 16,
			prog: proofCat(xdpData, proveBytes(8), asm.Instructions{
				asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Reg(asm.R2, asm.R6), asm.Mov.Imm(asm.R3, 8),
				asm.BuiltinFunc(abi.HelperMemcmp).Call(),
				asm.LoadMem(asm.R0, asm.R6, 4, asm.Word),
				asm.StoreImm(asm.R6, 4, 0x5a, asm.Word),
				asm.Return(),
			}, outExit),
		},
		{
			// One load reached with values of two maps: not proven, checked.
			name: "one load through values of different maps", n: 8,
			prog: proofCat(xdpData, asm.Instructions{
				asm.StoreImm(asm.RFP, -4, 1, asm.Word),
				asm.LoadMapPtr(asm.R1, 0),
				asm.JEq.Imm(asm.R6, 0, "a"),
				asm.LoadMapPtr(asm.R1, 1),
				asm.Mov.Reg(asm.R2, asm.RFP).WithSymbol("a"), asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.StoreImm(asm.R0, 8, 9, asm.Word),
				asm.LoadMem(asm.R0, asm.R0, 8, asm.DWord),
				asm.Return(),
			}, outExit),
		},
		{
			// Hash values stay in the map's preallocated memory after a
			// delete, as in Linux; the write stays inside the map.
			name: "map value written after its key was deleted", n: 8,
			prog: proofCat(xdpData, asm.Instructions{
				asm.StoreImm(asm.RFP, -8, 1, asm.Word), asm.StoreImm(asm.RFP, -4, 0, asm.Word),
				asm.StoreImm(asm.RFP, -16, 2, asm.Word), asm.StoreImm(asm.RFP, -12, 0, asm.Word),
				asm.LoadMapPtr(asm.R1, 2),
				asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
				asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16),
				asm.Mov.Imm(asm.R4, 0),
				asm.FnMapUpdateElem.Call(),
				asm.LoadMapPtr(asm.R1, 2),
				asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.Mov.Reg(asm.R8, asm.R0),
				asm.LoadMapPtr(asm.R1, 2),
				asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
				asm.FnMapDeleteElem.Call(),
				asm.StoreImm(asm.R8, 0, 42, asm.Word),
				asm.LoadMem(asm.R0, asm.R8, 0, asm.DWord),
				asm.Return(),
			}, outExit),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := proofProgram(t, tc.prog)
			if tc.wantReject != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantReject) {
					t.Fatalf("got %v, want a rejection for %q", err, tc.wantReject)
				}
				t.Logf("rejected: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			want := runProof(t, p, Interpreter, false, tc.n, tc.prep)
			for _, e := range []Engine{Default(), JIT, Interpreter} {
				for _, checked := range []bool{false, true} {
					if got := runProof(t, p, e, checked, tc.n, tc.prep); got.r0 != want.r0 || got.fault != want.fault ||
						got.err != want.err || !bytes.Equal(got.data, want.data) {
						t.Fatalf("%s (checked %v): %+v, interpreter %+v", e.Name(), checked, got, want)
					}
				}
			}
			t.Logf("r0 %d fault %v", want.r0, want.fault)
		})
	}
}

// TestProofsRecorded: what the verifier proves reaches the compiled form;
// raw programs' data accesses, loads reached through different maps and
// unbounded variable offsets are left checked, and Program.Checked drops
// every proof from the JIT.
func TestProofsRecorded(t *testing.T) {
	prog := proofCat(xdpData, proveBytes(8), asm.Instructions{
		asm.StoreImm(asm.RFP, -8, 1, asm.Word),    // stack
		asm.LoadMem(asm.R0, asm.R6, 0, asm.DWord), // data
		asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord), // data, then unbounded
		asm.Add.Reg(asm.R6, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R6), asm.Add.Imm(asm.R3, 1),
		asm.JGT.Reg(asm.R3, asm.R7, "out"),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Byte), // unbounded variable part: checked
		asm.Return(),
	}, outExit)
	p, err := proofProgram(t, prog)
	if err != nil {
		t.Fatal(err)
	}
	code, err := compile(p.code, p.info, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint8
	for _, in := range code {
		if in.op >= opLdxB && in.op <= opLdxSW || in.op >= opStB && in.op <= opStxDW {
			got = append(got, in.rgn)
		}
	}
	// (The XDP context loads of data and data_end are not loads once compiled.)
	// Stack, data, data, and the unbounded one.
	want := []uint8{regionStack, regionData, regionData, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("regions %v, want %v", got, want)
	}
	raw, err := FromInstructions("raw", abi.TypeRaw, asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte), asm.StoreImm(asm.RFP, -8, 1, asm.Word), asm.Return()})
	if err != nil {
		t.Fatal(err)
	}
	if a := raw.info.Access; a[0].Region != verifier.RegionNone || a[1].Region != verifier.RegionStack {
		t.Fatalf("raw program: %+v", a)
	}
}

func proofCat(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
