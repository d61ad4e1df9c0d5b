package bdev_test

import (
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

// request is an application's state for one I/O slot: its buffer lives
// here, so the channel can keep a pointer to it while the I/O is in flight.
type request struct {
	buf  bdev.Buffer
	done int
}

// The asynchronous API as a reactor's code uses it: a channel, a DMA buffer,
// reads and writes with a callback and an argument, and Poll to complete
// them. (In an application, Poll runs from a poller on the reactor that
// owns the channel.)
func ExampleChannel() {
	mc, _ := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}}})
	defer mc.Close()
	c, _ := nvme.NewController(mc, nvme.Options{})
	defer c.Close()
	b, _ := bdev.NewNVMe("n1", c, c.Namespaces()[0])
	desc, _ := bdev.Open(b, true)
	defer desc.Close()

	ch, err := desc.NewChannel(32)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ch.Close()
	req := &request{}
	if req.buf, err = desc.AllocBuffer(4096); err != nil {
		fmt.Println(err)
		return
	}
	defer desc.FreeBuffer(req.buf)
	onDone := func(io *bdev.IO) {
		r := io.Arg.(*request)
		if err := io.Err(); err != nil {
			fmt.Println(io.Type, "failed:", err)
		}
		r.done++
	}

	copy(req.buf.Bytes, "hello, NVMe")
	if err := ch.Write(&req.buf, 8, 8, onDone, req); err != nil {
		fmt.Println(err)
		return
	}
	for req.done < 1 {
		ch.Poll()
	}
	clear(req.buf.Bytes)
	if err := ch.Read(&req.buf, 8, 1, onDone, req); err != nil {
		fmt.Println(err)
		return
	}
	for req.done < 2 {
		ch.Poll()
	}
	fmt.Printf("%s\n", req.buf.Bytes[:11])
	// Output: hello, NVMe
}

// reader keeps one read in flight per buffer and counts the bytes read:
// it is the Completer of its reads, and the tag says which buffer's read
// completed.
type reader struct {
	ch    *bdev.Channel
	bufs  []bdev.Buffer
	next  uint64 // next LBA to read
	end   uint64
	bytes int
	err   error
}

// Complete is called from Poll once per read (bdev.Completer).
func (r *reader) Complete(tag, _ uint64, err error) {
	if err != nil {
		if r.err == nil {
			r.err = err
		}
		return
	}
	r.bytes += len(r.bufs[tag].Bytes)
	r.start(tag)
}

// start reads the next 8 blocks into buffer i, if any are left.
func (r *reader) start(i uint64) {
	if r.next < r.end && r.err == nil {
		if err := r.ch.ReadTagged(&r.bufs[i], r.next, 8, r, i); err != nil {
			r.err = err
			return
		}
		r.next += 8
	}
}

// The tagged form for many small I/Os: the caller's state is a Completer,
// the tag tells its I/Os apart, and on an NVMe bdev a completion goes from
// the queue pair to the Completer without an IO object between them.
func ExampleChannel_ReadTagged() {
	mc, _ := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 30, LBASize: 512}}})
	defer mc.Close()
	c, _ := nvme.NewController(mc, nvme.Options{})
	defer c.Close()
	b, _ := bdev.NewNVMe("n1", c, c.Namespaces()[0])
	desc, _ := bdev.Open(b, false)
	defer desc.Close()

	const depth = 16
	ch, err := desc.NewChannel(depth)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ch.Close()
	mem, err := desc.AllocBuffer(depth * 4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer desc.FreeBuffer(mem)
	r := &reader{ch: ch, end: 1 << 20} // the first 512 MiB
	for i := 0; i < depth; i++ {
		r.bufs = append(r.bufs, mem.Slice(i*4096, 4096))
	}
	for i := range r.bufs {
		r.start(uint64(i))
	}
	for ch.Outstanding() > 0 {
		ch.Poll()
	}
	fmt.Println(r.bytes>>20, "MiB read, error:", r.err)
	// Output: 512 MiB read, error: <nil>
}

// Channels on a reactor: NewChannelOn, called on the reactor, makes the
// reactor's channels of one controller's namespaces share one I/O queue
// pair, created by the first and deleted with the last.
func ExampleDesc_NewChannelOn() {
	mc, _ := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 1 << 20, LBASize: 512},
		{Kind: mock.Memory, Size: 1 << 20, LBASize: 512},
	}})
	defer mc.Close()
	c, _ := nvme.NewController(mc, nvme.Options{})
	defer c.Close()
	g, err := poller.Start(poller.Config{NoPin: true, Idle: poller.IdleStrategy{Spin: 1, Yield: 1, Park: time.Millisecond}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Stop()
	r := g.Reactors()[0]

	var descs []*bdev.Desc
	for _, ns := range c.Namespaces() {
		b, _ := bdev.NewNVMe(fmt.Sprintf("n%d", ns.ID), c, ns)
		d, _ := bdev.Open(b, false)
		defer d.Close()
		descs = append(descs, d)
	}
	err = r.Call(func() error {
		var chans []*bdev.Channel
		for _, d := range descs {
			ch, err := d.NewChannelOn(r, 32)
			if err != nil {
				return err
			}
			chans = append(chans, ch)
		}
		fmt.Println("queue pairs for 2 namespaces on 1 reactor:", bdev.NVMeQueuePairs(c))
		for _, ch := range chans {
			if err := ch.Close(); err != nil {
				return err
			}
		}
		fmt.Println("after closing:", bdev.NVMeQueuePairs(c))
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// queue pairs for 2 namespaces on 1 reactor: 1
	// after closing: 0
}
