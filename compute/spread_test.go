package compute_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

// sparseSet is a set of sparse namespaces (4 KiB blocks) with the needle
// written into a few blocks of each: large, cheap to set up, and every
// match known.
type sparseSet struct {
	g       *poller.Group
	c       *nvme.Controller
	bdevs   []*bdev.Bdev
	planted [][]uint64
}

// newSparseSet makes one controller with count namespaces of size bytes,
// driven with at most queues I/O queue pairs, and two reactors.
func newSparseSet(t *testing.T, count int, size uint64, queues int) *sparseSet {
	t.Helper()
	g, err := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	var nss []mock.NamespaceConfig
	for range count {
		nss = append(nss, mock.NamespaceConfig{Kind: mock.Memory, Size: size, LBASize: 4096})
	}
	mc, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: nss})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{MaxIOQueues: queues})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); mc.Close() })
	s := &sparseSet{g: g, c: c}
	blk := make([]byte, 4096)
	copy(blk[1000:], needle)
	for i, ns := range c.Namespaces() {
		b, err := bdev.NewNVMe(fmt.Sprintf("sp%d", i), c, ns)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := bdev.Open(b, true)
		sy, err := bdev.NewSync(d, g.Reactors()[0])
		if err != nil {
			t.Fatal(err)
		}
		var lbas []uint64
		for k := uint64(0); k < 5; k++ {
			lba := (k*7919 + uint64(i)*131) * 37 % ns.Blocks
			if _, err := sy.WriteAt(context.Background(), blk, int64(lba*4096)); err != nil {
				t.Fatal(err)
			}
			lbas = append(lbas, lba)
		}
		slices.Sort(lbas)
		sy.Close()
		d.Close()
		s.bdevs = append(s.bdevs, b)
		s.planted = append(s.planted, slices.Compact(lbas))
	}
	return s
}

// scan scans every namespace on the host and checks the matches against
// the planted blocks and the counters against each other.
func (s *sparseSet) scan(t *testing.T, cb *compute.Bdev, chunk int) *compute.Stats {
	t.Helper()
	got := make([][]uint64, len(s.bdevs))
	st, err := cb.Scan(context.Background(), s.g, memmemExe(t), cb.AllTargets(), compute.Options{
		Placement: compute.PlaceHost, ChunkBytes: chunk,
		OnMatch: func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) },
	})
	if err != nil {
		t.Fatal(err)
	}
	var total, chunks uint64
	for i, b := range s.bdevs {
		slices.Sort(got[i])
		if !slices.Equal(got[i], s.planted[i]) {
			t.Fatalf("%s: matches %v, planted %v", b.Name(), got[i], s.planted[i])
		}
		size := b.NumBlocks() * uint64(b.BlockSize())
		if st.Targets[i].BytesScanned != size {
			t.Fatalf("%s: %d bytes scanned of %d", b.Name(), st.Targets[i].BytesScanned, size)
		}
		total += size
		chunks += (size + uint64(chunk) - 1) / uint64(chunk)
	}
	var coreChunks, coreBytes uint64
	for _, c := range st.Cores {
		coreChunks += c.Chunks
		coreBytes += c.BytesScanned
	}
	if st.BytesScanned != total || coreBytes != total || coreChunks != chunks || len(st.Faults) != 0 {
		t.Fatalf("scanned %d bytes (cores: %d bytes, %d chunks), want %d bytes in %d chunks; faults %v", st.BytesScanned, coreBytes, coreChunks, total, chunks, st.Faults)
	}
	return st
}

// everyCoreWorked runs scan until every reactor ran chunks in one run, and
// fails if none of ten runs shows it. (On a loaded machine a reactor's
// thread may not be scheduled before the others have taken every chunk of
// one run; a scan that hands out work per target up front fails every run.)
func everyCoreWorked(t *testing.T, scan func() *compute.Stats, reactors int) *compute.Stats {
	t.Helper()
	var st *compute.Stats
	for run := 0; run < 10; run++ {
		st = scan()
		if len(st.Cores) != reactors {
			t.Fatalf("%d core stats for %d reactors", len(st.Cores), reactors)
		}
		idle := slices.IndexFunc(st.Cores, func(c compute.CoreStats) bool { return c.Chunks == 0 })
		if idle < 0 {
			t.Logf("chunks per core: %+v", st.Cores)
			return st
		}
		t.Logf("run %d: core %d ran no chunk: %+v", run, st.Cores[idle].Core, st.Cores)
	}
	t.Fatalf("in ten runs, some reactor ran no chunk")
	return nil
}

