package mock_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// Example shows the whole path: a bus, an emulated controller with a 1 GiB
// sparse namespace, driver initialisation, a queue pair, a write and a read.
func Example() {
	bus := mock.NewBus()
	dev, err := mock.NewController(bus, mock.Config{
		Serial:     "EXAMPLE0001",
		Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 30, LBASize: 4096}},
	})
	if err != nil {
		panic(err)
	}
	ctrl, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		panic(err)
	}
	defer ctrl.Close()
	ns := ctrl.Namespaces()[0]
	fmt.Printf("%s: namespace %d, %d blocks of %d bytes\n", ctrl.IdentifyData().Serial, ns.ID, ns.Blocks, ns.BlockSize)

	qp, err := ctrl.NewQueuePair(64)
	if err != nil {
		panic(err)
	}
	buf, err := dev.AllocDMA(8192)
	if err != nil {
		panic(err)
	}
	copy(buf.Buf, bytes.Repeat([]byte("bpfblk"), 8192/6))

	var status error
	done := nvme.CompleterFunc(func(tag uint64, _ uint64, err error) { status = err })
	if err := qp.Write(ns, 100, 2, buf, 0, done, 1); err != nil {
		panic(err)
	}
	if err := qp.Drain(time.Second); err != nil || status != nil {
		panic(fmt.Sprint(err, status))
	}
	clear(buf.Buf)
	if err := qp.Read(ns, 101, 1, buf, 0, done, 2); err != nil {
		panic(err)
	}
	if err := qp.Drain(time.Second); err != nil || status != nil {
		panic(fmt.Sprint(err, status))
	}
	fmt.Printf("read back %q\n", buf.Buf[:12])
	// Output:
	// EXAMPLE0001: namespace 1, 262144 blocks of 4096 bytes
	// read back "lkbpfblkbpfb"
}
