package tcp

import (
	"io"
	"net"
	"syscall"
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

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdle reads 4 KiB blocks at QD1 and QD32 from a target whose idle
// workers sleep until a socket is readable ("epoll") and from one whose
// workers poll and back off to 50 µs sleeps ("sleep", what they did
// before), alternating, on one worker. cpu-ns/op is the CPU time of the
// whole process (host, which spins, and target) per read.
func BenchmarkIdle(b *testing.B) {
	for _, qd := range []int{1, 32} {
		for _, mode := range []string{"sleep", "epoll", "sleep", "epoll"} {
			b.Run(mode+"/qd"+itoa(qd), func(b *testing.B) {
				tg, err := NewTarget(TargetConfig{Namespaces: []Namespace{newMemNS(512, 8192)}})
				if err != nil {
					b.Fatal(err)
				}
				tg.sleepIdle = mode == "sleep"
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				tg.Run(ln)
				defer tg.Close()
				tr, err := Dial(ln.Addr().String(), tg.NQN(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				c, err := nvme.NewController(tr, nvme.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cpu0 := cpuTime()
				benchRead(b, c, qd)
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
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

// BenchmarkSocketRoundTrip is the reference for BenchmarkIdle at QD1: a
// blocking socket round trip over loopback of a read's bytes (a 72-byte
// command capsule out, a 4 KiB C2HData PDU and a CapsuleResp back), one
// goroutine at each end.
func BenchmarkSocketRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const req, resp = 72, 24 + 4096 + 24
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		in, out := make([]byte, req), make([]byte, resp)
		for {
			if _, err := io.ReadFull(c, in); err != nil {
				return
			}
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	in, out := make([]byte, resp), make([]byte, req)
	b.SetBytes(4096)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkWriteR2T writes 64 KiB at queue depth 4 to a target that asks
// for the data with 8 KiB R2Ts, several outstanding per command: the R2T
// bookkeeping of both ends allocates nothing.
func BenchmarkWriteR2T(b *testing.B) {
	const size, qd = 64 << 10, 4
	tg, addr := startTargetWith(b, TargetConfig{MaxH2CData: 8 << 10})
	tr, err := Dial(addr, tg.NQN(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	qp, err := c.NewQueuePair(qd + 1)
	if err != nil {
		b.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	buf, err := tr.AllocDMA(qd * size)
	if err != nil {
		b.Fatal(err)
	}
	blocks := uint32(size) / ns.BlockSize
	done := &benchDone{}
	submitted := 0
	submit := func() {
		slot := submitted % qd
		if err := qp.WriteOne(ns, uint64(slot)*uint64(blocks), blocks, buf, slot*size, done, 0); err != nil {
			b.Fatal(err)
		}
		submitted++
	}
	for i := 0; i < qd; i++ {
		submit()
	}
	for done.n < qd {
		qp.Process(0)
	}
	b.ReportAllocs()
	b.SetBytes(size)
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