func TestOneLargeNamespaceUsesEveryReactor(t *testing.T) {
	// 256 MiB in 8 KiB chunks: tens of thousands of chunks, far more than
	// one reactor finishes while the next one starts.
	s := newSparseSet(t, 1, 256<<20, 0)
	cb, err := compute.NewBdev("one", s.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	everyCoreWorked(t, func() *compute.Stats { return s.scan(t, cb, 8<<10) }, len(s.g.Reactors()))
}

func TestManySmallNamespacesUseEveryReactor(t *testing.T) {
	s := newSparseSet(t, 12, 2<<20, 32)
	cb, err := compute.NewBdev("many", s.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	st := everyCoreWorked(t, func() *compute.Stats { return s.scan(t, cb, 4<<10) }, len(s.g.Reactors()))
	// Chunks of one namespace do not all go to one reactor either.
	if len(s.bdevs) < len(st.Cores) {
		t.Fatal("fewer namespaces than reactors")
	}
}

// TestScanStartFailureIsClean makes the scan's start fail a thousand times
// after the first reactor has opened its channels: the controller grants
// one I/O queue pair and the scan needs two (the namespaces' channels on a
// reactor share one queue pair per controller, and there are two
// reactors). Every failed start must give back its queue pairs and
// goroutines; then a scan that fits (one reactor) succeeds.
func TestScanStartFailureIsClean(t *testing.T) {
	s := newSparseSet(t, 2, 64<<20, 1)
	both, err := compute.NewBdev("both", s.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	exe := memmemExe(t)
	goroutines := runtime.NumGoroutine()
	runs := 1000
	if testing.Short() {
		runs = 100
	}
	for i := range runs {
		_, err := both.Scan(context.Background(), s.g, exe, both.AllTargets(), compute.Options{Placement: compute.PlaceHost, ChunkBytes: 4 << 10, InFlight: 2})
		if err == nil {
			t.Fatalf("run %d: a scan needing 2 queue pairs of 1 started", i)
		}
		if !strings.Contains(err.Error(), "queue pairs are in use") {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	// Every queue pair is free again.
	var qps []*nvme.QueuePair
	for range s.c.IOQueues() {
		qp, err := s.c.NewQueuePair(4)
		if err != nil {
			t.Fatalf("after %d failed starts: %v", runs, err)
		}
		qps = append(qps, qp)
	}
	for _, qp := range qps {
		if err := qp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	g1, err := poller.Start(poller.Config{Cores: "0", NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Stop()
	one := &sparseSet{g: g1, c: s.c, bdevs: s.bdevs, planted: s.planted}
	one.scan(t, both, 64<<10)
	both.Close()
	// No goroutine outlived its scan (a few may still be on their way out).
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines+2 {
		t.Fatalf("%d goroutines after the scans, %d before", n, goroutines)
	}
}

// TestCancelledScanIsClean cancels scans whose reads are in flight: each
// returns the context's error once its reads are in, gives back its queue
// pairs, and a scan after them finds every match.
func TestCancelledScanIsClean(t *testing.T) {
	s := newSparseSet(t, 2, 64<<20, 4)
	cb, err := compute.NewBdev("cancel", s.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	exe := memmemExe(t)
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		opts := compute.Options{Placement: compute.PlaceHost, ChunkBytes: 16 << 10}
		if i%2 == 0 {
			cancel() // before the start: the first reads are in flight when the scan sees it
		} else {
			// While it runs: at the first match the collector delivers.
			opts.OnMatch = func(compute.Match) { cancel() }
		}
		st, err := cb.Scan(ctx, s.g, exe, cb.AllTargets(), opts)
		cancel()
		if err != context.Canceled || st == nil {
			t.Fatalf("run %d: stats %v, error %v; want the stats so far and %v", i, st != nil, err, context.Canceled)
		}
		// A scan cancelled before it starts stops after the reads it
		// issues at start; one cancelled later may have finished first.
		if i%2 == 0 && st.BytesScanned >= 128<<20 {
			t.Fatalf("run %d: a scan cancelled before its start scanned everything", i)
		}
	}
	s.scan(t, cb, 64<<10)
}

// TestOffloadStartFailureIsClean makes offloaded scans fail to start with
// commands in flight: the compute controller grants one I/O queue pair and
// the scan needs two (its chunks keep both reactors' jobs busy), so the
// second job's queue pair cannot open after the first has started. Every failed start must give back the queue pairs, the
// device memory and the program slot; then a scan that fits succeeds.
func TestOffloadStartFailureIsClean(t *testing.T) {
	f := newFixture(t)
	mc, err := mock.NewController(f.bus, mock.Config{Serial: "CSD0", Subsystem: testNQN, Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 32 << 20, CSI: nvme.CSISLM},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := nvme.NewController(mc, nvme.Options{MaxIOQueues: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close(); mc.Close() })
	cb, err := compute.NewBdev("off", f.bdevs)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	exe := memmemExe(t)
	runs := 30
	if testing.Short() {
		runs = 10
	}
	for i := range runs {
		_, err := cb.Scan(context.Background(), f.g, exe, cb.AllTargets(), compute.Options{Placement: compute.PlaceDevice, ChunkBytes: 64 << 10, InFlight: 2, Devices: []*nvme.Controller{dev}})
		if err == nil || !strings.Contains(err.Error(), "queue pairs are in use") {
			t.Fatalf("run %d: %v, want a start that runs out of queue pairs", i, err)
		}
	}
	var qps []*nvme.QueuePair
	for range dev.IOQueues() {
		qp, err := dev.NewQueuePair(4)
		if err != nil {
			t.Fatalf("after %d failed starts: %v", runs, err)
		}
		qps = append(qps, qp)
	}
	for _, qp := range qps {
		if err := qp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// One job (five chunks, eight in flight) fits, if the device memory,
	// the range sets and the program slot are free again.
	got, st := f.scanAll(t, cb, compute.Options{Placement: compute.PlaceDevice, ChunkBytes: 1 << 20, InFlight: 8, Devices: []*nvme.Controller{dev}})
	for i := range f.bdevs {
		if want := f.reference(i); !slices.Equal(got[i], want) {
			t.Fatalf("%s: %d matches, reference %d", f.bdevs[i].Name(), len(got[i]), len(want))
		}
	}
	if len(st.Faults) != 0 || st.Engines[1].Name != dev.Name() {
		t.Fatalf("stats %+v", st)
	}
}
