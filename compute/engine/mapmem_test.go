package engine_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// mapsSpec builds a bpfblk/scan program that looks up key 0 in each of maps
// (so the loader collects every one of them) and returns 0.
func mapsSpec(maps ...*ebpf.MapSpec) *ebpf.CollectionSpec {
	insns := asm.Instructions{asm.StoreImm(asm.RFP, -4, 0, asm.Word)}
	cs := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{}, ByteOrder: binary.LittleEndian}
	for _, m := range maps {
		cs.Maps[m.Name] = m
		insns = append(insns,
			loadMapPtr(asm.R1, m.Name),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call())
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	cs.Programs = map[string]*ebpf.ProgramSpec{
		"prog": {Name: "prog", SectionName: "bpfblk/scan", Instructions: insns, License: "GPL"},
	}
	return cs
}

// TestHugeHashMapRefused: a hash map of 2^28 entries with 256-byte keys
// (whose slot table alone would be tens of GiB) is refused at load with the
// map's name, shape and the limit, before anything is allocated.
func TestHugeHashMapRefused(t *testing.T) {
	cs := mapsSpec(&ebpf.MapSpec{Name: "huge", Type: ebpf.Hash, KeySize: 256, ValueSize: 1, MaxEntries: 1 << 28})
	_, err := engine.LoadSpec(cs, nil)
	var me *engine.MapMemoryError
	if !errors.As(err, &me) {
		t.Fatalf("loaded, or not a map memory error: %v", err)
	}
	if me.Limit != engine.DefaultMapMemory || me.Need < 64<<30 || me.Instances != 1 {
		t.Fatalf("%+v", me)
	}
	for _, want := range []string{"program prog", "hash map huge", "268435456 entries", "key 256 B", "value 1 B", "limit of 1 GiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// eightArrays is eight 256 MiB arrays: 2 GiB of maps per instance.
func eightArrays() *ebpf.CollectionSpec {
	var ms []*ebpf.MapSpec
	for i := 0; i < 8; i++ {
		ms = append(ms, &ebpf.MapSpec{Name: fmt.Sprintf("a%d", i), Type: ebpf.Array, KeySize: 4, ValueSize: 4096, MaxEntries: 65536})
	}
	return mapsSpec(ms...)
}

// TestMapMemoryLimit: eight 256 MiB arrays are refused by default and load
// with a larger limit; the limit then applies to the instances a caller
// creates. Nothing here allocates the maps.
func TestMapMemoryLimit(t *testing.T) {
	_, err := engine.LoadSpec(eightArrays(), nil)
	var me *engine.MapMemoryError
	if !errors.As(err, &me) || me.Need < 2<<30 {
		t.Fatalf("default limit: %v", err)
	}
	if !strings.Contains(err.Error(), "array map a0 (65536 entries, key 4 B, value 4096 B) 256 MiB each") ||
		!strings.Contains(err.Error(), "; 4 more") {
		t.Fatalf("error %q does not list the maps", err)
	}
	p, err := engine.LoadSpec(eightArrays(), &engine.LoadOptions{MapMemory: 5 << 30})
	if err != nil {
		t.Fatal(err)
	}
	shared, per := p.MapMemory()
	if shared != 0 || per < 8<<28 || per > 8<<28+8*1024 {
		t.Fatalf("shared %d, per instance %d", shared, per)
	}
	if p.MapMemoryLimit() != 5<<30 {
		t.Fatalf("limit %d", p.MapMemoryLimit())
	}
	if err := p.CheckInstances(2); err != nil {
		t.Fatal(err)
	}
	err = p.CheckInstances(3)
	if !errors.As(err, &me) || me.Instances != 3 || !strings.Contains(err.Error(), "for 3 instances") {
		t.Fatalf("3 instances: %v", err)
	}
	// Instances at load.
	if _, err := engine.LoadSpec(eightArrays(), &engine.LoadOptions{MapMemory: 5 << 30, Instances: 3}); !errors.As(err, &me) {
		t.Fatalf("3 instances at load: %v", err)
	}
	if _, err := engine.LoadSpec(eightArrays(), &engine.LoadOptions{MapMemory: -1}); err == nil {
		t.Fatal("negative limit accepted")
	}
}

// TestMapShapeLimits: maps whose shape alone is absurd are refused with
// their name and sizes, whatever the memory limit.
func TestMapShapeLimits(t *testing.T) {
	big := &engine.LoadOptions{MapMemory: 1 << 62}
	cases := []struct {
		m    ebpf.MapSpec
		want string
	}{
		{ebpf.MapSpec{Type: ebpf.Hash, KeySize: 1024, ValueSize: 8, MaxEntries: 4}, "key size over 512 B"},
		{ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8 << 20, MaxEntries: 1}, "value size over 4194304 B"},
		{ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: 1 << 31}, "more than 1073741824 entries"},
		{ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4096, MaxEntries: 1 << 22}, "16 GiB of values, over the 4 GiB"},
		{ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 0, MaxEntries: 1}, "must be non-zero"},
		{ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 0}, "must be non-zero"},
	}
	for _, tc := range cases {
		tc.m.Name = "m"
		_, err := engine.LoadSpec(mapsSpec(&tc.m), big)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), " map m (") {
			t.Errorf("%+v: got %v, want %q", tc.m, err, tc.want)
		}
	}
}

// TestReadOnlyMapsShared: .rodata is allocated once per executable and
// counted once, whatever the number of instances.
func TestReadOnlyMapsShared(t *testing.T) {
	rodata := &ebpf.MapSpec{Name: ".rodata", Type: ebpf.Array, KeySize: 4, ValueSize: 64 << 10, MaxEntries: 1,
		Contents: []ebpf.MapKV{{Key: uint32(0), Value: make([]byte, 64<<10)}}}
	counts := &ebpf.MapSpec{Name: "counts", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1024}
	p, err := engine.LoadSpec(mapsSpec(rodata, counts), &engine.LoadOptions{MapMemory: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	shared, per := p.MapMemory()
	// .rodata's instance and its initial contents; counts per instance.
	if shared < 128<<10 || shared > 129<<10 || per < 8<<10 || per > 9<<10 {
		t.Fatalf("shared %d, per instance %d", shared, per)
	}
	// 200 KiB holds the shared 128 KiB and eight 8 KiB instances, not ten.
	if err := p.CheckInstances(8); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckInstances(10); err == nil {
		t.Fatal("10 instances fit in 200 KiB")
	}
}

// BenchmarkAggregateHashMap runs the count/sum aggregate (one hash map
// lookup or insert per 16-byte record, 1000 distinct keys) over 64 KiB.
func BenchmarkAggregateHashMap(b *testing.B) {
	p, err := aggregateProg()
	if err != nil {
		b.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		b.Fatal(err)
	}
	inst := x.NewInstance()
	data := records(rand.New(rand.NewPCG(5, 6)), 4096, 1000)
	ctx := &engine.Context{Data: data, BlockSize: 512}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inst.Run(ctx, nil); err != nil {
			b.Fatal(err)
		}
	}
}
