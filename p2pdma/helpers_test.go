package p2pdma

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/vfio"
)

// rig is a mock bus with controllers and the bdevs of their namespaces.
type rig struct {
	bus   *mock.Bus
	ctrls map[string]*nvme.Controller
	devs  map[string]*mock.Controller
	bdevs map[string]*bdev.Bdev // "<ctrl>n<nsid>"
}

func newRig(t testing.TB, cfgs ...mock.Config) *rig {
	t.Helper()
	r := &rig{bus: mock.NewBus(), ctrls: map[string]*nvme.Controller{}, devs: map[string]*mock.Controller{}, bdevs: map[string]*bdev.Bdev{}}
	for _, cfg := range cfgs {
		d, err := mock.NewController(r.bus, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := nvme.NewController(d, nvme.Options{})
		if err != nil {
			d.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); d.Close() })
		r.ctrls[cfg.Name], r.devs[cfg.Name] = c, d
		for _, ns := range c.Namespaces() {
			name := cfg.Name + "n" + string(rune('0'+ns.ID))
			b, err := bdev.NewNVMe(name, c, ns)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			r.bdevs[name] = b
		}
	}
	return r
}

// standardRig: A has two namespaces and no CMB, B one namespace and a 4 MiB
// CMB, C a 4 KiB-block namespace.
func standardRig(t testing.TB, mode mock.Mode) *rig {
	ns := func(size uint64, lba int) mock.NamespaceConfig {
		return mock.NamespaceConfig{Kind: mock.Memory, Size: size, LBASize: lba}
	}
	return newRig(t,
		mock.Config{Name: "mockA", Mode: mode, Namespaces: []mock.NamespaceConfig{ns(16<<20, 512), ns(16<<20, 512)}},
		mock.Config{Name: "mockB", Mode: mode, Namespaces: []mock.NamespaceConfig{ns(16<<20, 512)}, CMBSize: 4 << 20},
		mock.Config{Name: "mockC", Mode: mode, Namespaces: []mock.NamespaceConfig{ns(16<<20, 4096)}},
	)
}

// io runs one read or write of blocks at lba through a fresh channel.
func blockIO(t testing.TB, b *bdev.Bdev, write bool, lba uint64, data []byte) {
	t.Helper()
	d, err := bdev.Open(b, write)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ch, err := d.NewChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	bs := b.BlockSize()
	const step = 1 << 20
	buf, err := d.AllocBuffer(step)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBuffer(buf)
	for off := 0; off < len(data); off += step {
		n := min(step, len(data)-off)
		done, ioErr := false, error(nil)
		cb := func(io *bdev.IO) { done, ioErr = true, io.Err() }
		blk := lba + uint64(off/bs)
		part := buf.Slice(0, n)
		if write {
			copy(buf.Bytes, data[off:off+n])
			err = ch.Write(&part, blk, uint64(n/bs), cb, nil)
		} else {
			err = ch.Read(&part, blk, uint64(n/bs), cb, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !done {
			if ch.Poll() == 0 && time.Now().After(deadline) {
				t.Fatal("I/O did not complete")
			}
		}
		if ioErr != nil {
			t.Fatal(ioErr)
		}
		if !write {
			copy(data[off:off+n], buf.Bytes)
		}
	}
}

func randomData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e37))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// fillBlocks writes random data at lba and returns its checksum.
func fillBlocks(t testing.TB, b *bdev.Bdev, lba uint64, blocks int, seed uint64) [32]byte {
	data := randomData(seed, blocks*b.BlockSize())
	blockIO(t, b, true, lba, data)
	return sha256.Sum256(data)
}

// sumBlocks reads blocks at lba back and returns their checksum.
func sumBlocks(t testing.TB, b *bdev.Bdev, lba uint64, blocks int) [32]byte {
	data := make([]byte, blocks*b.BlockSize())
	blockIO(t, b, false, lba, data)
	return sha256.Sum256(data)
}

func busDelta(before, after mock.BusStats) mock.BusStats {
	return mock.BusStats{
		Faults:    after.Faults - before.Faults,
		HostRead:  after.HostRead - before.HostRead,
		HostWrite: after.HostWrite - before.HostWrite,
		PeerRead:  after.PeerRead - before.PeerRead,
		PeerWrite: after.PeerWrite - before.PeerWrite,
	}
}

func mustIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func nsOnly(name string) mock.Config {
	return mock.Config{Name: name, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}}
}

func (r *rig) sortedCtrls(names ...string) []*nvme.Controller {
	var out []*nvme.Controller
	for _, n := range names {
		out = append(out, r.ctrls[n])
	}
	return out
}

// The transports implement the interfaces p2pdma declares.
var (
	_ CMBSharer        = (*mock.Controller)(nil)
	_ HostMemorySharer = (*mock.Controller)(nil)
	_ CMBSharer        = (*vfio.Device)(nil)
	_ HostMemorySharer = (*vfio.Device)(nil)
)
