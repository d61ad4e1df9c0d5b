package vfio_test

import (
	"fmt"
	"log"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/vfio"
)

// Open a controller bound to vfio-pci and run the NVMe driver over it.
func ExampleOpen() {
	dev, err := vfio.Open("pci:0000:01:00.0", nil)
	if err != nil {
		log.Fatal(err) // e.g. "bound to nvme, not vfio-pci: run 'bpfblk setup'"
	}
	ctrl, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		dev.Close()
		log.Fatal(err)
	}
	defer ctrl.Close() // closes dev too
	fmt.Println(ctrl.IdentifyData().Model, len(ctrl.Namespaces()))
}

// Let controller A read and write controller B's CMB directly (p2pdma):
// B's CMB gets a CPU mapping and a bus address, and A's IOMMU maps it.
func ExampleDevice_MapPeer() {
	ct, err := vfio.OpenContainer(vfio.ContainerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer ct.Close()
	a, err := vfio.Open("pci:0000:01:00.0", &vfio.Options{Container: ct})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := vfio.Open("pci:0000:02:00.0", &vfio.Options{Container: ct})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cmb, err := b.CMB() // CPU mapping: cmb.ReadAt/WriteAt; B's address: cmb.BusAddr()
	if err != nil {
		log.Fatal(err)
	}
	view, err := a.MapPeer(cmb) // view.IOVA is where A's commands point
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("B's CMB: %d MiB at %#x for B, %#x for A\n", cmb.Size()>>20, cmb.BusAddr(), view.IOVA)
}
