package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// TestHashMapMatchesGoMap drives a small hash map with random updates,
// deletes and lookups and compares it with a Go map.
func TestHashMapMatchesGoMap(t *testing.T) {
	spec := &MapSpec{Map: verifier.Map{Name: "h", Kind: verifier.MapHash, KeySize: 6, ValueSize: 4, MaxEntries: 50}}
	m := newMapInst(spec, 0)
	want := map[string]uint32{}
	rng := rand.New(rand.NewPCG(1, 2))
	key := make([]byte, 6)
	val := make([]byte, 4)
	for step := 0; step < 20000; step++ {
		binary.LittleEndian.PutUint16(key, uint16(rng.IntN(80)))
		switch rng.IntN(3) {
		case 0:
			v := rng.Uint32()
			binary.LittleEndian.PutUint32(val, v)
			_, had := want[string(key)]
			rc := m.update(key, val, abi.UpdateAny)
			switch {
			case rc == 0:
				want[string(key)] = v
			case rc == -abi.E2BIG && !had && len(want) == 50:
			default:
				t.Fatalf("step %d: update = %d with %d entries", step, rc, len(want))
			}
		case 1:
			_, had := want[string(key)]
			if rc := m.delete(key); (rc == 0) != had {
				t.Fatalf("step %d: delete = %d, had %v", step, rc, had)
			}
			delete(want, string(key))
		case 2:
			i := m.lookup(key)
			v, had := want[string(key)]
			if (i >= 0) != had || had && binary.LittleEndian.Uint32(m.values[i*4:]) != v {
				t.Fatalf("step %d: lookup = %d, want %v %d", step, i, had, v)
			}
		}
		if m.count != len(want) {
			t.Fatalf("step %d: count %d, want %d", step, m.count, len(want))
		}
	}
	snap := m.snapshot()
	if len(snap.Entries) != len(want) {
		t.Fatalf("snapshot has %d entries, want %d", len(snap.Entries), len(want))
	}
	for _, e := range snap.Entries {
		if v, ok := want[string(e.Key)]; !ok || binary.LittleEndian.Uint32(e.Value) != v {
			t.Fatalf("snapshot entry %x = %x, want %v %d", e.Key, e.Value, ok, v)
		}
	}
}

// TestReadOnlyMapInstanceShared: instances share read-only maps and own
// their writable ones; a read-only map refuses updates and deletes.
func TestReadOnlyMapInstanceShared(t *testing.T) {
	p, err := newProgram("p", abi.TypeScan, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, []MapSpec{
		{Map: verifier.Map{Name: ".rodata", Kind: verifier.MapArray, KeySize: 4, ValueSize: 8, MaxEntries: 1, ReadOnly: true}, Init: []byte{7}},
		{Map: verifier.Map{Name: "ro_hash", Kind: verifier.MapHash, KeySize: 4, ValueSize: 8, MaxEntries: 4, ReadOnly: true}},
		{Map: verifier.Map{Name: "counts", Kind: verifier.MapArray, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := Compile(p, Interpreter)
	if err != nil {
		t.Fatal(err)
	}
	a, b := x.NewInstance(), x.NewInstance()
	if a.maps[0] != b.maps[0] || a.maps[1] != b.maps[1] || a.maps[2] == b.maps[2] {
		t.Fatal("read-only maps not shared or writable maps shared")
	}
	if a.regions[regionMap0].wsize != 0 || a.regions[regionMap0+2].wsize == 0 {
		t.Fatal("region permissions")
	}
	k, v := make([]byte, 4), make([]byte, 8)
	if a.maps[1].update(k, v, abi.UpdateAny) != -abi.EINVAL || a.maps[1].delete(k) != -abi.EINVAL {
		t.Fatal("read-only hash map changed")
	}
	a.ResetMaps()
	if a.maps[0].values[0] != 7 {
		t.Fatal("read-only contents lost")
	}
}
