package engine_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// specWith builds a collection like clang's: a .bss global and a hash map
// referenced by name from a bpfblk/scan program.
func specWith(insns asm.Instructions) *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			".bss":   {Name: ".bss", Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1},
			"counts": {Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			"prog": {Name: "prog", Type: ebpf.UnspecifiedProgram, SectionName: "bpfblk/scan", Instructions: insns, License: "GPL"},
		},
		ByteOrder: binary.LittleEndian,
	}
}

func loadMapValue(dst asm.Register, m string, off uint32) asm.Instruction {
	return asm.LoadMapValue(dst, 0, off).WithReference(m)
}

func loadMapPtr(dst asm.Register, m string) asm.Instruction {
	return asm.LoadMapPtr(dst, 0).WithReference(m)
}

// TestGlobalsAndHashMapThroughSpec: direct .bss value loads (LDDW src=2),
// map pointers (src=1), lookup with a NULL check, update, and a bpf-to-bpf
// call, loaded through LoadSpec like a clang object.
func TestGlobalsAndHashMapThroughSpec(t *testing.T) {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// bss.counter (offset 8) += 1
		loadMapValue(asm.R7, ".bss", 8),
		asm.LoadMem(asm.R2, asm.R7, 0, asm.DWord),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R7, 0, asm.R2, asm.DWord),
		// key = nsid; counts[key] += 1 or = 1
		asm.LoadMem(asm.R2, asm.R6, 24, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		loadMapPtr(asm.R1, "counts"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "insert"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label("done"),
		asm.Mov.Imm(asm.R1, 1).WithSymbol("insert"),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		loadMapPtr(asm.R1, "counts"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R1, 20).WithSymbol("done"),
		asm.Call.Label("twice"),
		asm.Return(),
		asm.Mov.Reg(asm.R0, asm.R1).WithSymbol("twice"),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
	}
	p, err := engine.LoadSpec(specWith(insns), nil)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := engine.Compile(p, nil)
	a, b := x.NewInstance(), x.NewInstance()
	for i, nsid := range []uint32{1, 2, 1, 1, 3} {
		inst := a
		if i%2 == 1 {
			inst = b
		}
		res, err := inst.Run(&engine.Context{Data: make([]byte, 512), NSID: nsid}, nil)
		if err != nil || res.R0 != 40 {
			t.Fatalf("run %d: r0 %d, %v", i, res.R0, err)
		}
	}
	got := map[string]engine.MapData{}
	for _, m := range engine.MergeMaps(a, b) {
		got[m.Name] = m
	}
	if c := binary.LittleEndian.Uint64(got[".bss"].Entries[0].Value[8:]); c != 5 {
		t.Fatalf(".bss counter %d, want 5", c)
	}
	want := map[uint32]uint64{1: 3, 2: 1, 3: 1}
	for _, e := range got["counts"].Entries {
		if k := binary.LittleEndian.Uint32(e.Key); binary.LittleEndian.Uint64(e.Value) != want[k] {
			t.Fatalf("counts[%d] = %d, want %d", k, binary.LittleEndian.Uint64(e.Value), want[k])
		}
		delete(want, binary.LittleEndian.Uint32(e.Key))
	}
	if len(want) != 0 {
		t.Fatalf("missing keys %v", want)
	}
}

func TestMapRejections(t *testing.T) {
	cases := []struct {
		name   string
		insns  asm.Instructions
		reason string
	}{
		{"NULL not checked", asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			loadMapPtr(asm.R1, "counts"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
			asm.Return(),
		}, "possible NULL dereference"},
		{"value out of bounds", asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			loadMapPtr(asm.R1, "counts"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R0, asm.R0, 4, asm.DWord),
			asm.Return().WithSymbol("out"),
		}, "outside the 8-byte value of map counts"},
		{"uninitialised key", asm.Instructions{
			loadMapPtr(asm.R1, "counts"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}, "uninitialised stack"},
		{"global out of bounds", asm.Instructions{
			loadMapValue(asm.R1, ".bss", 8),
			asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord),
			asm.Return(),
		}, "outside the 16-byte value of map .bss"},
		{"map pointer dereference", asm.Instructions{
			loadMapPtr(asm.R1, "counts"),
			asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord),
			asm.Return(),
		}, "memory access through a map pointer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.LoadSpec(specWith(tc.insns), nil)
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want %q", err, tc.reason)
			}
		})
	}
}
