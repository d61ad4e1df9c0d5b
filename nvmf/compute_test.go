package nvmf

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

var needle = []byte("NEEDLE!!")

// matchData returns blocks 4 KiB blocks in which about one in every
// ninety-seven holds the needle (about 1%), at an offset that varies.
func matchData(blocks int, seed int) []byte {
	b := make([]byte, blocks*4096)
	for i := range b {
		b[i] = byte('a' + (i*7+seed)%23)
	}
	for blk := seed % 97; blk < blocks; blk += 97 {
		copy(b[blk*4096+(blk*131)%4000:], needle)
	}
	return b
}

// reference lists the blocks of data that hold the needle.
func reference(data []byte) []uint64 {
	var out []uint64
	for blk := 0; blk*4096 < len(data); blk++ {
		if strings.Contains(string(data[blk*4096:(blk+1)*4096]), string(needle)) {
			out = append(out, uint64(blk))
		}
	}
	return out
}

func patternExe(t testing.TB) *engine.Executable {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64(needle), "pattern_len": uint32(len(needle))}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

var subsystemSeq atomic.Int32

// computeServer serves, on 127.0.0.1 with a reactor of its own, a data
// controller's namespace holding data and, if withCompute, a compute
// controller (programs run by compute/csd) of the data's NVM subsystem.
func computeServer(t testing.TB, data []byte, withCompute bool) *Server {
	t.Helper()
	return computeServerMode(t, data, withCompute, mock.DeviceCore, 1)
}

