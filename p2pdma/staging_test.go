package p2pdma

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

func errorFilter(t *testing.T) *engine.Executable {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	pat := make([]byte, 8)
	copy(pat, demo.Pattern)
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_filter",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(pat), "pattern_len": uint32(len(demo.Pattern))}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestScanStagedInCMB scans namespaces of two controllers with the chunks
// staged in the CMB of one of them: the same matches as host staging, and
// the bus shows no payload byte in host memory (the reads land in the CMB
// and the program reads them there).
func TestScanStagedInCMB(t *testing.T) {
	r := standardRig(t, 0)
	names := []string{"mockAn1", "mockAn2", "mockBn1", "mockCn1"}
	var bases []*bdev.Bdev
	var want []compute.Match
	const size = 512 << 10
	for i, n := range names {
		b := r.bdevs[n]
		bases = append(bases, b)
		data := randomData(uint64(i+40), size)
		for k := range data {
			data[k] = 'a' + data[k]%26 // letters: "ERROR" appears only where planted
		}
		bs := b.BlockSize()
		for blk := 3 + i; blk < size/bs; blk += 7 + i {
			copy(data[blk*bs+(blk*13)%(bs-8):], demo.Pattern)
			want = append(want, compute.Match{Target: i, NSID: b.Info().NSID, LBA: uint64(blk)})
		}
		blockIO(t, b, true, 0, data)
	}
	cb, err := compute.NewBdev("scan", bases)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	reg, err := OpenAny(r.sortedCtrls("mockA", "mockB", "mockC"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if reg.Name() != "cmb of mockB" {
		t.Fatalf("staging in %s", reg.Name())
	}
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	exe := errorFilter(t)
	var targets []compute.Target
	for i, b := range bases {
		targets = append(targets, compute.Target{Base: i, Blocks: uint64(size / b.BlockSize())})
	}
	scan := func(staging compute.Staging) ([]compute.Match, *compute.Stats) {
		var ms []compute.Match
		st, err := cb.Scan(context.Background(), g, exe, targets, compute.Options{
			Placement: compute.PlaceHost, Staging: staging, ChunkBytes: 64 << 10,
			OnMatch: func(m compute.Match) { ms = append(ms, m) }})
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ms, func(a, b compute.Match) int {
			if a.Target != b.Target {
				return a.Target - b.Target
			}
			return int(a.LBA) - int(b.LBA)
		})
		return ms, st
	}
	hm, hst := scan(nil)
	before := r.bus.Stats()
	counted := &countingStaging{CMBStaging: NewCMBStaging(reg)}
	cm, cst := scan(counted)
	d := busDelta(before, r.bus.Stats())
	if !slices.Equal(hm, want) || !slices.Equal(cm, want) {
		t.Fatalf("%d planted matches; host staging found %d, CMB staging %d", len(want), len(hm), len(cm))
	}
	if cst.BytesThroughHost != 0 || hst.BytesThroughHost != hst.BytesScanned || cst.BytesScanned != 4*size {
		t.Fatalf("through host: cmb %d of %d, host %d of %d", cst.BytesThroughHost, cst.BytesScanned, hst.BytesThroughHost, hst.BytesScanned)
	}
	if d.HostWrite != 0 || d.HostRead != 0 || d.PeerWrite != cst.BytesScanned {
		t.Fatalf("bus during the staged scan: %+v, want %d bytes into peer memory and none into host memory", d, cst.BytesScanned)
	}
	if a := reg.Allocator().Stats(); a.InUse != 0 || a.Allocs == 0 {
		t.Fatalf("staging allocations %+v", a)
	}
	// The program's reads of the emulated CMB are charged as uncached BAR
	// reads: at least the cost of every 64 bytes scanned (a lower bound,
	// which a loaded machine only exceeds).
	if charged := uint64(counted.n.Load()); charged != cst.BytesScanned {
		t.Fatalf("CPU reads of %d bytes of the CMB charged, %d scanned", charged, cst.BytesScanned)
	}
	if charge := time.Duration(cst.BytesScanned/64) * mock.DefaultCMBReadCost; cst.Engines[0].RunTime < charge {
		t.Fatalf("program time on CMB-staged data %v, below the %v its uncached reads cost", cst.Engines[0].RunTime, charge)
	}
	t.Logf("%d matches; %d bytes staged in %s, 0 through host memory", len(cm), cst.BytesScanned, reg.Name())
}

// TestStagingErrors: bases that cannot use the CMB, and a CMB that stays
// full, fail with clear errors.
func TestStagingErrors(t *testing.T) {
	r := standardRig(t, 0)
	reg := mustOpen(t, r, "mockB")
	s := NewCMBStaging(reg)
	s.Wait = 10e6 // 10 ms
	m, err := bdev.NewMalloc("ram", 512, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := s.Alloc(m, 4096); !strings.Contains(errString(err), "not an NVMe namespace") {
		t.Fatalf("malloc base: %v", err)
	}
	other := newRig(t, nsOnly("mockX"))
	if _, err := s.Alloc(other.bdevs["mockXn1"], 4096); !strings.Contains(errString(err), "not on the bus") {
		t.Fatalf("base on another bus: %v", err)
	}
	all, _ := reg.Alloc(int(reg.Size()))
	_, err = s.Alloc(r.bdevs["mockAn1"], 4096)
	mustIs(t, err, ErrFull)
	reg.Free(all)
	b, err := s.Alloc(r.bdevs["mockAn1"], 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Free(r.bdevs["mockAn1"], b); err != nil {
		t.Fatal(err)
	}
	if err := s.Free(r.bdevs["mockAn1"], b); err == nil {
		t.Fatal("double free accepted")
	}
	if s.ThroughHost() || !strings.HasPrefix(s.Name(), "cmb of mockB (emulated: CPU reads charged") {
		t.Fatal(s.ThroughHost(), s.Name())
	}
}

// countingStaging counts the bytes whose CPU reads a scan charges.
type countingStaging struct {
	*CMBStaging
	n atomic.Int64
}

func (c *countingStaging) ChargeCPURead(n int) {
	c.n.Add(int64(n))
	c.CMBStaging.ChargeCPURead(n)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
