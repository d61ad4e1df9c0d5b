package vfio_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/p2pdma"
	"github.com/bpfblk/bpfblk/poller"
)

// p2pRig opens every test device with the driver and finds the CMB: owner
// is the controller with the CMB, other the first one without.
type p2pRig struct {
	reg          *p2pdma.Region
	owner, other *nvme.Controller
}

func newP2PRig(t *testing.T, shared bool) *p2pRig {
	t.Helper()
	devs := openAll(t, shared)
	if len(devs) < 2 {
		t.Fatalf("need two controllers, have %d", len(devs))
	}
	var ctrls []*nvme.Controller
	for _, d := range devs {
		c := newController(t, d)
		t.Cleanup(func() { c.Close() })
		ctrls = append(ctrls, c)
	}
	reg, err := p2pdma.OpenAny(ctrls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	r := &p2pRig{reg: reg, owner: reg.Owner()}
	for _, c := range ctrls {
		if c != r.owner {
			r.other = c
			break
		}
	}
	t.Logf("%s: %v, bus address %#x; peer %s", reg.Name(), reg.CMB(), reg.BusAddr(), r.other.Name())
	return r
}

func p2pBdev(t *testing.T, c *nvme.Controller, nsid uint32) *bdev.Bdev {
	t.Helper()
	ns := c.Namespace(nsid)
	if ns == nil {
		t.Fatalf("%s has no namespace %d", c.Name(), nsid)
	}
	b, err := bdev.NewNVMe(c.Name()+"n"+string(rune('0'+nsid)), c, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// p2pBlockIO reads or writes data at lba through a fresh channel.
func p2pBlockIO(t *testing.T, b *bdev.Bdev, write bool, lba uint64, data []byte) {
	t.Helper()
	d, err := bdev.Open(b, write)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ch, err := d.NewChannel(2)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	buf, err := d.AllocBuffer(len(data))
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeBuffer(buf)
	done, ioErr := false, error(nil)
	cb := func(io *bdev.IO) { done, ioErr = true, io.Err() }
	n := uint64(len(data) / b.BlockSize())
	if write {
		copy(buf.Bytes, data)
		err = ch.Write(&buf, lba, n, cb, nil)
	} else {
		err = ch.Read(&buf, lba, n, cb, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !done {
		if ch.Poll() == 0 && time.Now().After(deadline) {
			t.Fatal("I/O did not complete")
		}
	}
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	if !write {
		copy(data, buf.Bytes)
	}
}

func p2pRandom(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 77))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}

// TestP2PCopyOverVFIO: controller A's Reads land in controller B's CMB and
// B's Writes take the data from there (and the other way round), with the
// devices in one container and in separate ones; then NVM Copy offload and
// a host bounce of the same data for comparison. Every copy is read back
// and compared.
func TestP2PCopyOverVFIO(t *testing.T) {
	testDevices(t)
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "shared-container", false: "separate-containers"}[shared], func(t *testing.T) {
			r := newP2PRig(t, shared)
			a1, b1 := p2pBdev(t, r.other, 1), p2pBdev(t, r.owner, 1)
			bs := a1.BlockSize()
			const size = 2 << 20
			blocks := uint64(size / bs)
			data := p2pRandom(uint64(len(r.other.Name())), size)
			p2pBlockIO(t, a1, true, 1000, data)
			check := func(name string, b *bdev.Bdev, lba uint64) {
				t.Helper()
				got := make([]byte, size)
				p2pBlockIO(t, b, false, lba, got)
				if i := firstDiff(got, data); i >= 0 {
					t.Fatalf("%s: %s block %d+%d differs at byte %d", name, b.Name(), lba, blocks, i)
				}
			}
			ctx := context.Background()
			for _, c := range []struct {
				name     string
				dst, src *bdev.Bdev
				dLBA     uint64
				sLBA     uint64
				via      p2pdma.Via
				through  bool
			}{
				// A reads into B's CMB; B writes from its own CMB.
				{"A->B through the CMB of B", b1, a1, 3000, 1000, p2pdma.ViaCMB, false},
				// B reads into its own CMB; A writes from B's CMB as a peer.
				{"B->A through the CMB of B", a1, b1, 20000, 3000, p2pdma.ViaCMB, false},
				{"NVM Copy on A", a1, a1, 40000, 1000, p2pdma.ViaCopy, false},
				{"A->B through host memory", b1, a1, 60000, 1000, p2pdma.ViaHost, true},
			} {
				st, err := p2pdma.Copy(ctx, c.dst, c.dLBA, c.src, c.sLBA, blocks, p2pdma.CopyOptions{Via: c.via})
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if st.Bytes != size || (st.BytesThroughHost != 0) != c.through {
					t.Fatalf("%s: %+v", c.name, st)
				}
				if c.via == p2pdma.ViaCMB && st.Path != r.reg.Name() {
					t.Fatalf("%s: staged in %s", c.name, st.Path)
				}
				check(c.name, c.dst, c.dLBA)
				t.Logf("%s: %d bytes via %s (%s) in %v (%.1f MB/s under emulation), %d through host memory, %d chunks of %d bytes",
					c.name, st.Bytes, st.Via, st.Path, st.Elapsed.Round(time.Microsecond), float64(st.Bytes)/st.Elapsed.Seconds()/1e6,
					st.BytesThroughHost, st.Chunks, st.ChunkBytes)
			}
			if err := p2pdma.Compare(ctx, a1, 1000, b1, 3000, blocks); err != nil {
				t.Fatal(err)
			}
			if a := r.reg.Allocator().Stats(); a.InUse != 0 {
				t.Fatalf("CMB blocks leaked: %+v", a)
			}
		})
	}
}

