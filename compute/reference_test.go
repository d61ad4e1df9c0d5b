package compute_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
)

// The example filters over the demo subsystem, compared with plain Go
// written from the filters' descriptions (not from their code): every
// result must arrive, however many a chunk emits, at every chunk size, on
// the host and offloaded to the demo's compute device.

// refMatch is a result as the reference computes it: namespace, LBA and,
// for scanners, the byte offset in the block.
type refMatch struct {
	ns     int
	lba    uint64
	offset uint32
}

// demoNS is one namespace of the demo with its data, read through a bdev.
type demoNS struct {
	name string
	bs   uint64
	data []byte
}

// refFilter is an example program with its parameters and a reference.
type refFilter struct {
	name    string
	load    func() (*ebpf.CollectionSpec, error)
	program string
	vars    map[string]any
	// ref returns the results of one run over a chunk of ns: blocks
	// [lba, lba+n).
	ref func(ns *demoNS, lba, n uint64) []uint64
	// scanner: ref returns byte offsets in the chunk, else LBAs.
	scanner bool
	// overlap is Options.Overlap (host engines only).
	overlap int
}

func refContains(pat []byte) func(ns *demoNS, lba, n uint64) []uint64 {
	return func(ns *demoNS, lba, n uint64) []uint64 {
		var out []uint64
		for b := lba; b < lba+n; b++ {
			if bytes.Contains(ns.data[b*ns.bs:(b+1)*ns.bs], pat) {
				out = append(out, b)
			}
		}
		return out
	}
}

// refStartsIn: blocks in which pat starts, and ends at most overlap bytes
// past the block's end (within the namespace).
func refStartsIn(pat []byte, overlap uint64) func(ns *demoNS, lba, n uint64) []uint64 {
	return func(ns *demoNS, lba, n uint64) []uint64 {
		var out []uint64
		for b := lba; b < lba+n; b++ {
			end := min((b+1)*ns.bs+overlap, uint64(len(ns.data)))
			if i := bytes.Index(ns.data[b*ns.bs:end], pat); i >= 0 && uint64(i) < ns.bs {
				out = append(out, b)
			}
		}
		return out
	}
}

// refRecords: 16-byte records from the chunk's start; the little-endian
// u32 at offset 4 within [lo, hi] emits the record's offset; a run looks at
// 65536 records at most.
func refRecords(lo, hi uint32) func(ns *demoNS, lba, n uint64) []uint64 {
	return func(ns *demoNS, lba, n uint64) []uint64 {
		chunk := ns.data[lba*ns.bs : (lba+n)*ns.bs]
		var out []uint64
		for i := 0; i < 1<<16 && 16*(i+1) <= len(chunk); i++ {
			v := binary.LittleEndian.Uint32(chunk[16*i+4:])
			if v >= lo && v <= hi {
				out = append(out, uint64(16*i))
			}
		}
		return out
	}
}

