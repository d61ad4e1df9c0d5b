package p2pdma_test

import (
	"context"
	"fmt"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/p2pdma"
)

// Example copies 1 MiB from a namespace of one controller to a namespace of
// another through the second controller's CMB: the source's Reads land in
// the CMB and the destination's Writes take the data from there, so the
// bus moves no payload byte through host memory.
func Example() {
	bus := mock.NewBus()
	open := func(cfg mock.Config) (*nvme.Controller, *bdev.Bdev) {
		dev, err := mock.NewController(bus, cfg)
		if err != nil {
			panic(err)
		}
		c, err := nvme.NewController(dev, nvme.Options{})
		if err != nil {
			panic(err)
		}
		b, err := bdev.NewNVMe(cfg.Name+"n1", c, c.Namespace(1))
		if err != nil {
			panic(err)
		}
		return c, b
	}
	ns := []mock.NamespaceConfig{{Kind: mock.Memory, Size: 64 << 20, LBASize: 4096}}
	ca, src := open(mock.Config{Name: "ssd0", Namespaces: ns})
	cb, dst := open(mock.Config{Name: "ssd1", Namespaces: ns, CMBSize: 8 << 20})
	defer ca.Close()
	defer cb.Close()

	cmb, err := p2pdma.Discover(cb.Transport())
	if err != nil {
		panic(err)
	}
	fmt.Println("ssd1 CMB:", cmb)

	before := bus.Stats()
	st, err := p2pdma.Copy(context.Background(), dst, 0, src, 0, 256, p2pdma.CopyOptions{})
	if err != nil {
		panic(err)
	}
	after := bus.Stats()
	fmt.Printf("copied %d bytes via %s (%s), %d through host memory\n", st.Bytes, st.Via, st.Path, st.BytesThroughHost)
	fmt.Printf("bus: %d bytes to/from host memory, %d to/from peer memory\n",
		after.HostRead+after.HostWrite-before.HostRead-before.HostWrite, after.PeerRead+after.PeerWrite-before.PeerRead-before.PeerWrite)
	// Output:
	// ssd1 CMB: 8 MiB in BAR2 at 0x0 [SQS LISTS RDS WDS]
	// copied 1048576 bytes via cmb (cmb of ssd1), 0 through host memory
	// bus: 0 bytes to/from host memory, 2097152 to/from peer memory
}

// ExampleAllocator shows the buddy allocator: blocks are powers of two,
// aligned to their size, and merge back when freed.
func ExampleAllocator() {
	a, err := p2pdma.NewAllocator(1 << 20)
	if err != nil {
		panic(err)
	}
	x, _ := a.Alloc(100 << 10) // a 128 KiB block
	y, _ := a.Alloc(4096)
	fmt.Printf("x at %#x, y at %#x, %d KiB in use\n", x, y, a.Stats().InUse>>10)
	a.Free(x)
	a.Free(y)
	fmt.Printf("largest free block %d KiB\n", a.Stats().Largest>>10)
	// Output:
	// x at 0x0, y at 0x20000, 132 KiB in use
	// largest free block 1024 KiB
}
