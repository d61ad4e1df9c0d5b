package mock_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// TestPeerMemoryCopy: a Memory Copy from another controller's namespace is
// a Read that the source controller executes, its DMA landing in the
// compute controller's memory through the bus: the bytes arrive, the bus
// counts them as peer memory traffic and none as host traffic, the source's
// SMART log counts the Reads, and the source's fault rules hit them.
func TestPeerMemoryCopy(t *testing.T) {
	r := newCPRig(t, nil)
	slm := r.cn.Memory[0]
	dns := r.data.Namespaces()[0]
	id := r.data.IdentifyData()
	if id.SubNQN != rigNQN || id.CMIC&nvme.CMICMultiController == 0 || r.comp.IdentifyData().SubNQN != rigNQN {
		t.Fatalf("identify: SUBNQN %q / %q, CMIC %#x: want one multi-controller subsystem %q", id.SubNQN, r.comp.IdentifyData().SubNQN, id.CMIC, rigNQN)
	}
	// 1536 blocks (768 KiB): more than the source's 512 KiB MDTS, so the
	// compute controller splits the transfer, with PRP lists.
	const blocks = 1536
	want := make([]byte, blocks*512)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	for at := 0; at < blocks; at += 1024 {
		n := min(1024, blocks-at)
		copy(r.buf.Buf, want[at*512:(at+n)*512])
		if _, err := wait(t, r.dqp, func(c nvme.Completer) error { return r.dqp.Write(dns, uint64(at), uint32(n), r.buf, 0, c, 0) }); err != nil {
			t.Fatal(err)
		}
	}
	smart0, err := r.data.SMART()
	if err != nil {
		t.Fatal(err)
	}
	before := r.dm.Bus().Stats()
	src := []nvme.MemCopySource{{Controller: id.CNTLID, NSID: dns.ID, LBA: 0, Blocks: blocks}}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryCopy(slm, 4096, src, c, 0) }); err != nil {
		t.Fatal(err)
	}
	after := r.dm.Bus().Stats()
	if d := after.PeerWrite - before.PeerWrite; d != blocks*512 {
		t.Errorf("peer memory written: %d bytes, want %d", d, blocks*512)
	}
	if after.HostWrite != before.HostWrite || after.HostRead-before.HostRead != nvme.MemCopySourceSize || after.Faults != before.Faults {
		t.Errorf("bus %+v then %+v: want only the %d-byte descriptor through host memory", before, after, nvme.MemCopySourceSize)
	}
	smart1, err := r.data.SMART()
	if err != nil {
		t.Fatal(err)
	}
	if smart1.HostReads-smart0.HostReads != 2 || smart1.DataUnitsRead <= smart0.DataUnitsRead {
		t.Errorf("source SMART: %d read commands, data units %d -> %d: want the 2 peer Reads counted", smart1.HostReads-smart0.HostReads, smart0.DataUnitsRead, smart1.DataUnitsRead)
	}
	// The data arrived.
	got := make([]byte, 0, len(want))
	for at := 0; at < len(want); at += 512 << 10 {
		n := min(512<<10, len(want)-at)
		if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryRead(slm, uint64(4096+at), r.buf, 0, n, c, 0) }); err != nil {
			t.Fatal(err)
		}
		got = append(got, r.buf.Buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the device memory does not hold the source's blocks")
	}
	// The source controller executes the Read: its fault rules hit it.
	h := r.dm.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Status: nvme.ErrUnrecoveredRead, Count: 1})
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryCopy(slm, 0, src[:1], c, 0) }); !errors.Is(err, nvme.ErrUnrecoveredRead) {
		t.Fatalf("copy over a failing source read: %v", err)
	}
	if h.Hits() != 1 {
		t.Fatalf("the source's fault rule hit %d times, want 1", h.Hits())
	}
	// A copy of the source into itself through the host queue still works
	// after the fault (the peer queue is not stuck).
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryCopy(slm, 0, src[:1], c, 0) }); err != nil {
		t.Fatalf("copy after the fault: %v", err)
	}
}

// TestPeerOtherSubsystem: a controller of another NVM subsystem on the same
// bus is not reachable: Memory Copy fails with Memory Unreachable, and the
// compute device's log says why.
func TestPeerOtherSubsystem(t *testing.T) {
	r := newCPRig(t, nil)
	om, err := mock.NewController(r.dm.Bus(), mock.Config{Serial: "OTHER", Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := nvme.NewController(om, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oid := other.IdentifyData()
	if oid.SubNQN == rigNQN || oid.CMIC&nvme.CMICMultiController != 0 {
		t.Fatalf("a controller of its own subsystem reports SUBNQN %q, CMIC %#x", oid.SubNQN, oid.CMIC)
	}
	before := r.dm.Bus().Stats()
	src := []nvme.MemCopySource{{Controller: oid.CNTLID, NSID: 1, LBA: 0, Blocks: 8}}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryCopy(r.cn.Memory[0], 0, src, c, 0) }); !errors.Is(err, nvme.ErrMemoryUnreachable) {
		t.Fatalf("copy from another subsystem: %v, want %v", err, nvme.ErrMemoryUnreachable)
	}
	if d := r.dm.Bus().Stats(); d.PeerWrite != before.PeerWrite {
		t.Fatalf("a refused copy moved %d peer bytes", d.PeerWrite-before.PeerWrite)
	}
	log := r.cm.ComputeLog()
	if len(log) == 0 || !strings.Contains(log[len(log)-1], "subsystem") {
		t.Fatalf("compute log %q does not say why", log)
	}
}

// TestCMBReadCost: a CPU read of an emulated CMB costs what the controller
// is configured to charge (at least: the charge spins that long), by
// default DefaultCMBReadCost per 64 bytes; a negative cost is free.
func TestCMBReadCost(t *testing.T) {
	bus := mock.NewBus()
	slow, err := mock.NewController(bus, mock.Config{CMBSize: 1 << 20, CMBReadCost: 200 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	def, err := mock.NewController(bus, mock.Config{CMBSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	free, err := mock.NewController(bus, mock.Config{CMBSize: 1 << 20, CMBReadCost: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer free.Close()
	if def.CMBReadCost() != mock.DefaultCMBReadCost || free.CMBReadCost() != 0 || slow.CMBReadCost() != 200*time.Microsecond {
		t.Fatalf("costs %v %v %v", def.CMBReadCost(), free.CMBReadCost(), slow.CMBReadCost())
	}
	t0 := time.Now()
	slow.ChargeCMBRead(100 * 64) // 100 uncached 64-byte reads
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Fatalf("reading 6400 bytes of the CMB took %v, want at least 20ms", d)
	}
}

// BenchmarkPeerMemoryCopy: a 256 KiB Memory Copy from a peer controller
// (two peer Reads' worth of PRPs); allocs/op is 0.
func BenchmarkPeerMemoryCopy(b *testing.B) {
	r := newCPRig(&testing.T{}, nil)
	src := []nvme.MemCopySource{{Controller: r.data.IdentifyData().CNTLID, NSID: 1, LBA: 0, Blocks: 512}}
	var res result
	b.SetBytes(512 * 512)
	b.ReportAllocs()
	for range b.N {
		res = result{}
		if err := r.qp.MemoryCopy(r.cn.Memory[0], 0, src, &res, 0); err != nil {
			b.Fatal(err)
		}
		for !res.done {
			r.qp.Process(0)
		}
		if res.err != nil {
			b.Fatal(res.err)
		}
	}
}
