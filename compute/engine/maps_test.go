package engine_test

import (
	"encoding/binary"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
)

var (
	aggregateProg = sync.OnceValues(func() (*engine.Program, error) {
		cs, err := filters.LoadAggregate()
		if err != nil {
			return nil, err
		}
		return engine.LoadSpec(cs, nil)
	})
)

func records(rng *rand.Rand, n int, keys uint32) []byte {
	b := make([]byte, 16*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[16*i:], rng.Uint32N(keys))
		binary.LittleEndian.PutUint32(b[16*i+4:], rng.Uint32N(1000))
		binary.LittleEndian.PutUint64(b[16*i+8:], rng.Uint64())
	}
	return b
}

// TestAggregateMerge runs the count/sum aggregate on two per-core instances
// over different chunks and checks the merged maps against plain Go.
func TestAggregateMerge(t *testing.T) {
	p, err := aggregateProg()
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	cores := []*engine.Instance{x.NewInstance(), x.NewInstance()}
	rng := rand.New(rand.NewPCG(3, 4))
	wantCount, wantSum := uint64(0), uint64(0)
	perKey := map[uint32][2]uint64{}
	for chunk := 0; chunk < 6; chunk++ {
		data := records(rng, 256, 50)
		res, err := cores[chunk%2].Run(&engine.Context{Data: data, BlockSize: 512}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.R0 != 256 {
			t.Fatalf("chunk %d: r0 = %d records, want 256", chunk, res.R0)
		}
		for i := 0; i < 256; i++ {
			k := binary.LittleEndian.Uint32(data[16*i:])
			v := uint64(binary.LittleEndian.Uint32(data[16*i+4:]))
			wantCount++
			wantSum += v
			e := perKey[k]
			perKey[k] = [2]uint64{e[0] + 1, e[1] + v}
		}
	}
	maps := engine.MergeMaps(cores...)
	got := map[string]engine.MapData{}
	for _, m := range maps {
		got[m.Name] = m
	}
	tot := got["totals"]
	if len(tot.Entries) != 2 {
		t.Fatalf("totals: %+v", tot)
	}
	if c, s := binary.LittleEndian.Uint64(tot.Entries[0].Value), binary.LittleEndian.Uint64(tot.Entries[1].Value); c != wantCount || s != wantSum {
		t.Fatalf("totals: count %d sum %d, want %d %d", c, s, wantCount, wantSum)
	}
	bk := got["by_key"]
	if len(bk.Entries) != len(perKey) {
		t.Fatalf("by_key has %d keys, want %d", len(bk.Entries), len(perKey))
	}
	for _, e := range bk.Entries {
		k := binary.LittleEndian.Uint32(e.Key)
		c, s := binary.LittleEndian.Uint64(e.Value), binary.LittleEndian.Uint64(e.Value[8:])
		if w := perKey[k]; w != [2]uint64{c, s} {
			t.Fatalf("key %d: got count %d sum %d, want %v", k, c, s, w)
		}
	}
	// Reset clears them.
	cores[0].ResetMaps()
	cores[1].ResetMaps()
	for _, m := range engine.MergeMaps(cores...) {
		if m.Name == "by_key" && len(m.Entries) != 0 {
			t.Fatal("by_key not empty after reset")
		}
	}
}

func TestHashMapFull(t *testing.T) {
	p, err := aggregateProg()
	if err != nil {
		t.Fatal(err)
	}
	x, _ := engine.Compile(p, nil)
	inst := x.NewInstance()
	// 2000 distinct keys into a 1024-entry map: inserts beyond capacity
	// fail (the helper returns -E2BIG) and nothing breaks.
	data := make([]byte, 16*2000)
	for i := 0; i < 2000; i++ {
		binary.LittleEndian.PutUint32(data[16*i:], uint32(i))
		binary.LittleEndian.PutUint32(data[16*i+4:], 1)
	}
	if _, err := inst.Run(&engine.Context{Data: data}, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range inst.Maps() {
		if m.Name == "by_key" && len(m.Entries) != 1024 {
			t.Fatalf("by_key has %d entries, want 1024", len(m.Entries))
		}
	}
}

func TestRecordsInRange(t *testing.T) {
	cs, err := filters.LoadRecords()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(cs, &engine.LoadOptions{Vars: map[string]any{
		"record_size": uint32(24), "field_offset": uint32(8), "lo": uint32(100), "hi": uint32(199),
	}})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := engine.Compile(p, nil)
	inst := x.NewInstance()
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 24*300+10) // a partial record at the end is ignored
	var want []uint64
	for i := 0; i < 300; i++ {
		v := rng.Uint32N(400)
		binary.LittleEndian.PutUint32(data[24*i+8:], v)
		if v >= 100 && v <= 199 {
			want = append(want, uint64(24*i))
		}
	}
	emit := make([]uint64, 400)
	res, err := inst.Run(&engine.Context{Data: data}, emit)
	if err != nil {
		t.Fatal(err)
	}
	got := emit[:res.Emitted]
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	if res.R0 != uint64(len(want)) || !equal(got, want) {
		t.Fatalf("r0 %d, emitted %d; want %d", res.R0, res.Emitted, len(want))
	}
	// A short emit buffer overflows without failing the run.
	res, err = inst.Run(&engine.Context{Data: data}, emit[:3])
	if err != nil || !res.Overflow || res.Emitted != 3 {
		t.Fatalf("overflow: %+v %v", res, err)
	}
}

func TestRunAllocatesNothing(t *testing.T) {
	inst := loadPattern(t, "pattern_filter", "needle")
	data := make([]byte, 16*4096)
	emit := make([]uint64, 16)
	ctx := &engine.Context{Data: data, BlockSize: 4096}
	if n := testing.AllocsPerRun(20, func() {
		if _, err := inst.Run(ctx, emit); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Run allocates %v times", n)
	}
	p, _ := aggregateProg()
	x, _ := engine.Compile(p, nil)
	agg := x.NewInstance()
	recs := records(rand.New(rand.NewPCG(1, 1)), 512, 64)
	rctx := &engine.Context{Data: recs}
	if n := testing.AllocsPerRun(20, func() {
		if _, err := agg.Run(rctx, nil); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("aggregate Run allocates %v times", n)
	}
}

// TestMergeMapData merges snapshots from two devices into the host's: maps
// by name, values of a key added word by word, new keys and maps added as
// copies, entries sorted, a shorter value added over its length.
func TestMergeMapData(t *testing.T) {
	u64 := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	host := []engine.MapData{{Name: "h", KeySize: 4, ValueSize: 16, Entries: []engine.MapEntry{
		{Key: u32(1), Value: u64(1, 10)}, {Key: u32(5), Value: u64(5, 50)}}}}
	dev1 := []engine.MapData{
		{Name: "h", KeySize: 4, ValueSize: 16, Entries: []engine.MapEntry{{Key: u32(3), Value: u64(3, 30)}, {Key: u32(5), Value: u64(1, 1)}}},
		{Name: "only_dev", KeySize: 4, ValueSize: 3, Entries: []engine.MapEntry{{Key: u32(0), Value: []byte{1, 2, 250}}}},
	}
	dev2 := []engine.MapData{
		{Name: "only_dev", KeySize: 4, ValueSize: 3, Entries: []engine.MapEntry{{Key: u32(0), Value: []byte{1, 1, 10}}}},
		{Name: "h", KeySize: 4, ValueSize: 16, Entries: []engine.MapEntry{{Key: u32(1), Value: u64(2)}}}, // short value
	}
	got := engine.MergeMapData(host, dev1, dev2)
	if len(got) != 2 || got[0].Name != "h" || got[1].Name != "only_dev" {
		t.Fatalf("maps: %+v", got)
	}
	want := []engine.MapEntry{{Key: u32(1), Value: u64(3, 10)}, {Key: u32(3), Value: u64(3, 30)}, {Key: u32(5), Value: u64(6, 51)}}
	if len(got[0].Entries) != len(want) {
		t.Fatalf("h: %v", got[0].Entries)
	}
	for i, e := range want {
		if string(got[0].Entries[i].Key) != string(e.Key) || string(got[0].Entries[i].Value) != string(e.Value) {
			t.Errorf("h entry %d: %v, want %v", i, got[0].Entries[i], e)
		}
	}
	if v := got[1].Entries[0].Value; string(v) != string([]byte{2, 3, 4}) { // bytes wrap
		t.Errorf("only_dev: %v", v)
	}
	// What was added is a copy: the devices' snapshots are unchanged.
	if string(dev1[1].Entries[0].Value) != string([]byte{1, 2, 250}) || string(dev1[0].Entries[0].Value) != string(u64(3, 30)) {
		t.Error("merge changed its input")
	}
	if engine.MergeMapData(nil) != nil {
		t.Error("merge of nothing is not nil")
	}
}
