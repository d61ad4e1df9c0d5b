package poller

import (
	"runtime"
	"sync"
	"testing"
)

// The ring benchmarks run each ring next to a buffered Go channel doing the
// same work, so that one run gives the ratio:
//
//	go test -run '^$' -bench . -benchmem ./poller/

const benchCap = 1024

// BenchmarkSPSC pushes and pops one element per op on one goroutine.
func BenchmarkSPSC(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		r, _ := NewSPSC[uint64](benchCap)
		b.ReportAllocs()
		var sum uint64
		for i := 0; i < b.N; i++ {
			r.Push(uint64(i))
			v, _ := r.Pop()
			sum += v
		}
		sink = sum
	})
	b.Run("chan", func(b *testing.B) {
		c := make(chan uint64, benchCap)
		b.ReportAllocs()
		var sum uint64
		for i := 0; i < b.N; i++ {
			c <- uint64(i)
			sum += <-c
		}
		sink = sum
	})
}

// BenchmarkSPSCStream moves b.N elements from a producer goroutine to a
// consumer goroutine; the ring side batches its pops.
func BenchmarkSPSCStream(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		r, _ := NewSPSC[uint64](benchCap)
		b.ReportAllocs()
		go func() {
			for i := 0; i < b.N; {
				if r.Push(uint64(i)) {
					i++
				} else {
					runtime.Gosched()
				}
			}
		}()
		var buf [64]uint64
		for got := 0; got < b.N; {
			n := r.PopBatch(buf[:])
			if n == 0 {
				runtime.Gosched()
			}
			got += n
		}
	})
	b.Run("chan", func(b *testing.B) {
		c := make(chan uint64, benchCap)
		b.ReportAllocs()
		go func() {
			for i := 0; i < b.N; i++ {
				c <- uint64(i)
			}
		}()
		for got := 0; got < b.N; got++ {
			<-c
		}
	})
}

// BenchmarkSPSCStreamBatch is BenchmarkSPSCStream with the producer pushing
// 32 elements per index update (PushBatch); a channel has no such operation,
// so its side sends one at a time as before.
func BenchmarkSPSCStreamBatch(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		r, _ := NewSPSC[uint64](benchCap)
		b.ReportAllocs()
		go func() {
			var batch [32]uint64
			for i := 0; i < b.N; {
				k := min(len(batch), b.N-i)
				for j := range k {
					batch[j] = uint64(i + j)
				}
				n := r.PushBatch(batch[:k])
				if n == 0 {
					runtime.Gosched()
				}
				i += n
			}
		}()
		var buf [64]uint64
		for got := 0; got < b.N; {
			n := r.PopBatch(buf[:])
			if n == 0 {
				runtime.Gosched()
			}
			got += n
		}
	})
	b.Run("chan", func(b *testing.B) {
		c := make(chan uint64, benchCap)
		b.ReportAllocs()
		go func() {
			for i := 0; i < b.N; i++ {
				c <- uint64(i)
			}
		}()
		for got := 0; got < b.N; got++ {
			<-c
		}
	})
}

// BenchmarkMPSC pushes and pops one element per op on one goroutine.
func BenchmarkMPSC(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		r, _ := NewMPSC[uint64](benchCap)
		b.ReportAllocs()
		var sum uint64
		for i := 0; i < b.N; i++ {
			r.Push(uint64(i))
			v, _ := r.Pop()
			sum += v
		}
		sink = sum
	})
	b.Run("chan", func(b *testing.B) {
		c := make(chan uint64, benchCap)
		b.ReportAllocs()
		var sum uint64
		for i := 0; i < b.N; i++ {
			c <- uint64(i)
			sum += <-c
		}
		sink = sum
	})
}

// BenchmarkMPSCContended has two producer goroutines feed one consumer.
func BenchmarkMPSCContended(b *testing.B) {
	const producers = 2
	b.Run("ring", func(b *testing.B) {
		r, _ := NewMPSC[uint64](benchCap)
		b.ReportAllocs()
		var wg sync.WaitGroup
		for p := 0; p < producers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := p; i < b.N; i += producers {
					for !r.Push(uint64(i)) {
						runtime.Gosched()
					}
				}
			}()
		}
		var buf [64]uint64
		for got := 0; got < b.N; {
			n := r.PopBatch(buf[:])
			if n == 0 {
				runtime.Gosched()
			}
			got += n
		}
		wg.Wait()
	})
	b.Run("chan", func(b *testing.B) {
		c := make(chan uint64, benchCap)
		b.ReportAllocs()
		var wg sync.WaitGroup
		for p := 0; p < producers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := p; i < b.N; i += producers {
					c <- uint64(i)
				}
			}()
		}
		for got := 0; got < b.N; got++ {
			<-c
		}
		wg.Wait()
	})
}

// BenchmarkRoundTrip bounces a message between two reactors (one op = one
// round trip), next to two goroutines bouncing a value over buffered channels.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("reactor", func(b *testing.B) {
		g, err := Start(Config{Cores: "0-1", NoPin: true, Idle: BusyPoll})
		if err != nil {
			b.Fatal(err)
		}
		defer g.Stop()
		pp := newPingPong(g.Reactors()[0], g.Reactors()[1], b.N)
		b.ReportAllocs()
		b.ResetTimer()
		if err := pp.start(); err != nil {
			b.Fatal(err)
		}
		<-pp.done
		b.StopTimer()
		if pp.err != nil {
			b.Fatal(pp.err)
		}
	})
	b.Run("chan", func(b *testing.B) {
		ping, pong := make(chan int, 1), make(chan int, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for v := range ping {
				pong <- v
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ping <- i
			<-pong
		}
		b.StopTimer()
		close(ping)
		<-done
	})
}

var sink uint64
