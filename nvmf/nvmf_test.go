package nvmf

import (
	"fmt"
	"testing"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/bpfblk/bpfblk/poller"
)

// serve exports a malloc bdev of each LBA size and a namespace of an
// emulated NVMe controller (DMA memory: the bounce path) on 127.0.0.1.
func serve(t *testing.T) *Server {
	t.Helper()
	cores, err := poller.AvailableCores()
	if err != nil {
		t.Fatal(err)
	}
	mask := fmt.Sprint(cores[0])
	if len(cores) > 1 {
		mask = fmt.Sprintf("%d,%d", cores[0], cores[1])
	}
	g, err := poller.Start(poller.Config{Cores: mask, NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	m512, err := bdev.NewMalloc("m512", 512, 4096)
	if err != nil {
		t.Fatal(err)
	}
	m4k, err := bdev.NewMalloc("m4k", 4096, 1024)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 8 << 20, LBASize: 4096}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nb, err := bdev.NewNVMe("mock0n1", c, c.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen("127.0.0.1:0", Config{Bdevs: []*bdev.Bdev{m512, m4k, nb}, Reactors: g.Reactors()})
	if err != nil {
		t.Fatalf("Listen: %+v", err)
	}
	t.Cleanup(func() {
		s.Close()
		for _, b := range []*bdev.Bdev{m512, m4k, nb} {
			b.Close()
		}
		c.Close()
	})
	return s
}

// TestDriverSuiteOverBdevs runs the NVMe driver suite through NVMe/TCP
// against bdevs served on reactors: malloc bdevs and an NVMe bdev.
func TestDriverSuiteOverBdevs(t *testing.T) {
	s := serve(t)
	nvmetest.RunDriverSuiteWith(t, func(t *testing.T) []nvme.Transport {
		tr, err := tcp.Dial(s.Addr().String(), s.NQN(), tcp.Options{})
		if err != nil {
			t.Fatalf("Dial: %+v", err)
		}
		return []nvme.Transport{tr}
	}, nvmetest.SuiteConfig{IntegrityOps: 2000})
}
