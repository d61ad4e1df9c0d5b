package mock_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// TestExecuteProgramRunsOnSeveralCores submits Execute Program on two I/O
// queues of a device-core controller. A hook in the compute cores lets a
// run start only once the other queue's run has started too: executions
// that took turns on one core would wait for each other until the hook
// gives up. Both must run at once, and both must find their matches.
func TestExecuteProgramRunsOnSeveralCores(t *testing.T) {
	for _, cores := range []int{0, 2} {
		t.Run(fmt.Sprintf("cores=%d", cores), func(t *testing.T) { testExecConcurrent(t, cores) })
	}
}

func testExecConcurrent(t *testing.T, cores int) {
	goroutines := runtime.NumGoroutine()
	cm, err := mock.NewController(mock.NewBus(), mock.Config{Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Cores: cores, Runner: csd.Runner{}},
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
			{Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM},
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Load Program verifies the program: seconds under -race on a busy
	// machine.
	c, err := nvme.NewController(cm, nvme.Options{AdminTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); cm.Close() }()
	cns, err := c.ComputeNamespaces()
	if err != nil || len(cns) != 1 {
		t.Fatalf("compute namespaces %+v, %v", cns, err)
	}
	cp, slm := cns[0].CP, cns[0].Memory[0]
	if err := c.LoadProgram(cp, 0, nvme.ProgTypeEBPF, patternImage(t, "NEEDLE"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.ActivateProgram(cp, 0); err != nil {
		t.Fatal(err)
	}
	var entered, overlapped atomic.Int32
	mock.SetExecHook(cm, func() {
		entered.Add(1)
		deadline := time.Now().Add(5 * time.Second)
		for entered.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		if entered.Load() >= 2 {
			overlapped.Add(1)
		}
	})
	buf, err := cm.AllocDMA(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	// Queue q scans 32 blocks of 512 bytes at SLM offset q*128 KiB with
	// the needle in blocks q+1, q+5, ...; its output goes 64 KiB after.
	type queue struct {
		qp   *nvme.QueuePair
		rs   uint16
		want []uint64
		res  result
	}
	qs := make([]*queue, 2)
	for q := range qs {
		qp, err := c.NewQueuePair(4)
		if err != nil {
			t.Fatal(err)
		}
		defer qp.Close()
		data := bytes.Repeat([]byte{'.'}, 32*512)
		var want []uint64
		for b := q + 1; b < 32; b += 4 {
			copy(data[b*512+200:], "NEEDLE")
			want = append(want, uint64(1000+b))
		}
		copy(buf.Buf, data)
		off := uint64(q) * 128 << 10
		if _, err := wait(t, qp, func(cb nvme.Completer) error { return qp.MemoryWrite(slm, off, buf, 0, len(data), cb, 0) }); err != nil {
			t.Fatal(err)
		}
		rs, err := c.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: off, Length: 32 * 512}, {NSID: slm.ID, Offset: off + 64<<10, Length: 4096}})
		if err != nil {
			t.Fatal(err)
		}
		qs[q] = &queue{qp: qp, rs: rs, want: want}
	}
	for _, q := range qs {
		if err := q.qp.ExecuteProgram(cp, 0, q.rs, 0, 1000, 1|512<<32, 0, &q.res, 0); err != nil {
			t.Fatal(err)
		}
		q.qp.Ring()
	}
	deadline := time.Now().Add(20 * time.Second)
	for !qs[0].res.done || !qs[1].res.done {
		for _, q := range qs {
			q.qp.Process(0)
		}
		if time.Now().After(deadline) {
			t.Fatal("Execute Program did not complete")
		}
	}
	if n := overlapped.Load(); n != 2 {
		t.Fatalf("%d of 2 runs overlapped the other: the queues' programs ran one after the other", n)
	}
	for qi, q := range qs {
		if q.res.err != nil || q.res.v != uint64(len(q.want)) {
			t.Fatalf("queue %d: r0 %d, err %v; want %d matches", qi, q.res.v, q.res.err, len(q.want))
		}
		off := uint64(qi)*128<<10 + 64<<10
		n := nvme.ExecResultSize + 8*len(q.want)
		if _, err := wait(t, q.qp, func(cb nvme.Completer) error { return q.qp.MemoryRead(slm, off, buf, 0, n, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		for i, w := range q.want {
			if got := binary.LittleEndian.Uint64(buf.Buf[nvme.ExecResultSize+8*i:]); got != w {
				t.Fatalf("queue %d, match %d: LBA %d, want %d", qi, i, got, w)
			}
		}
	}
	// The compute cores end once idle.
	mock.SetExecHook(cm, nil)
	c.Close()
	cm.Close()
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Fatalf("%d goroutines, %d before", n, goroutines)
	}
}

// TestComputeRateModelsDeviceTime: a compute core with an emulated rate
// completes no run sooner than its bytes take at that rate, one run after
// the other, however fast the host runs the program; the results are those
// of the runs, and the core's goroutine ends once idle.
func TestComputeRateModelsDeviceTime(t *testing.T) {
	const runs, size, perRun = 8, 16 << 10, 20 * time.Millisecond
	rate := int64(float64(size) / perRun.Seconds())
	goroutines := runtime.NumGoroutine()
	cm, err := mock.NewController(mock.NewBus(), mock.Config{Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Cores: 1, Rate: rate, Runner: csd.Runner{}},
		Namespaces: []mock.NamespaceConfig{
			{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
			{Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM},
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Load Program verifies the program: seconds under -race on a busy
	// machine.
	c, err := nvme.NewController(cm, nvme.Options{AdminTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); cm.Close() }()
	cns, err := c.ComputeNamespaces()
	if err != nil || len(cns) != 1 {
		t.Fatalf("compute namespaces %+v, %v", cns, err)
	}
	cp, slm := cns[0].CP, cns[0].Memory[0]
	if err := c.LoadProgram(cp, 0, nvme.ProgTypeEBPF, patternImage(t, "NEEDLE"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.ActivateProgram(cp, 0); err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePair(runs + 2)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	buf, err := cm.AllocDMA(size)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{'.'}, size)
	copy(data[3*512+100:], "NEEDLE")
	copy(buf.Buf, data)
	if _, err := wait(t, qp, func(cb nvme.Completer) error { return qp.MemoryWrite(slm, 0, buf, 0, size, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	rs, err := c.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: 0, Length: size}, {NSID: slm.ID, Offset: 512 << 10, Length: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	res := make([]result, runs)
	t0 := time.Now()
	for i := range res {
		if err := qp.ExecuteProgram(cp, 0, rs, 0, 0, 1|512<<32, 0, &res[i], 0); err != nil {
			t.Fatal(err)
		}
	}
	qp.Ring()
	for deadline := time.Now().Add(20 * time.Second); ; {
		qp.Process(0)
		done := 0
		for i := range res {
			if res[i].done {
				done++
			}
		}
		if done == runs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d runs completed", done, runs)
		}
	}
	// A lower bound only: a loaded machine makes the runs slower, never
	// faster.
	if took := time.Since(t0); took < runs*perRun {
		t.Fatalf("%d runs of %d bytes at %d B/s took %v, less than the %v the rate allows", runs, size, rate, took, runs*perRun)
	}
	for i := range res {
		if res[i].err != nil || res[i].v != 1 {
			t.Fatalf("run %d: r0 %d, err %v; want 1 match", i, res[i].v, res[i].err)
		}
	}
	c.Close()
	cm.Close()
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > goroutines && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Fatalf("%d goroutines, %d before", n, goroutines)
	}
}