func openDemo(t *testing.T) (*device.Set, *poller.Group, []*demoNS) {
	t.Helper()
	// Admin commands such as Load Program (which verifies the program on
	// the device) get more than the default 5 s: a loaded machine running
	// the race detector takes that long.
	set, err := device.Open([]string{"mock"}, device.Options{NVMe: nvme.Options{AdminTimeout: time.Minute}, Programs: csd.Runner{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	var nss []*demoNS
	for _, b := range set.Bdevs {
		d, err := bdev.Open(b, false)
		if err != nil {
			t.Fatal(err)
		}
		s, err := bdev.NewSync(d, g.Reactors()[0])
		if err != nil {
			t.Fatal(err)
		}
		ns := &demoNS{name: b.Name(), bs: uint64(b.BlockSize()), data: make([]byte, b.NumBlocks()*uint64(b.BlockSize()))}
		if _, err := s.ReadAt(context.Background(), ns.data, 0); err != nil {
			t.Fatal(err)
		}
		s.Close()
		d.Close()
		nss = append(nss, ns)
	}
	return set, g, nss
}

func loadFilter(t *testing.T, f refFilter) *engine.Executable {
	t.Helper()
	spec, err := f.load()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: f.program, Vars: f.vars})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// refTargets are the parts of the demo the reference test scans: 1 MiB of
// every namespace, from a block that is not the first (the whole demo takes
// minutes under the race detector).
func refTargets(nss []*demoNS) []compute.Target {
	var ts []compute.Target
	for i, ns := range nss {
		ts = append(ts, compute.Target{Base: i, Start: 1000, Blocks: (1 << 20) / ns.bs})
	}
	return ts
}

// reference runs f's reference over the targets in chunks of chunkBytes,
// as a scan cuts them.
func reference(f refFilter, nss []*demoNS, targets []compute.Target, chunkBytes uint64) []refMatch {
	var out []refMatch
	for _, t := range targets {
		i, ns := t.Base, nss[t.Base]
		per := max(chunkBytes/ns.bs, 1)
		for lba := t.Start; lba < t.Start+t.Blocks; lba += per {
			n := min(per, t.Start+t.Blocks-lba)
			for _, v := range f.ref(ns, lba, n) {
				if f.scanner {
					out = append(out, refMatch{i, lba + v/ns.bs, uint32(v % ns.bs)})
				} else {
					out = append(out, refMatch{i, v, 0})
				}
			}
		}
	}
	return out
}

func sortMatches(ms []refMatch) {
	slices.SortFunc(ms, func(a, b refMatch) int {
		if a.ns != b.ns {
			return a.ns - b.ns
		}
		if a.lba != b.lba {
			if a.lba < b.lba {
				return -1
			}
			return 1
		}
		return int(a.offset) - int(b.offset)
	})
}

func distinctBlocks(ms []refMatch, ns int) uint64 {
	n := uint64(0)
	for i, m := range ms {
		if m.ns == ns && (i == 0 || ms[i-1].ns != ns || ms[i-1].lba != m.lba) {
			n++
		}
	}
	return n
}

func TestExampleFiltersMatchReference(t *testing.T) {
	set, g, nss := openDemo(t)
	pat := uint64(0)
	for i, c := range []byte("ERROR") {
		pat |= uint64(c) << (8 * i)
	}
	patVars := map[string]any{"pattern": pat, "pattern_len": uint32(5)}
	fs := []refFilter{
		{name: "pattern_filter", load: filters.LoadPattern, program: "pattern_filter", vars: patVars, ref: refContains([]byte("ERROR"))},
		{name: "pattern_memmem", load: filters.LoadPattern, program: "pattern_memmem", vars: patVars, ref: refContains([]byte("ERROR"))},
		// Every record: 16 per 256 bytes, more than a chunk's first
		// emit buffer holds at every chunk size.
		{name: "records_all", load: filters.LoadRecords, program: "records_in_range", ref: refRecords(0, 0xffffffff), scanner: true},
		// A field whose top byte is a digit: text, so a selective range.
		{name: "records_digit", load: filters.LoadRecords, program: "records_in_range", vars: map[string]any{"lo": uint32(0x30000000), "hi": uint32(0x39ffffff)},
			ref: refRecords(0x30000000, 0x39ffffff), scanner: true},
		// With an overlap, ERROR near the start of the next block (about
		// 45 bytes into its first line) is in every block's view, but
		// starts in the next one; a scanner's records in the overlap
		// belong to the next chunk.
		{name: "pattern_filter_overlap", load: filters.LoadPattern, program: "pattern_filter", vars: patVars, ref: refStartsIn([]byte("ERROR"), 64), overlap: 64},
		{name: "pattern_memmem_overlap", load: filters.LoadPattern, program: "pattern_memmem", vars: patVars, ref: refStartsIn([]byte("ERROR"), 700), overlap: 700},
		{name: "records_overlap", load: filters.LoadRecords, program: "records_in_range", ref: refRecords(0, 0xffffffff), scanner: true, overlap: 100},
	}
	chunks := []int{4 << 10, 64 << 10, 1 << 20, 16 << 20}
	if testing.Short() {
		chunks = []int{4 << 10, 1 << 20}
	}
	cb, err := compute.NewBdev("ref", set.Bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for _, f := range fs {
		exe := loadFilter(t, f)
		for _, chunk := range chunks {
			targets := refTargets(nss)
			want := reference(f, nss, targets, uint64(chunk))
			sortMatches(want)
			engines := []compute.Placement{compute.PlaceHost, compute.PlaceDevice}
			if f.overlap > 0 {
				engines = engines[:1]
			}
			for _, eng := range engines {
				name := fmt.Sprintf("%s/chunk=%d/%v", f.name, chunk, map[compute.Placement]string{compute.PlaceHost: "host", compute.PlaceDevice: "device"}[eng])
				var got []refMatch
				st, err := cb.Scan(context.Background(), g, exe, targets, compute.Options{Placement: eng, ChunkBytes: chunk, Devices: set.Controllers, Overlap: f.overlap,
					OnMatch: func(m compute.Match) { got = append(got, refMatch{targets[m.Target].Base, m.LBA, m.Offset}) }})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(st.Faults) > 0 || st.Lost != 0 || len(st.Losses) != 0 {
					t.Fatalf("%s: %v, faults %v, lost %d", name, err, st.Faults, st.Lost)
				}
				sortMatches(got)
				if !slices.Equal(got, want) {
					t.Fatalf("%s: %d results, the reference has %d", name, len(got), len(want))
				}
				for i, ts := range st.Targets {
					if wb := distinctBlocks(want, i); ts.MatchingBlocks != wb {
						t.Fatalf("%s: %s: %d matching blocks, the reference has %d", name, ts.Base, ts.MatchingBlocks, wb)
					}
					if ts.BlockSize != uint32(nss[i].bs) || ts.Bytes != 1<<20 {
						t.Fatalf("%s: target stats %+v", name, ts)
					}
				}
				if st.Matches != uint64(len(want)) {
					t.Fatalf("%s: Stats.Matches %d, want %d", name, st.Matches, len(want))
				}
			}
		}
	}
}

// TestAggregateMatchesReference: the totals of aggregate.c (count and sum
// of the u32 at offset 4 of every 16-byte record a run looks at, 65536 at
// most) over the demo, merged over cores.
func TestAggregateMatchesReference(t *testing.T) {
	set, g, nss := openDemo(t)
	cb, err := compute.NewBdev("ref", set.Bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	exe := loadFilter(t, refFilter{load: filters.LoadAggregate, program: "aggregate"})
	for _, chunk := range []int{4 << 10, 16 << 20} {
		var count, sum uint64
		targets := refTargets(nss)
		for _, tg := range targets {
			ns := nss[tg.Base]
			per := max(uint64(chunk)/ns.bs, 1) * ns.bs
			data := ns.data[tg.Start*ns.bs : (tg.Start+tg.Blocks)*ns.bs]
			for off := uint64(0); off < uint64(len(data)); off += per {
				c := data[off:min(off+per, uint64(len(data)))]
				for i := 0; i < 1<<16 && 16*(i+1) <= len(c); i++ {
					count++
					sum += uint64(binary.LittleEndian.Uint32(c[16*i+4:]))
				}
			}
		}
		// (Host engines only: the device's merged by_key holds more keys
		// than the map declares, which reading its state refuses.)
		for _, eng := range []compute.Placement{compute.PlaceHost} {
			st, err := cb.Scan(context.Background(), g, exe, targets, compute.Options{Placement: eng, ChunkBytes: chunk, Devices: set.Controllers})
			if err != nil || len(st.Faults) > 0 {
				t.Fatalf("chunk %d: %v %v", chunk, err, st.Faults)
			}
			var totals []engine.MapEntry
			for _, m := range st.Maps {
				if m.Name == "totals" {
					totals = m.Entries
				}
			}
			if len(totals) != 2 || binary.LittleEndian.Uint64(totals[0].Value) != count || binary.LittleEndian.Uint64(totals[1].Value) != sum {
				t.Fatalf("chunk %d, engine %d: totals %v, reference count %d sum %d", chunk, eng, totals, count, sum)
			}
		}
	}
}

// TestEmitLossIsCounted: values past Options.EmitCap do not reach the host;
// the scan says how many, and where, to the value.
func TestEmitLossIsCounted(t *testing.T) {
	set, g, nss := openDemo(t)
	cb, err := compute.NewBdev("ref", set.Bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	f := refFilter{load: filters.LoadRecords, program: "records_in_range", ref: refRecords(0, 0xffffffff), scanner: true}
	exe := loadFilter(t, f)
	targets := refTargets(nss)
	const chunk, capVals = 64 << 10, 3000 // a chunk emits 4096 values
	want := reference(f, nss, targets, chunk)
	for _, eng := range []compute.Placement{compute.PlaceHost, compute.PlaceDevice} {
		var got uint64
		st, err := cb.Scan(context.Background(), g, exe, targets, compute.Options{Placement: eng, ChunkBytes: chunk, EmitCap: capVals, Devices: set.Controllers,
			OnMatch: func(compute.Match) { got++ }})
		if err != nil || len(st.Faults) > 0 {
			t.Fatalf("engine %d: %v %v", eng, err, st.Faults)
		}
		var lost, runs uint64
		for _, l := range st.Losses {
			lost += l.Values
			runs++
			if l.Values != 4096-capVals {
				t.Fatalf("engine %d: loss %v, want %d values", eng, l, 4096-capVals)
			}
		}
		chunks := uint64(0)
		for _, tg := range targets {
			chunks += (tg.Blocks*nss[tg.Base].bs + chunk - 1) / chunk
		}
		if got+lost != uint64(len(want)) || st.Lost != lost || runs != chunks || got != st.Matches {
			t.Fatalf("engine %d: %d delivered + %d lost in %d runs (Stats.Lost %d), reference %d values in %d chunks", eng, got, lost, runs, st.Lost, len(want), chunks)
		}
	}
}

// TestOffloadManyTargets: offloading many targets with the default options
// takes the device's memory range sets per reactor, not per target (the
// emulated device has 64), and gives them back: scans in a row work.
func TestOffloadManyTargets(t *testing.T) {
	set, g, nss := openDemo(t)
	cb, err := compute.NewBdev("ref", set.Bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	f := refFilter{load: filters.LoadPattern, program: "pattern_memmem", vars: map[string]any{"pattern": uint64(0x524f525245), "pattern_len": uint32(5)}, ref: refContains([]byte("ERROR"))}
	exe := loadFilter(t, f)
	// Every namespace in 16 ranges: 48 targets.
	var targets []compute.Target
	for i, ns := range nss {
		n := uint64(len(ns.data)) / ns.bs
		for k := uint64(0); k < 16; k++ {
			targets = append(targets, compute.Target{Base: i, Start: k * n / 16, Blocks: (k+1)*n/16 - k*n/16})
		}
	}
	want := reference(f, nss, targets, 256<<10)
	sortMatches(want)
	for run := 0; run < 3; run++ {
		var got []refMatch
		st, err := cb.Scan(context.Background(), g, exe, targets, compute.Options{Placement: compute.PlaceDevice, Devices: set.Controllers,
			OnMatch: func(m compute.Match) { got = append(got, refMatch{targets[m.Target].Base, m.LBA, m.Offset}) }})
		if err != nil || len(st.Faults) > 0 {
			t.Fatalf("run %d: %v %v", run, err, st.Faults)
		}
		sortMatches(got)
		if !slices.Equal(got, want) {
			t.Fatalf("run %d: %d matches, reference %d", run, len(got), len(want))
		}
		for _, ts := range st.Targets {
			if ts.Engine == "host" {
				t.Fatalf("run %d: %+v", run, ts)
			}
		}
	}
}
