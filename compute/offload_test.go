package compute_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// testNQN is the NVM subsystem of the fixtures' controllers: a compute
// controller reaches the namespaces of the controllers of its subsystem.
const testNQN = "nqn.2026-01.io.bpfblk:test:compute"

// addCompute puts a compute-capable controller (CP + 64 MiB SLM) on the
// fixture's bus and returns its driver.
func (f *fixture) addCompute(t *testing.T, mode mock.Mode) *nvme.Controller {
	t.Helper()
	mc, err := mock.NewController(f.bus, mock.Config{Serial: "CSD0", Subsystem: testNQN, Mode: mode, Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); mc.Close() })
	return c
}

// memmemExe is the needle filter through the bpfblk_memmem helper: the same
// matches as patternProgram at a fraction of the interpreter time.
func memmemExe(t *testing.T) *engine.Executable {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(needle), "pattern_len": uint32(len(needle))}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func (f *fixture) scanAll(t *testing.T, cb *compute.Bdev, opts compute.Options) ([][]uint64, *compute.Stats) {
	t.Helper()
	got := make([][]uint64, len(f.bdevs))
	opts.OnMatch = func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) }
	st, err := cb.Scan(context.Background(), f.g, memmemExe(t), cb.AllTargets(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		slices.Sort(got[i])
	}
	return got, st
}

func TestEnginesMatchReference(t *testing.T) {
	f := newFixture(t)
	dev := f.addCompute(t, mock.DeviceCore)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for _, run := range []struct {
		kind  compute.Placement
		chunk int
	}{{compute.PlaceAuto, 64 << 10}, {compute.PlaceDevice, 4096}, {compute.PlaceHost, 1 << 20}} {
		kind, chunk := run.kind, run.chunk
		{
			got, st := f.scanAll(t, cb, compute.Options{Placement: kind, ChunkBytes: chunk, Devices: []*nvme.Controller{dev}})
			var total, matches uint64
			for i := range f.bdevs {
				want := f.reference(i)
				if !slices.Equal(got[i], want) {
					t.Fatalf("engine %d chunk %d %s: %d matches, reference %d", kind, chunk, f.bdevs[i].Name(), len(got[i]), len(want))
				}
				total += uint64(len(f.data[i]))
				matches += uint64(len(want))
				wantEngine := dev.Name()
				if kind == compute.PlaceHost {
					wantEngine = "host"
				}
				if st.Targets[i].Engine != wantEngine {
					t.Fatalf("engine %d: target %d ran on %q", kind, i, st.Targets[i].Engine)
				}
			}
			if st.BytesScanned != total || len(st.Faults) != 0 || st.Matches != matches {
				t.Fatalf("engine %d: stats %+v", kind, st)
			}
			if kind == compute.PlaceHost {
				if st.BytesToHost != total || st.BytesThroughHost != total {
					t.Fatalf("host engine: to host %d, through host %d, want %d", st.BytesToHost, st.BytesThroughHost, total)
				}
				continue
			}
			// Offloaded: only the match lists (a 16-byte header and 8 bytes
			// per value, at least 14 values per chunk read at once).
			chunks := st.Engines[1].Chunks
			if st.BytesThroughHost != 0 || st.BytesToHost > chunks*(16+8*14)+8*matches || st.BytesToHost == 0 {
				t.Fatalf("offload: to host %d (chunks %d, matches %d), through host %d", st.BytesToHost, chunks, matches, st.BytesThroughHost)
			}
			if st.Engines[1].Name != dev.Name() || st.Engines[1].Targets != len(f.bdevs) || st.Engines[0].Targets != 0 {
				t.Fatalf("engine lines %+v", st.Engines)
			}
		}
	}
}

func TestEngineDeviceWithoutComputeFails(t *testing.T) {
	f := newFixture(t)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	_, err = cb.Scan(context.Background(), f.g, memmemExe(t), cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice})
	if err == nil || !strings.Contains(err.Error(), "no compute-capable controller can reach") {
		t.Fatalf("device engine without a compute device: %v", err)
	}
	// Auto falls back to the host.
	got, st := f.scanAll(t, cb, compute.Options{})
	for i := range f.bdevs {
		if !slices.Equal(got[i], f.reference(i)) || st.Targets[i].Engine != "host" {
			t.Fatalf("auto without a compute device: target %d on %s", i, st.Targets[i].Engine)
		}
	}
}

