package bdev_test

import (
	"fmt"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
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
