package mock_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"golang.org/x/sys/unix"
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

// BenchmarkParallelQueues runs N queue pairs, each on its own goroutine, doing
// 4 KiB random reads at QD 32 on one controller's null namespace (shared),
// and, for comparison, on N controllers of their own (nothing shared but the
// bus). One op is one I/O, so ns/op is the wall time per I/O of all queues
// together: with independent queues it falls as 1/N while there are cores.
func BenchmarkParallelQueues(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("queues=%d/one-controller", n), func(b *testing.B) { benchParallel(b, n, false) })
		b.Run(fmt.Sprintf("queues=%d/own-controllers", n), func(b *testing.B) { benchParallel(b, n, true) })
	}
}

func benchParallel(b *testing.B, n int, own bool) {
	const qd = 32
	bus := mock.NewBus()
	cfg := mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 40, LBASize: 4096}}}
	var ctrls []*nvme.Controller
	defer func() {
		for _, c := range ctrls {
			c.Close()
		}
	}()
	type worker struct {
		qp  *nvme.QueuePair
		ns  *nvme.Namespace
		buf *nvme.DMA
		cb  benchCompleter
	}
	ws := make([]*worker, n)
	for i := range ws {
		if i == 0 || own {
			dev, err := mock.NewController(bus, cfg)
			if err != nil {
				b.Fatal(err)
			}
			c, err := nvme.NewController(dev, nvme.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctrls = append(ctrls, c)
		}
		c := ctrls[len(ctrls)-1]
		qp, err := c.NewQueuePair(qd + 1)
		if err != nil {
			b.Fatal(err)
		}
		buf, err := c.Transport().AllocDMA(qd * 4096)
		if err != nil {
			b.Fatal(err)
		}
		ws[i] = &worker{qp: qp, ns: c.Namespaces()[0], buf: buf}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for i, w := range ws {
		ops := b.N / n
		if i < b.N%n {
			ops++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The queue pair belongs to this goroutine from here on.
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			submitted := 0
			for w.cb.done < ops {
				for submitted < ops && w.qp.Outstanding() < qd {
					slot := submitted % qd
					if err := w.qp.Read(w.ns, rng.Uint64N(w.ns.Blocks), 1, w.buf, slot*4096, &w.cb, uint64(slot)); err != nil {
						w.cb.err = err
						return
					}
					submitted++
				}
				w.qp.Process(0)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	// CPU time per I/O does not depend on how many cores a loaded machine
	// gives the goroutines: it grows only if the queues slow each other down.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	for _, w := range ws {
		if w.cb.err != nil {
			b.Fatal(w.cb.err)
		}
	}
}

// cpuTime returns the process's user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkCopyExecute measures the offload path of a device-core compute
// controller: per op, a Memory Copy of 64 KiB from a peer controller's
// namespace into device memory (on the queue's copy engine) and an Execute
// Program over it (on the compute core). allocs/op must be 0: neither the
// driver nor the device allocates, and the device takes no lock per command
// but the queue's.
func BenchmarkCopyExecute(b *testing.B) {
	const nqn, size = "nqn.2026-01.io.bpfblk:bench:cp", 64 << 10
	bus := mock.NewBus()
	dm, err := mock.NewController(bus, mock.Config{Subsystem: nqn, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}}})
	if err != nil {
		b.Fatal(err)
	}
	cm, err := mock.NewController(bus, mock.Config{Subsystem: nqn, Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Cores: 1, Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM},
	}})
	if err != nil {
		b.Fatal(err)
	}
	data, err := nvme.NewController(dm, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	comp, err := nvme.NewController(cm, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { comp.Close(); data.Close(); cm.Close(); dm.Close() }()
	cns, err := comp.ComputeNamespaces()
	if err != nil || len(cns) != 1 {
		b.Fatalf("compute namespaces %+v, %v", cns, err)
	}
	cp, slm := cns[0].CP, cns[0].Memory[0]
	if err := comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, patternImage(&testing.T{}, "NEEDLE"), 0); err != nil {
		b.Fatal(err)
	}
	if err := comp.ActivateProgram(cp, 0); err != nil {
		b.Fatal(err)
	}
	rs, err := comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: 0, Length: size}, {NSID: slm.ID, Offset: 512 << 10, Length: 4096}})
	if err != nil {
		b.Fatal(err)
	}
	qp, err := comp.NewQueuePair(4)
	if err != nil {
		b.Fatal(err)
	}
	defer qp.Close()
	src := []nvme.MemCopySource{{Controller: data.IdentifyData().CNTLID, NSID: 1, LBA: 0, Blocks: size / 512}}
	var c benchCompleter
	step := func(submit func() error) {
		want := c.done + 1
		if err := submit(); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); c.done < want; {
			if qp.Process(0) == 0 && time.Now().After(deadline) {
				b.Fatal("command timed out")
			}
		}
		if c.err != nil {
			b.Fatal(c.err)
		}
	}
	copyCmd := func() error { return qp.MemoryCopy(slm, 0, src, &c, 0) }
	execCmd := func() error { return qp.ExecuteProgram(cp, 0, rs, 0, 0, 1|512<<32, 0, &c, 0) }
	step(copyCmd) // first use: the device memory, the peer queue, the instance
	step(execCmd)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		step(copyCmd)
		step(execCmd)
	}
}