// TestOffloadFaults injects media errors on chosen LBAs of the data
// namespaces: the same chunks fail on every engine, each fault names its LBA
// range, and every other match arrives.
func TestOffloadFaults(t *testing.T) {
	f := newFixture(t)
	dev := f.addCompute(t, mock.Inline)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	// Base 0: nsid 1 of controller 0 (512-byte blocks), LBA 700. Base 2:
	// nsid 1 of controller 1 (4 KiB blocks), LBA 5.
	f.mocks[0].InjectFault(mock.Fault{NSID: 1, LBA: 700, Blocks: 1, Status: nvme.ErrUnrecoveredRead})
	f.mocks[1].InjectFault(mock.Fault{NSID: 1, LBA: 5, Blocks: 1, Status: nvme.ErrUnrecoveredRead})
	const chunk = 16 << 10
	for _, kind := range []compute.Placement{compute.PlaceDevice, compute.PlaceHost} {
		got, st := f.scanAll(t, cb, compute.Options{Placement: kind, ChunkBytes: chunk, Devices: []*nvme.Controller{dev}})
		if len(st.Faults) != 2 {
			t.Fatalf("engine %d: faults %v", kind, st.Faults)
		}
		lost := map[int][2]uint64{}
		for _, fl := range st.Faults {
			if !errors.Is(fl.Err, nvme.ErrUnrecoveredRead) {
				t.Fatalf("fault %v is not the injected status", fl)
			}
			lost[fl.Target] = [2]uint64{fl.LBA, fl.LBA + fl.Blocks}
		}
		if l := lost[0]; !(l[0] <= 700 && 700 < l[1]) || l[1]-l[0] != chunk/512 {
			t.Fatalf("engine %d: fault of base 0 covers %v", kind, l)
		}
		if l := lost[2]; !(l[0] <= 5 && 5 < l[1]) || l[1]-l[0] != chunk/4096 {
			t.Fatalf("engine %d: fault of base 2 covers %v", kind, l)
		}
		for i := range f.bdevs {
			var want []uint64
			for _, lba := range f.reference(i) {
				if l, ok := lost[i]; ok && lba >= l[0] && lba < l[1] {
					continue
				}
				want = append(want, lba)
			}
			if !slices.Equal(got[i], want) {
				t.Fatalf("engine %d base %d: %d matches, want %d", kind, i, len(got[i]), len(want))
			}
		}
	}
}

// chunkStartScanner emits offset 0 of every chunk (a match at the chunk's
// first block), except that a chunk whose first byte is 'Z' emits an offset
// far outside itself: a program fault of that chunk alone.
func chunkStartScanner(t *testing.T) *engine.Executable {
	t.Helper()
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, abi.CtxData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, abi.CtxDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 1),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R5, asm.R2, 0, asm.Byte),
		asm.Mov.Imm(asm.R2, 0),
		asm.JNE.Imm(asm.R5, 'Z', "emit"),
		asm.Mov.Imm(asm.R2, 1<<30),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("emit"),
		asm.BuiltinFunc(abi.HelperEmit).Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	p, err := engine.FromInstructions("chunk_start", abi.TypeScan, insns)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestProgramFaultInOneChunk: on every engine, a program fault in one chunk
