package compute_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

// benchSet is 48 MiB over three namespaces of two data controllers (512-byte
// and 4 KiB blocks) with the needle in 1% of the blocks, and a compute
// controller on its own device core.
type benchSet struct {
	bus   *mock.Bus
	bdevs []*bdev.Bdev
	data  [][]byte
	dev   *nvme.Controller
	total uint64
	close func()
}

func newBenchSet(b *testing.B) *benchSet {
	b.Helper()
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Stop()
	bus := mock.NewBus()
	s := &benchSet{bus: bus}
	var closers []func()
	rng := rand.New(rand.NewPCG(1, 1))
	for _, nss := range [][]mock.NamespaceConfig{
		{{Kind: mock.Memory, Size: 16 << 20, LBASize: 512}, {Kind: mock.Memory, Size: 16 << 20, LBASize: 4096}},
		{{Kind: mock.Memory, Size: 16 << 20, LBASize: 4096}},
	} {
		mc, err := mock.NewController(bus, mock.Config{Subsystem: testNQN, Namespaces: nss})
		if err != nil {
			b.Fatal(err)
		}
		c, err := nvme.NewController(mc, nvme.Options{})
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, func() { c.Close(); mc.Close() })
		for _, ns := range c.Namespaces() {
			bd, err := bdev.NewNVMe(fmt.Sprintf("%sn%d", c.Name(), ns.ID), c, ns)
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, ns.Blocks*uint64(ns.BlockSize))
			for i := 0; i < len(data); i += 8 {
				binary.LittleEndian.PutUint64(data[i:], rng.Uint64()&0x3f3f3f3f3f3f3f3f)
			}
			for blk := uint64(0); blk < ns.Blocks; blk++ {
				if rng.IntN(100) == 0 {
					copy(data[blk*uint64(ns.BlockSize)+uint64(rng.IntN(int(ns.BlockSize)-len(needle))):], needle)
				}
			}
			d, _ := bdev.Open(bd, true)
			sy, err := bdev.NewSync(d, g.Reactors()[0])
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sy.WriteAt(context.Background(), data, 0); err != nil {
				b.Fatal(err)
			}
			sy.Close()
			d.Close()
			s.bdevs = append(s.bdevs, bd)
			s.data = append(s.data, data)
			s.total += uint64(len(data))
		}
	}
	mc, err := mock.NewController(bus, mock.Config{Serial: "CSD0", Subsystem: testNQN, Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 64 << 20, CSI: nvme.CSISLM},
	}})
	if err != nil {
		b.Fatal(err)
	}
	if s.dev, err = nvme.NewController(mc, nvme.Options{}); err != nil {
		b.Fatal(err)
	}
	closers = append(closers, func() { s.dev.Close(); mc.Close() })
	s.close = func() {
		for _, f := range closers {
			f()
		}
	}
	return s
}

// memmemProgram is the filter `bpfblk scan` runs by default (bpfblk_memmem
// per block), looking for the needle.
func memmemProgram(b *testing.B) *engine.Executable {
	spec, err := filters.LoadPattern()
	if err != nil {
		b.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(needle), "pattern_len": uint32(len(needle))}})
	if err != nil {
		b.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		b.Fatal(err)
	}
	return x
}

// rawRate runs the filter straight over the data on one core, chunk by
// chunk as a scan does: the engine's raw throughput in bytes per second.
func rawRate(b *testing.B, s *benchSet, exe *engine.Executable) float64 {
	inst := exe.NewInstance()
	emit := make([]uint64, 1024)
	t0 := time.Now()
	for i, data := range s.data {
		bs := s.bdevs[i].BlockSize()
		for off := 0; off < len(data); off += 256 << 10 {
			end := min(off+256<<10, len(data))
			ctx := engine.Context{Data: data[off:end], LBA: uint64(off / bs), BlockSize: uint32(bs)}
			if _, err := inst.Run(&ctx, emit); err != nil {
				b.Fatal(err)
			}
		}
	}
	return float64(s.total) / time.Since(t0).Seconds()
}

// benchPrograms are the filters the benchmarks run: the default filter of
// `bpfblk scan` (bpfblk_memmem helper per block: I/O bound) and the same
// search as a plain byte loop (compute bound).
var benchPrograms = []struct {
	name string
	load func(b *testing.B) *engine.Executable
}{
	{"memmem", memmemProgram},
	{"loop", func(b *testing.B) *engine.Executable { return patternProgram(&testing.T{}) }},
}

// BenchmarkRawFilter is the baseline: each filter run directly over the data
// on one core.
func BenchmarkRawFilter(b *testing.B) {
	s := newBenchSet(b)
	defer s.close()
	for _, p := range benchPrograms {
		b.Run("filter="+p.name, func(b *testing.B) {
			exe := p.load(b)
			b.SetBytes(int64(s.total))
			b.ResetTimer()
			for range b.N {
				rawRate(b, s, exe)
			}
		})
	}
}

// BenchmarkScan scans the set end to end with each engine on 1 and 2 host
// reactors. x_raw is the scan's throughput (bytes over Stats.Elapsed, setup
// such as loading the program excluded) over the raw filter's on one core,
// measured in passes interleaved with the scans; tohost_% is bytes delivered
// to the host per byte scanned (1% of the blocks match).
func BenchmarkScan(b *testing.B) {
	s := newBenchSet(b)
	defer s.close()
	cb, err := compute.NewBdev("bench", s.bdevs)
	if err != nil {
		b.Fatal(err)
	}
	defer cb.Close()
	for _, p := range benchPrograms {
		exe := p.load(b)
		for _, eng := range []struct {
			name string
			kind compute.Placement
		}{{"host", compute.PlaceHost}, {"device", compute.PlaceDevice}} {
			for _, cores := range []string{"0", "0-1"} {
				b.Run(fmt.Sprintf("filter=%s/engine=%s/reactors=%d", p.name, eng.name, len(cores)/2+1), func(b *testing.B) {
					g, err := poller.Start(poller.Config{Cores: cores, NoPin: true})
					if err != nil {
						b.Fatal(err)
					}
					defer g.Stop()
					opts := compute.Options{Placement: eng.kind, Devices: []*nvme.Controller{s.dev}}
					b.SetBytes(int64(s.total))
					b.ResetTimer()
					var toHost, scanned uint64
					var elapsed, rawTime time.Duration
					for range b.N {
						// The baseline pass runs interleaved with the scans,
						// under the same machine load, outside the timer.
						b.StopTimer()
						rawTime += time.Duration(float64(s.total) / rawRate(b, s, exe) * float64(time.Second))
						b.StartTimer()
						st, err := cb.Scan(context.Background(), g, exe, cb.AllTargets(), opts)
						if err != nil || len(st.Faults) > 0 {
							b.Fatal(err, st.Faults)
						}
						toHost += st.BytesToHost
						scanned += st.BytesScanned
						elapsed += st.Elapsed
					}
					b.ReportMetric(rawTime.Seconds()/elapsed.Seconds(), "x_raw")
					b.ReportMetric(100*float64(toHost)/float64(scanned), "tohost_%")
				})
			}
		}
	}
}