// TestP2PStagedScanOverVFIO scans a namespace of controller A with its
// chunks staged in controller B's CMB: A's Reads land in the CMB and the
// program reads them through B's BAR mapping; the matches equal those of a
// scan staged in host memory.
func TestP2PStagedScanOverVFIO(t *testing.T) {
	testDevices(t)
	r := newP2PRig(t, true)
	a1 := p2pBdev(t, r.other, 1)
	bs := a1.BlockSize()
	const size = 256 << 10
	data := p2pRandom(9, size)
	for i := range data {
		data[i] = 'a' + data[i]%26
	}
	var want []uint64
	for blk := 5; blk < size/bs; blk += 9 {
		copy(data[blk*bs+100:], "ERROR")
		want = append(want, uint64(blk))
	}
	p2pBlockIO(t, a1, true, 0, data)
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	pat := make([]byte, 8)
	copy(pat, "ERROR")
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_filter",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(pat), "pattern_len": uint32(5)}})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := compute.NewBdev("scan", []*bdev.Bdev{a1})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	g, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	for _, staging := range []compute.Staging{nil, p2pdma.NewCMBStaging(r.reg)} {
		var got []uint64
		st, err := cb.Scan(context.Background(), g, exe, []compute.Target{{Base: 0, Blocks: uint64(size / bs)}},
			compute.Options{Placement: compute.PlaceHost, Staging: staging, ChunkBytes: 64 << 10,
				OnMatch: func(m compute.Match) { got = append(got, m.LBA) }})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		name := "host memory"
		if staging != nil {
			name = staging.Name()
		}
		if !slices.Equal(got, want) || len(st.Faults) != 0 {
			t.Fatalf("staged in %s: %d matches (want %d), faults %v", name, len(got), len(want), st.Faults)
		}
		if (st.BytesThroughHost == 0) != (staging != nil) {
			t.Fatalf("staged in %s: %d of %d bytes through host memory", name, st.BytesThroughHost, st.BytesScanned)
		}
		t.Logf("staged in %s: %d matches, %d bytes scanned, %d through host memory, %v", name, len(got), st.BytesScanned, st.BytesThroughHost, st.Elapsed.Round(time.Millisecond))
	}
}
