package mock_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// benchCompleter counts completions; a pointer to it is the Completer, so
// submitting allocates nothing.
type benchCompleter struct {
	done int
	tag  uint64 // of the last completion
	err  error
}

func (c *benchCompleter) Complete(tag, _ uint64, err error) {
	c.done++
	c.tag = tag
	if err != nil && c.err == nil {
		c.err = err
	}
}

// BenchmarkRandRead4K measures the driver plus the inline device on one core:
// 4 KiB random reads from a 1 TiB null namespace at a fixed queue depth. One
// benchmark op is one I/O, so ns/op is the CPU time per I/O.
func BenchmarkRandRead4K(b *testing.B) {
	for _, qd := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) { benchRandRead(b, qd) })
	}
}

func benchRandRead(b *testing.B, qd int) {
	bus := mock.NewBus()
	dev, err := mock.NewController(bus, mock.Config{
		Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 4096}},
		MQES:       1023,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctrl, err := nvme.NewController(dev, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer ctrl.Close()
	ns := ctrl.Namespaces()[0]
	qp, err := ctrl.NewQueuePair(qd + 1)
	if err != nil {
		b.Fatal(err)
	}
	buf, err := dev.AllocDMA(qd * 4096)
	if err != nil {
		b.Fatal(err)
	}
	lbas := make([]uint64, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range lbas {
		lbas[i] = rng.Uint64N(ns.Blocks)
	}
	cb := &benchCompleter{}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	submitted := 0
	for cb.done < b.N {
		for submitted < b.N && qp.Outstanding() < qd {
			slot := submitted % qd
			if err := qp.Read(ns, lbas[submitted&4095], 1, buf, slot*4096, cb, uint64(slot)); err != nil {
				b.Fatal(err)
			}
			submitted++
		}
		qp.Process(0)
	}
	el := time.Since(start)
	b.StopTimer()
	if cb.err != nil {
		b.Fatal(cb.err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "IOPS")
}
