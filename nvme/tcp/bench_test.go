package tcp

import (
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

type benchDone struct{ n int }

func (b *benchDone) Complete(uint64, uint64, error) { b.n++ }

// benchRead runs 4 KiB reads at queue depth qd on a connected queue pair.
func benchRead(b *testing.B, c *nvme.Controller, qd int) {
	qp, err := c.NewQueuePair(qd + 1)
	if err != nil {
		b.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	buf, err := c.Transport().AllocDMA(qd * 4096)
	if err != nil {
		b.Fatal(err)
	}
	blocks := uint32(4096 / ns.BlockSize)
	done := &benchDone{}
	submitted := 0
	submit := func() {
		slot := submitted % qd
		if err := qp.ReadOne(ns, uint64(slot)*uint64(blocks), blocks, buf, slot*4096, done, 0); err != nil {
			b.Fatal(err)
		}
		submitted++
	}
	for i := 0; i < qd; i++ {
		submit()
	}
	for done.n < qd { // warm up: every slot's buffers are allocated
		qp.Process(0)
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	base := done.n
	for i := 0; i < qd && submitted < b.N+qd+base; i++ {
		submit()
	}
	for done.n-base < b.N {
		before := done.n
		qp.Process(0)
		for k := before; k < done.n && submitted < b.N+qd+base; k++ {
			submit()
		}
	}
	b.StopTimer()
	qp.Drain(5 * time.Second)
}

// BenchmarkRead reads 4 KiB blocks over loopback NVMe/TCP from an in-memory
// namespace of the target, next to the same loop on the emulated
// controller's null namespace (the baseline of the same run). allocs/op
// counts both ends: host, driver and target.
func BenchmarkRead(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run("tcp/qd"+itoa(qd), func(b *testing.B) {
			tg, addr := startTarget(b, 1)
			tr, err := Dial(addr, tg.NQN(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			c, err := nvme.NewController(tr, nvme.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchRead(b, c, qd)
		})
		b.Run("mock-null/qd"+itoa(qd), func(b *testing.B) {
			mc, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 30, LBASize: 512}}})
			if err != nil {
				b.Fatal(err)
			}
			c, err := nvme.NewController(mc, nvme.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			benchRead(b, c, qd)
		})
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
