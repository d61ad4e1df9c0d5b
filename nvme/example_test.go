package nvme_test

import (
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// reads counts completions; a pointer to it is a Completer, so submitting
// with it allocates nothing.
type reads struct {
	done int
	err  error
}

func (r *reads) Complete(tag, result uint64, err error) {
	r.done++
	if err != nil && r.err == nil {
		r.err = err
	}
}

// ExampleController initialises the driver over an emulated controller and
// lists what it found.
func ExampleController() {
	dev, err := mock.NewController(mock.NewBus(), mock.Config{
		Serial: "DOC0001",
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 64 << 20},
			{Kind: mock.Null, Size: 1 << 40, LBASize: 4096},
		},
	})
	if err != nil {
		panic(err)
	}
	ctrl, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		panic(err)
	}
	defer ctrl.Close()
	fmt.Println(ctrl.IdentifyData().Serial, "MDTS", ctrl.MDTS(), "max transfer", ctrl.MaxTransfer(), "copy", ctrl.Supports(nvme.OpCopy))
	for _, ns := range ctrl.Namespaces() {
		fmt.Printf("nsid %d: %d x %d B\n", ns.ID, ns.Blocks, ns.BlockSize)
	}
	// Output:
	// DOC0001 MDTS 7 max transfer 524288 copy true
	// nsid 1: 131072 x 512 B
	// nsid 2: 268435456 x 4096 B
}

// ExampleQueuePair_Process keeps 32 reads in flight: submissions are written
// to the SQ at once, and Process rings the doorbell once per batch and reaps
// completions. A full queue is back-pressure, never a wait.
func ExampleQueuePair_Process() {
	dev, _ := mock.NewController(mock.NewBus(), mock.Config{
		Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 30, LBASize: 4096}},
	})
	ctrl, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		panic(err)
	}
	defer ctrl.Close()
	ns := ctrl.Namespaces()[0]
	qp, _ := ctrl.NewQueuePair(33)
	buf, _ := dev.AllocDMA(32 * 4096)
	r := &reads{}
	const total = 1000
	submitted := 0
	deadline := time.Now().Add(10 * time.Second)
	for r.done < total && time.Now().Before(deadline) {
		for submitted < total {
			err := qp.Read(ns, uint64(submitted*7919)%ns.Blocks, 1, buf, submitted%32*4096, r, uint64(submitted))
			if err == nvme.ErrQueueFull {
				break
			}
			if err != nil {
				panic(err)
			}
			submitted++
		}
		qp.Process(0)
	}
	fmt.Println(r.done, "reads,", "error:", r.err)
	// Output: 1000 reads, error: <nil>
}