// computeServerMode is computeServer with the compute controller in mode.
func computeServerMode(t testing.TB, data []byte, withCompute bool, mode mock.Mode, hosts int) *Server {
	t.Helper()
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	bus := mock.NewBus()
	nqn := fmt.Sprintf("nqn.2026-01.io.bpfblk:test.%d", subsystemSeq.Add(1))
	newCtl := func(cfg mock.Config) *nvme.Controller {
		cfg.Subsystem = nqn
		mc, err := mock.NewController(bus, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := nvme.NewController(mc, nvme.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); mc.Close() })
		return c
	}
	dc := newCtl(mock.Config{Serial: "DATA", Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: uint64(len(data)), LBASize: 4096}}})
	b, err := bdev.NewNVMe(dc.Name()+"n1", dc, dc.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	d, err := bdev.Open(b, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bdev.NewSync(d, g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	d.Close()
	cfg := Config{Bdevs: []*bdev.Bdev{b}, Reactors: g.Reactors(), NQN: nqn, ComputeHosts: hosts}
	if withCompute {
		cfg.Compute = newCtl(mock.Config{Serial: "CSD", Mode: mode,
			Compute: &mock.ComputeConfig{Cores: 1, Runner: csd.Runner{}}, Namespaces: []mock.NamespaceConfig{
				{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
				{Kind: mock.Memory, Size: 16 << 20, CSI: nvme.CSISLM},
			}})
	}
	srv, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("Listen: %+v", err)
	}
	t.Cleanup(func() { srv.Close(); b.Close() })
	return srv
}

// remote connects to a server as a host would: a controller over NVMe/TCP
// and bdevs of its NVM namespaces.
func remote(t *testing.T, s *Server) (*nvme.Controller, *tcp.Transport, []*bdev.Bdev) {
	t.Helper()
	tr, err := tcp.Dial(s.Addr().String(), s.NQN(), tcp.Options{})
	if err != nil {
		t.Fatalf("Dial: %+v", err)
	}
	c, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		tr.Close()
		t.Fatalf("controller over tcp: %+v", err)
	}
	var bs []*bdev.Bdev
	for _, ns := range c.Namespaces() {
		if ns.CSI != nvme.CSINVM {
			continue
		}
		b, err := bdev.NewNVMe(fmt.Sprintf("%sn%d", c.Name(), ns.ID), c, ns)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	t.Cleanup(func() {
		for _, b := range bs {
			b.Close()
		}
		c.Close()
		tr.Close()
	})
	return c, tr, bs
}

// TestComputeNamespacesExported: a host sees the served compute and memory
// namespaces through Identify alone, numbered after the NVM namespace.
func TestComputeNamespacesExported(t *testing.T) {
	s := computeServer(t, matchData(64, 1), true)
	c, _, _ := remote(t, s)
	cns, err := c.ComputeNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	cp, mem, _ := s.ComputeNSIDs()
	if len(cns) != 1 || cns[0].CP.ID != 2 || cp != 2 || len(cns[0].Memory) != 1 || cns[0].Memory[0].ID != 3 || !slices.Equal(mem, []uint32{3}) {
		t.Fatalf("compute namespaces %+v; server says compute %d, memory %v", cns, cp, mem)
	}
	if cns[0].Sizes[0] != 16<<20 || cns[0].Info.Slots == 0 || cns[0].Info.ProgTypes&1 == 0 {
		t.Fatalf("compute namespace identify %+v, memory %d bytes", cns[0].Info, cns[0].Sizes[0])
	}
	plain := computeServer(t, matchData(64, 1), false)
	pc, _, _ := remote(t, plain)
	if cns, err := pc.ComputeNamespaces(); err != nil || len(cns) != 0 || len(pc.Namespaces()) != 1 {
		t.Fatalf("a server without a compute device: %+v, %v, %d namespaces", cns, err, len(pc.Namespaces()))
	}
}

// TestDistributedScan scans two served namespaces, each placed on the
// compute namespace of its own server, and a third on a server without
// one (scanned by the host, which says why). The matches equal those of the
// host engine over the same remote namespaces and the reference, and the
// bytes that crossed the network are a small fraction of those scanned.
func TestDistributedScan(t *testing.T) {
	blocks := 1024 // 4 MiB per server
	if testing.Short() {
		blocks = 256
	}
	datas := [][]byte{matchData(blocks, 1), matchData(blocks, 2), matchData(blocks/4, 3)}
	var ctls []*nvme.Controller
	var trs []*tcp.Transport
	var bases []*bdev.Bdev
	for i, d := range datas {
		c, tr, bs := remote(t, computeServer(t, d, i < 2))
		ctls, trs, bases = append(ctls, c), append(trs, tr), append(bases, bs...)
	}
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	cb, err := compute.NewBdev("dist", bases)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	traffic := func() uint64 {
		var n uint64
		for _, tr := range trs {
			rx, tx := tr.Traffic()
			n += rx + tx
		}
		return n
	}
	scan := func(place compute.Placement) ([][]uint64, *compute.Stats, uint64) {
		got := make([][]uint64, len(bases))
		opts := compute.Options{Placement: place, Devices: ctls, ChunkBytes: 256 << 10,
			OnMatch: func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) }}
		before := traffic()
		st, err := cb.Scan(context.Background(), g, patternExe(t), cb.AllTargets(), opts)
		if err != nil {
			t.Fatalf("scan (%v): %+v", place, err)
		}
		if len(st.Faults) != 0 || st.Lost != 0 {
			t.Fatalf("scan (%v): faults %v, %d lost", place, st.Faults, st.Lost)
		}
		for i := range got {
			slices.Sort(got[i])
		}
		return got, st, traffic() - before
	}
	hostGot, hostSt, hostNet := scan(compute.PlaceHost)
	got, st, net := scan(compute.PlaceAuto)
	for i, d := range datas {
		want := reference(d)
		if len(want) == 0 || !slices.Equal(hostGot[i], want) || !slices.Equal(got[i], want) {
			t.Fatalf("%s: distributed %d matches, host %d, reference %d", bases[i].Name(), len(got[i]), len(hostGot[i]), len(want))
		}
	}
	for i := 0; i < 2; i++ {
		if e := st.Targets[i].Engine; e != ctls[i].Name() {
			t.Fatalf("%s ran on %q, want its own server's compute namespace %s", bases[i].Name(), e, ctls[i].Name())
		}
	}
	if tg := st.Targets[2]; tg.Engine != "host" || !strings.Contains(tg.Why, "no compute device reaches") {
		t.Fatalf("the namespace of the server without compute ran on %q (%q)", tg.Engine, tg.Why)
	}
	if st.BytesScanned != hostSt.BytesScanned {
		t.Fatalf("distributed scan scanned %d bytes, the host %d", st.BytesScanned, hostSt.BytesScanned)
	}
	// What the host engine read of the third namespace crossed the
	// network too; the offloaded two sent only commands and matches.
	offloaded := uint64(len(datas[0]) + len(datas[1]))
	hostRead := uint64(len(datas[2]))
	if net < hostRead || net-hostRead > offloaded/50 {
		t.Fatalf("%d bytes over the network for %d offloaded bytes and %d read by the host", net, offloaded, hostRead)
	}
	if hostNet < hostSt.BytesScanned {
		t.Fatalf("the host engine scanned %d bytes but only %d crossed the network", hostSt.BytesScanned, hostNet)
	}
	t.Logf("offloaded %d bytes to two servers + %d scanned by the host: %d bytes over the network (%.3f%% of the offloaded bytes beyond the host's reads); host engine alone: %d bytes",
		offloaded, hostRead, net, 100*float64(net-hostRead)/float64(offloaded), hostNet)
}

