package compute_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

var needle = []byte("BPFBLK!!")

// fixture is a bus with two controllers and three namespaces of both LBA
// sizes, filled with random bytes and the needle planted in some blocks.
type fixture struct {
	g     *poller.Group
	bus   *mock.Bus
	mocks []*mock.Controller
	bdevs []*bdev.Bdev
	data  [][]byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	bus := mock.NewBus()
	f := &fixture{g: g, bus: bus}
	rng := rand.New(rand.NewPCG(7, 7))
	for ci, nss := range [][]mock.NamespaceConfig{
		{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}, {Kind: mock.Memory, Size: 2 << 20, LBASize: 4096}},
		{{Kind: mock.Memory, Size: 3 << 19, LBASize: 4096}},
	} {
		mc, err := mock.NewController(bus, mock.Config{Subsystem: testNQN, Namespaces: nss})
		if err != nil {
			t.Fatal(err)
		}
		c, err := nvme.NewController(mc, nvme.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); mc.Close() })
		f.mocks = append(f.mocks, mc)
		for _, ns := range c.Namespaces() {
			b, err := bdev.NewNVMe(c.Name()+"n"+string(rune('0'+ns.ID)), c, ns)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, ns.Blocks*uint64(ns.BlockSize))
			for i := 0; i < len(data); i += 8 {
				// Bytes below 0x40 never form the needle by chance.
				binary.LittleEndian.PutUint64(data[i:], rng.Uint64()&0x3f3f3f3f3f3f3f3f)
			}
			for blk := uint64(0); blk < ns.Blocks; blk++ {
				if rng.IntN(50) == 0 {
					off := blk*uint64(ns.BlockSize) + uint64(rng.IntN(int(ns.BlockSize)-len(needle)))
					copy(data[off:], needle)
				}
			}
			d, _ := bdev.Open(b, true)
			s, err := bdev.NewSync(d, g.Reactors()[ci%2])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.WriteAt(context.Background(), data, 0); err != nil {
				t.Fatal(err)
			}
			s.Close()
			d.Close()
			f.bdevs = append(f.bdevs, b)
			f.data = append(f.data, data)
		}
	}
	return f
}

// reference computes the matching LBAs of base i in plain Go.
func (f *fixture) reference(i int) []uint64 {
	bs := f.bdevs[i].BlockSize()
	var out []uint64
	for blk := 0; blk*bs < len(f.data[i]); blk++ {
		if bytes.Contains(f.data[i][blk*bs:(blk+1)*bs], needle) {
			out = append(out, uint64(blk))
		}
	}
	return out
}

func patternProgram(t *testing.T) *engine.Executable {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{
		Program: "pattern_filter",
		Vars:    map[string]any{"pattern": binary.LittleEndian.Uint64(needle), "pattern_len": uint32(len(needle))},
	})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestHostScanMatchesReference(t *testing.T) {
	f := newFixture(t)
	cb, err := compute.NewBdev("scan0", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	// The interpreted byte loop once, the memmem helper for the other chunk
	// sizes (same matches, a fraction of the time under -race).
	for _, run := range []struct {
		exe   *engine.Executable
		chunk int
	}{{memmemExe(t), 4096}, {patternProgram(t), 64 << 10}, {memmemExe(t), 1 << 20}} {
		exe, chunk := run.exe, run.chunk
		got := make([][]uint64, len(f.bdevs))
		st, err := cb.Scan(context.Background(), f.g, exe, cb.AllTargets(), compute.Options{
			Placement: compute.PlaceHost, ChunkBytes: chunk,
			OnMatch: func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) },
		})
		if err != nil {
			t.Fatal(err)
		}
		var total uint64
		for i := range f.bdevs {
			slices.Sort(got[i])
			want := f.reference(i)
			if len(want) == 0 {
				t.Fatalf("fixture planted no needle in %s", f.bdevs[i].Name())
			}
			if !slices.Equal(got[i], want) {
				t.Fatalf("chunk %d, %s: %d matches, reference %d", chunk, f.bdevs[i].Name(), len(got[i]), len(want))
			}
			total += uint64(len(f.data[i]))
			if st.Targets[i].NSID == 0 || st.Targets[i].Matches != uint64(len(want)) {
				t.Fatalf("target stats %+v", st.Targets[i])
			}
		}
		if st.BytesScanned != total || st.BytesToHost != total || len(st.Faults) != 0 {
			t.Fatalf("stats %+v, want %d bytes scanned and no faults", st, total)
		}
	}
}

func TestScanRejectsBadTargets(t *testing.T) {
	f := newFixture(t)
	cb, err := compute.NewBdev("scan0", f.bdevs[:1])
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if _, err := bdev.Open(f.bdevs[0], true); err == nil {
		t.Fatal("a claimed base was opened for writing")
	}
	exe := patternProgram(t)
	for _, tg := range []compute.Target{{Base: 1}, {Base: 0, Start: 1 << 40}, {Base: 0, Start: 10, Blocks: 1 << 40}} {
		if _, err := cb.Scan(context.Background(), f.g, exe, []compute.Target{tg}, compute.Options{}); err == nil {
			t.Errorf("target %+v accepted", tg)
		}
	}
}