// is reported with that chunk's LBA range and every other chunk's match
// arrives.
func TestProgramFaultInOneChunk(t *testing.T) {
	f := newFixture(t)
	dev := f.addCompute(t, mock.Inline)
	const chunk = 64 << 10
	// Poison the chunk that starts at byte 3*chunk of base 1 (4 KiB blocks).
	b := f.bdevs[1]
	d, _ := bdev.Open(b, true)
	s, err := bdev.NewSync(d, f.g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, b.BlockSize())
	copy(blk, f.data[1][3*chunk:])
	blk[0] = 'Z'
	if _, err := s.WriteAt(context.Background(), blk, 3*chunk); err != nil {
		t.Fatal(err)
	}
	s.Close()
	d.Close()
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	exe := chunkStartScanner(t)
	for _, kind := range []compute.Placement{compute.PlaceDevice, compute.PlaceHost} {
		got := make([][]uint64, len(f.bdevs))
		st, err := cb.Scan(context.Background(), f.g, exe, cb.AllTargets(), compute.Options{
			Placement: kind, ChunkBytes: chunk, Devices: []*nvme.Controller{dev}, InFlight: 3,
			OnMatch: func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Faults) != 1 {
			t.Fatalf("engine %d: faults %v", kind, st.Faults)
		}
		fl := st.Faults[0]
		per := uint64(chunk / b.BlockSize())
		if fl.Target != 1 || fl.LBA != 3*per || fl.Blocks != per || !strings.Contains(fl.Error(), "outside") {
			t.Fatalf("engine %d: fault %v, want blocks %d-%d of target 1", kind, fl, 3*per, 4*per-1)
		}
		for i, bb := range f.bdevs {
			per := uint64(chunk / bb.BlockSize())
			var want []uint64
			for lba := uint64(0); lba < bb.NumBlocks(); lba += per {
				if i == 1 && lba == 3*per {
					continue
				}
				want = append(want, lba)
			}
			slices.Sort(got[i])
			if !slices.Equal(got[i], want) {
				t.Fatalf("engine %d base %d: matches %v, want %v", kind, i, got[i], want)
			}
		}
	}
}

// countingScanner adds one to totals[0] and the chunk's block count to
// totals[1] on every run: aggregates in an array map.
func countingScanner(t *testing.T) *engine.Executable {
	t.Helper()
	lookup := func(key int32) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.R10, -4, int64(key), asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference("totals"),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
		}
	}
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	insns = append(insns, lookup(0)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord))
	insns = append(insns, lookup(1)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, abi.CtxBlockCount, asm.Word),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R2),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return())
	cs := &ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{"totals": {Name: "totals", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}},
		Programs: map[string]*ebpf.ProgramSpec{"count": {Name: "count", SectionName: abi.SectionScan, Instructions: insns}},
	}
	p, err := engine.LoadSpec(cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestOffloadMaps: aggregates computed on the device come back into
// Stats.Maps and equal what the host engine computes and plain Go expects.
func TestOffloadMaps(t *testing.T) {
	f := newFixture(t)
	dev := f.addCompute(t, mock.Inline)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	exe := countingScanner(t)
	var blocks uint64
	for _, b := range f.bdevs {
		blocks += b.NumBlocks()
	}
	for _, kind := range []compute.Placement{compute.PlaceDevice, compute.PlaceHost} {
		st, err := cb.Scan(context.Background(), f.g, exe, cb.AllTargets(), compute.Options{Placement: kind, Devices: []*nvme.Controller{dev}, ChunkBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		var chunks uint64
		for _, e := range st.Engines {
			chunks += e.Chunks
		}
		if len(st.Maps) != 1 || st.Maps[0].Name != "totals" || len(st.Maps[0].Entries) != 2 {
			t.Fatalf("engine %d: maps %+v", kind, st.Maps)
		}
		e := st.Maps[0].Entries
		if gc, gb := binary.LittleEndian.Uint64(e[0].Value), binary.LittleEndian.Uint64(e[1].Value); gc != chunks || gb != blocks {
			t.Fatalf("engine %d: totals %d runs / %d blocks, want %d / %d", kind, gc, gb, chunks, blocks)
		}
	}
}

// TestConcurrentOffloadScans: two scans share one compute device at the same
// time; each gets its own program slot and device memory.
func TestConcurrentOffloadScans(t *testing.T) {
	f := newFixture(t)
	dev := f.addCompute(t, mock.DeviceCore)
	cbs := make([]*compute.Bdev, 2)
	for i, bases := range [][]*bdev.Bdev{f.bdevs[:1], f.bdevs[1:]} {
		cb, err := compute.NewBdev(fmt.Sprintf("scan%d", i), bases)
		if err != nil {
			t.Fatal(err)
		}
		defer cb.Close()
		cbs[i] = cb
	}
	exe := memmemExe(t)
	errc := make(chan error, 2)
	got := make([][][]uint64, 2)
	for i, cb := range cbs {
		got[i] = make([][]uint64, len(cb.Bases()))
		go func() {
			st, err := cb.Scan(context.Background(), f.g, exe, cb.AllTargets(), compute.Options{
				Placement: compute.PlaceDevice, Devices: []*nvme.Controller{dev}, ChunkBytes: 32 << 10,
				OnMatch: func(m compute.Match) { got[i][m.Target] = append(got[i][m.Target], m.LBA) },
			})
			if err == nil && len(st.Faults) > 0 {
				err = st.Faults[0]
			}
			errc <- err
		}()
	}
	for range cbs {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range [][]uint64{f.reference(0), f.reference(1), f.reference(2)} {
		g := got[0]
		k := i
		if i > 0 {
			g, k = got[1], i-1
		}
		slices.Sort(g[k])
		if !slices.Equal(g[k], want) {
			t.Fatalf("base %d: %d matches, reference %d", i, len(g[k]), len(want))
		}
	}
}

// TestOffloadTooSmallTransfer: a compute device whose largest transfer is
// smaller than one read of a match list is refused with the reason, by
// name, rather than faulting (or re-reading) every chunk; auto scans on the
// host and says why.
func TestOffloadTooSmallTransfer(t *testing.T) {
	f := newFixture(t)
	mc, err := mock.NewController(f.bus, mock.Config{Serial: "CSDSMALL", Subsystem: testNQN, Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 16 << 20, CSI: nvme.CSISLM},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := nvme.NewController(mc, nvme.Options{MaxTransfer: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); mc.Close() })
	cb, err := compute.NewBdev("small", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	st, err := cb.Scan(context.Background(), f.g, memmemExe(t), cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice, Devices: []*nvme.Controller{dev}})
	if err == nil || !strings.Contains(err.Error(), dev.Name()) || !strings.Contains(err.Error(), "at most 64 bytes per command") {
		t.Fatalf("device placement on a 64-byte-transfer device: %v (stats %+v)", err, st)
	}
	got, st := f.scanAll(t, cb, compute.Options{Devices: []*nvme.Controller{dev}})
	for i := range f.bdevs {
		if !slices.Equal(got[i], f.reference(i)) || st.Targets[i].Engine != "host" || !strings.Contains(st.Targets[i].Why, "per command") {
			t.Fatalf("auto: target %d on %s (%q)", i, st.Targets[i].Engine, st.Targets[i].Why)
		}
	}
}