// wait submits one I/O command on qp and waits for it (bounded).
func wait(t *testing.T, qp *nvme.QueuePair, submit func(nvme.Completer) error) (uint64, error) {
	t.Helper()
	var done bool
	var res uint64
	var cerr error
	if err := submit(nvme.CompleterFunc(func(_, r uint64, err error) { done, res, cerr = true, r, err })); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Second); !done; {
		if qp.Process(0) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("command not completed")
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	return res, cerr
}

// TestComputeHostsKeptApart: two hosts share a served compute device; a
// program slot and a range set belong to the host that made them, the other
// host can neither take, run nor delete them, and they are released when
// their host goes.
func TestComputeHostsKeptApart(t *testing.T) {
	s := computeServer(t, matchData(64, 1), true)
	ca, tra, _ := remote(t, s)
	cb, _, _ := remote(t, s)
	img, err := csd.Image(patternExe(t).Program())
	if err != nil {
		t.Fatal(err)
	}
	cn, err := ca.ComputeNamespaces()
	if err != nil || len(cn) != 1 {
		t.Fatalf("%v %v", cn, err)
	}
	cpA, memA := cn[0].CP, cn[0].Memory[0]
	cn, _ = cb.ComputeNamespaces()
	cpB, memB := cn[0].CP, cn[0].Memory[0]
	if err := ca.LoadProgram(cpA, 0, nvme.ProgTypeEBPF, img, 4096); err != nil {
		t.Fatalf("load: %+v", err)
	}
	if err := ca.ActivateProgram(cpA, 0); err != nil {
		t.Fatalf("activate: %+v", err)
	}
	rs, err := ca.CreateRangeSet(cpA, []nvme.MemRange{{NSID: memA.ID, Length: 4096}, {NSID: memA.ID, Offset: 4096, Length: 4096}})
	if err != nil {
		t.Fatalf("range set: %+v", err)
	}
	// A runs its program over a block copied from the NVM namespace.
	qa, err := ca.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	defer qa.Close()
	if _, err := wait(t, qa, func(cb nvme.Completer) error {
		return qa.MemoryCopy(memA, 0, []nvme.MemCopySource{{NSID: 1, LBA: 1, Blocks: 1}}, cb, 0)
	}); err != nil {
		t.Fatalf("memory copy: %+v", err)
	}
	if _, err := wait(t, qa, func(cb nvme.Completer) error {
		return qa.ExecuteProgram(cpA, 0, rs, 4096, 1, 1|4096<<32, 0, cb, 0)
	}); err != nil {
		t.Fatalf("execute: %+v", err)
	}
	buf, err := tra.AllocDMA(4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, qa, func(cb nvme.Completer) error { return qa.MemoryRead(memA, 4096, buf, 0, 24, cb, 0) }); err != nil {
		t.Fatalf("memory read: %+v", err)
	}
	if h := nvme.ParseExecResult(buf.Buf); h.Count != 1 || binary.LittleEndian.Uint64(buf.Buf[16:]) != 1 {
		t.Fatalf("block 1 holds the needle: result %+v, value %d", h, binary.LittleEndian.Uint64(buf.Buf[16:]))
	}
	// B is kept out of A's slots, active or only loaded, and range set.
	if err := ca.LoadProgram(cpA, 2, nvme.ProgTypeEBPF, img, 0); err != nil {
		t.Fatalf("load: %+v", err)
	}
	for _, slot := range []uint16{0, 2} {
		if err := cb.LoadProgram(cpB, slot, nvme.ProgTypeEBPF, img, 0); !errors.Is(err, nvme.ErrProgramActive) {
			t.Fatalf("B loads A's slot %d: %v", slot, err)
		}
	}
	if err := cb.ActivateProgram(cpB, 2); err == nil {
		t.Fatal("B activates A's program")
	}
	for what, err := range map[string]error{
		"deactivate": cb.DeactivateProgram(cpB, 0), "unload": cb.UnloadProgram(cpB, 0), "delete range set": cb.DeleteRangeSet(cpB, rs),
	} {
		if err == nil {
			t.Fatalf("B could %s A's", what)
		}
	}
	qb, err := cb.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	defer qb.Close()
	if _, err := wait(t, qb, func(c nvme.Completer) error { return qb.ExecuteProgram(cpB, 0, rs, 4096, 1, 1|4096<<32, 0, c, 0) }); !errors.Is(err, nvme.ErrProgramNotActive) {
		t.Fatalf("B runs A's program: %v", err)
	}
	// Names that do not translate: a range of an NVM namespace, a copy
	// from a memory namespace or from another controller.
	if _, err := cb.CreateRangeSet(cpB, []nvme.MemRange{{NSID: 1, Length: 4096}}); !errors.Is(err, nvme.ErrMemoryUnreachable) {
		t.Fatalf("range set of an NVM namespace: %v", err)
	}
	for _, src := range []nvme.MemCopySource{{NSID: memB.ID, Blocks: 1}, {Controller: 77, NSID: 1, Blocks: 1}} {
		if _, err := wait(t, qb, func(c nvme.Completer) error { return qb.MemoryCopy(memB, 0, []nvme.MemCopySource{src}, c, 0) }); err == nil {
			t.Fatalf("memory copy from %+v accepted", src)
		}
	}
	// B takes slot 1; when A goes, its slot and range set are freed.
	if err := cb.LoadProgram(cpB, 1, nvme.ProgTypeEBPF, img, 0); err != nil {
		t.Fatalf("B loads slot 1: %+v", err)
	}
	qa.Close()
	ca.Close()
	tra.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := cb.LoadProgram(cpB, 0, nvme.ProgTypeEBPF, img, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, nvme.ErrProgramActive) || time.Now().After(deadline) {
			t.Fatalf("slot 0 after its host went: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cb.DeleteRangeSet(cpB, rs); err == nil {
		t.Fatal("the range set of a host that went is still there")
	}
}

// TestComputeHostCopy: bdevs the compute device cannot read — a malloc
// bdev, and an NVMe namespace of another subsystem, which needs DMA memory
// of its own controller — reach its memory through the server's memory:
// what a host copies into device memory is what the bdevs hold, and a
// scan placed on the device finds what the reference does.
func TestComputeHostCopy(t *testing.T) {
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	datas := [][]byte{matchData(64, 7), matchData(96, 8)}
	m, err := bdev.NewMalloc("m0", 4096, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	other, err := mock.NewController(mock.NewBus(), mock.Config{Serial: "OTHER", Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: uint64(len(datas[1])), LBASize: 4096}}})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := nvme.NewController(other, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { oc.Close(); other.Close() }()
	ob, err := bdev.NewNVMe("other", oc, oc.Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i, b := range []*bdev.Bdev{m, ob} {
		d, err := bdev.Open(b, true)
		if err != nil {
			t.Fatal(err)
		}
		s, err := bdev.NewSync(d, g.Reactors()[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.WriteAt(context.Background(), datas[i], 0); err != nil {
			t.Fatal(err)
		}
		s.Close()
		d.Close()
	}
	mc, err := mock.NewController(mock.NewBus(), mock.Config{Serial: "CSD", Mode: mock.DeviceCore, Compute: &mock.ComputeConfig{Cores: 1, Runner: csd.Runner{}},
		Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP}, {Kind: mock.Memory, Size: 8 << 20, CSI: nvme.CSISLM}}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { dev.Close(); mc.Close() }()
	s, err := Listen("127.0.0.1:0", Config{Bdevs: []*bdev.Bdev{m, ob}, Reactors: g.Reactors(), Compute: dev})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, note := s.ComputeNSIDs(); !strings.Contains(note, "2 of the 2 namespaces") {
		t.Fatalf("note %q", note)
	}
	c, tr, bases := remote(t, s)
	cn, err := c.ComputeNamespaces()
	if err != nil || len(cn) != 1 {
		t.Fatalf("%v %v", cn, err)
	}
	qp, err := c.NewQueuePair(4)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := tr.AllocDMA(3 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks 3 of the malloc bdev and 5-6 of the other one, in one copy.
	if _, err := wait(t, qp, func(cb nvme.Completer) error {
		return qp.MemoryCopy(cn[0].Memory[0], 8192, []nvme.MemCopySource{{NSID: 1, LBA: 3, Blocks: 1}, {NSID: 2, LBA: 5, Blocks: 2}}, cb, 0)
	}); err != nil {
		t.Fatalf("memory copy: %+v", err)
	}
	if _, err := wait(t, qp, func(cb nvme.Completer) error { return qp.MemoryRead(cn[0].Memory[0], 8192, buf, 0, 3*4096, cb, 0) }); err != nil {
		t.Fatalf("memory read: %+v", err)
	}
	want := append(append([]byte(nil), datas[0][3*4096:4*4096]...), datas[1][5*4096:7*4096]...)
	if !bytes.Equal(buf.Buf, want) {
		t.Fatal("device memory does not hold the copied blocks")
	}
	if _, err := wait(t, qp, func(cb nvme.Completer) error {
		return qp.MemoryCopy(cn[0].Memory[0], 0, []nvme.MemCopySource{{NSID: 1, LBA: 60, Blocks: 8}}, cb, 0)
	}); !errors.Is(err, nvme.ErrLBAOutOfRange) {
		t.Fatalf("memory copy past the end of the bdev: %v", err)
	}
	qp.Close()
	cbd, err := compute.NewBdev("hc", bases)
	if err != nil {
		t.Fatal(err)
	}
	defer cbd.Close()
	hg, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer hg.Stop()
	got := make([][]uint64, len(bases))
	st, err := cbd.Scan(context.Background(), hg, patternExe(t), cbd.AllTargets(), compute.Options{Placement: compute.PlaceDevice, Devices: []*nvme.Controller{c},
		ChunkBytes: 64 << 10, OnMatch: func(m compute.Match) { got[m.Target] = append(got[m.Target], m.LBA) }})
	if err != nil || len(st.Faults) != 0 {
		t.Fatalf("scan: %+v, %v", err, st)
	}
	for i := range bases {
		slices.Sort(got[i])
		if want := reference(datas[i]); len(want) == 0 || !slices.Equal(got[i], want) || st.Targets[i].Engine != c.Name() {
			t.Fatalf("%s: %d matches on %s, reference %d", bases[i].Name(), len(got[i]), st.Targets[i].Engine, len(want))
		}
	}
}

// BenchmarkRemoteChunk runs one offloaded chunk's commands per iteration
// against a served compute device, host and target in this process: Memory
// Copy of 64 KiB from the served namespace into device memory, Execute
// Program over it, Memory Read of the result header. allocs/op covers the
// host driver and transport, the target, the forwarding and the emulated
// device together; the device runs programs inline (on the goroutine of the
// target's worker), since its DeviceCore mode starts a goroutine per burst.
func BenchmarkRemoteChunk(b *testing.B) {
	benchChunk(b, computeServerMode(b, matchData(64, 1), true, mock.Inline, 1))
}

// BenchmarkRemoteChunkHostCopy is BenchmarkRemoteChunk with the data on a
// malloc bdev, which the device cannot read: the target's compute channel
// copies it into device memory through the server's memory.
func BenchmarkRemoteChunkHostCopy(b *testing.B) {
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Stop()
	m, err := bdev.NewMalloc("m0", 4096, 64)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	mc, err := mock.NewController(mock.NewBus(), mock.Config{Serial: "CSD", Compute: &mock.ComputeConfig{Runner: csd.Runner{}},
		Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP}, {Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM}}})
	if err != nil {
		b.Fatal(err)
	}
	dev, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { dev.Close(); mc.Close() }()
	s, err := Listen("127.0.0.1:0", Config{Bdevs: []*bdev.Bdev{m}, Reactors: g.Reactors(), Compute: dev})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchChunk(b, s)
}

func benchChunk(b *testing.B, s *Server) {
	tr, err := tcp.Dial(s.Addr().String(), s.NQN(), tcp.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	c, err := nvme.NewController(tr, nvme.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cn, err := c.ComputeNamespaces()
	if err != nil || len(cn) != 1 {
		b.Fatal(cn, err)
	}
	cp, mem := cn[0].CP, cn[0].Memory[0]
	img, err := csd.Image(patternExe(b).Program())
	if err != nil {
		b.Fatal(err)
	}
	if err := c.LoadProgram(cp, 0, nvme.ProgTypeEBPF, img, 0); err != nil {
		b.Fatal(err)
	}
	if err := c.ActivateProgram(cp, 0); err != nil {
		b.Fatal(err)
	}
	const chunk = 64 << 10
	rs, err := c.CreateRangeSet(cp, []nvme.MemRange{{NSID: mem.ID, Length: chunk}, {NSID: mem.ID, Offset: chunk, Length: 4096}})
	if err != nil {
		b.Fatal(err)
	}
	qp, err := c.NewQueuePair(8)
	if err != nil {
		b.Fatal(err)
	}
	defer qp.Close()
	buf, err := tr.AllocDMA(4096)
	if err != nil {
		b.Fatal(err)
	}
	var done bool
	var cerr error
	cb := nvme.CompleterFunc(func(_, _ uint64, err error) { done, cerr = true, err })
	run := func(submit func() error) {
		done = false
		if err := submit(); err != nil {
			b.Fatal(err)
		}
		for !done {
			qp.Process(0)
		}
		if cerr != nil {
			b.Fatal(cerr)
		}
	}
	src := []nvme.MemCopySource{{NSID: 1, LBA: 0, Blocks: chunk / 4096}}
	chunkOnce := func() {
		run(func() error { return qp.MemoryCopy(mem, 0, src, cb, 0) })
		run(func() error { return qp.ExecuteProgram(cp, 0, rs, chunk, 0, 1|4096<<32, 0, cb, 0) })
		run(func() error { return qp.MemoryRead(mem, chunk, buf, 0, 128, cb, 0) })
	}
	for i := 0; i < 16; i++ {
		chunkOnce() // buffers of the channels allocated at first use
	}
	rx0, tx0 := tr.Traffic()
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		chunkOnce()
	}
	b.StopTimer()
	rx, tx := tr.Traffic()
	b.ReportMetric(float64(rx+tx-rx0-tx0)/float64(b.N), "net-B/op")
}

// TestComputeMemoryDivided: with room for two hosts, each of two hosts sees
// half of the memory namespace as all of it, at the same offsets, without
// seeing the other's bytes, and cannot reach past its half; a third host
// sees no memory until one of them goes.
func TestComputeMemoryDivided(t *testing.T) {
	s := computeServerMode(t, matchData(64, 1), true, mock.DeviceCore, 2)
	type host struct {
		c   *nvme.Controller
		tr  *tcp.Transport
		mem *nvme.Namespace
		qp  *nvme.QueuePair
		buf *nvme.DMA
	}
	connect := func() *host {
		c, tr, _ := remote(t, s)
		h := &host{c: c, tr: tr}
		qp, err := c.NewQueuePair(4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { qp.Close() })
		h.qp = qp
		if h.buf, err = tr.AllocDMA(8192); err != nil {
			t.Fatal(err)
		}
		return h
	}
	size := func(h *host) uint64 {
		cn, err := h.c.ComputeNamespaces()
		if err != nil || len(cn) != 1 {
			t.Fatalf("%v %v", cn, err)
		}
		h.mem = cn[0].Memory[0]
		return cn[0].Sizes[0]
	}
	a, b := connect(), connect()
	half := uint64(16<<20) / 2
	if sa := size(a); sa != half {
		t.Fatalf("a host sees %d bytes of memory, want %d", sa, half)
	}
	// B's first use of the device is a range set: that claims its part.
	var bcp, bmem *nvme.Namespace
	for _, ns := range b.c.Namespaces() {
		switch ns.CSI {
		case nvme.CSICP:
			bcp = ns
		case nvme.CSISLM:
			bmem = ns
		}
	}
	if _, err := b.c.CreateRangeSet(bcp, []nvme.MemRange{{NSID: bmem.ID, Length: 4096}}); err != nil {
		t.Fatalf("range set: %+v", err)
	}
	c := connect()
	if sc := size(c); sc != 0 {
		t.Fatalf("a third host sees %d bytes of memory, want none", sc)
	}
	if sb := size(b); sb != half {
		t.Fatalf("the second host sees %d bytes of memory, want %d", sb, half)
	}
	for i, h := range []*host{a, b} {
		for k := range h.buf.Buf[:4096] {
			h.buf.Buf[k] = byte(i + 1)
		}
		if _, err := wait(t, h.qp, func(cb nvme.Completer) error { return h.qp.MemoryWrite(h.mem, 4096, h.buf, 0, 4096, cb, 0) }); err != nil {
			t.Fatalf("host %d: memory write: %+v", i, err)
		}
	}
	for i, h := range []*host{a, b} {
		clear(h.buf.Buf)
		if _, err := wait(t, h.qp, func(cb nvme.Completer) error { return h.qp.MemoryRead(h.mem, 4096, h.buf, 0, 4096, cb, 0) }); err != nil {
			t.Fatalf("host %d: memory read: %+v", i, err)
		}
		if h.buf.Buf[0] != byte(i+1) || h.buf.Buf[4095] != byte(i+1) {
			t.Fatalf("host %d reads back %d: the other host's bytes", i, h.buf.Buf[0])
		}
		for _, off := range []uint64{half, half - 2048} {
			if _, err := wait(t, h.qp, func(cb nvme.Completer) error { return h.qp.MemoryRead(h.mem, off, h.buf, 0, 4096, cb, 0) }); err == nil {
				t.Fatalf("host %d reads 4096 bytes at %d, past its %d", i, off, half)
			}
		}
		cn, _ := h.c.ComputeNamespaces()
		if _, err := h.c.CreateRangeSet(cn[0].CP, []nvme.MemRange{{NSID: h.mem.ID, Offset: half - 4096, Length: 8192}}); err == nil {
			t.Fatalf("host %d makes a range set past its memory", i)
		}
	}
	if _, err := wait(t, c.qp, func(cb nvme.Completer) error { return c.qp.MemoryRead(c.mem, 0, c.buf, 0, 4096, cb, 0) }); err == nil {
		t.Fatal("the host without memory reads some")
	}
	a.qp.Close()
	a.c.Close()
	a.tr.Close()
	for deadline := time.Now().Add(10 * time.Second); size(c) != half; {
		if time.Now().After(deadline) {
			t.Fatal("the memory of a host that went is not handed to the next")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRemoteScanMemoryTaken: while one host holds a served device's only
// part of memory, another host's scan of the server runs on its own cores,
// says why, and finds what the device would; the holder's scan offloads.
func TestRemoteScanMemoryTaken(t *testing.T) {
	data := matchData(256, 5)
	s := computeServer(t, data, true)
	ca, _, ba := remote(t, s)
	if cn, err := ca.ComputeNamespaces(); err != nil || len(cn) != 1 || cn[0].Sizes[0] == 0 {
		t.Fatalf("first host: %+v %v", cn, err)
	}
	cb, _, bb := remote(t, s)
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	scan := func(c *nvme.Controller, bs []*bdev.Bdev) *compute.Stats {
		cbd, err := compute.NewBdev("s", bs)
		if err != nil {
			t.Fatal(err)
		}
		defer cbd.Close()
		var got []uint64
		st, err := cbd.Scan(context.Background(), g, patternExe(t), cbd.AllTargets(), compute.Options{Devices: []*nvme.Controller{c},
			OnMatch: func(m compute.Match) { got = append(got, m.LBA) }})
		if err != nil || len(st.Faults) != 0 {
			t.Fatalf("scan: %+v %v", err, st)
		}
		slices.Sort(got)
		if want := reference(data); !slices.Equal(got, want) {
			t.Fatalf("%d matches, want %d", len(got), len(want))
		}
		return st
	}
	st := scan(cb, bb)
	t.Logf("second host: on %s (%s)", st.Targets[0].Engine, st.Targets[0].Why)
	if st.Targets[0].Engine != "host" || !strings.Contains(st.Targets[0].Why, "memory") {
		t.Fatalf("second host's scan ran on %q (%q), want the host: the device's memory is taken", st.Targets[0].Engine, st.Targets[0].Why)
	}
	if st := scan(ca, ba); st.Targets[0].Engine != ca.Name() {
		t.Fatalf("first host's scan ran on %q (%q)", st.Targets[0].Engine, st.Targets[0].Why)
	}
}
