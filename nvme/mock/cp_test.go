package mock_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// cpRig is a bus with a data controller and a compute controller (a CP
// namespace and a 1 MiB SLM namespace).
type cpRig struct {
	data, comp *nvme.Controller
	dm, cm     *mock.Controller
	cn         nvme.ComputeNamespace
	qp         *nvme.QueuePair
	dqp        *nvme.QueuePair
	buf        *nvme.DMA
}

// rigNQN is the NVM subsystem of the rig's controllers.
const rigNQN = "nqn.2026-01.io.bpfblk:test:rig"

func newCPRig(t *testing.T, limits *mock.ComputeConfig) *cpRig {
	t.Helper()
	if limits == nil {
		limits = &mock.ComputeConfig{}
	}
	limits.Runner = csd.Runner{}
	bus := mock.NewBus()
	dm, err := mock.NewController(bus, mock.Config{Subsystem: rigNQN, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 512}}})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := mock.NewController(bus, mock.Config{Subsystem: rigNQN, Compute: limits, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP},
		{Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM},
		{Kind: mock.Memory, Size: 1 << 20, LBASize: 4096},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := &cpRig{dm: dm, cm: cm}
	if r.data, err = nvme.NewController(dm, nvme.Options{}); err != nil {
		t.Fatal(err)
	}
	if r.comp, err = nvme.NewController(cm, nvme.Options{AdminTimeout: time.Minute}); err != nil { // Load Program verifies: seconds under -race
		t.Fatal(err)
	}
	t.Cleanup(func() { r.data.Close(); r.comp.Close() })
	if c, _ := r.data.ComputeNamespaces(); c != nil {
		t.Fatal("a data-only controller reports compute namespaces")
	}
	cns, err := r.comp.ComputeNamespaces()
	if err != nil || len(cns) != 1 || len(cns[0].Memory) != 1 || cns[0].Sizes[0] != 1<<20 {
		t.Fatalf("compute namespaces %+v, %v", cns, err)
	}
	r.cn = cns[0]
	if r.qp, err = r.comp.NewQueuePair(16); err != nil {
		t.Fatal(err)
	}
	if r.dqp, err = r.data.NewQueuePair(16); err != nil {
		t.Fatal(err)
	}
	if r.buf, err = cm.AllocDMA(1 << 20); err != nil {
		t.Fatal(err)
	}
	return r
}

type result struct {
	done bool
	v    uint64
	err  error
}

func (r *result) Complete(_, v uint64, err error) { r.done, r.v, r.err = true, v, err }

// wait submits with f and waits for the completion.
func wait(t *testing.T, qp *nvme.QueuePair, f func(nvme.Completer) error) (uint64, error) {
	t.Helper()
	var r result
	if err := f(&r); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !r.done {
		qp.Process(0)
		if time.Now().After(deadline) {
			t.Fatal("command timed out")
		}
	}
	return r.v, r.err
}

func patternImage(t *testing.T, pat string) []byte {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_filter",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64([]byte(pat + "\x00\x00\x00\x00\x00\x00\x00\x00")[:8]), "pattern_len": uint32(len(pat))}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := csd.Image(p)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestComputeOffloadPath(t *testing.T) {
	r := newCPRig(t, nil)
	dns := r.data.Namespaces()[0]
	// 64 blocks of 512 bytes; "NEEDLE" in every 7th block.
	data := bytes.Repeat([]byte{'.'}, 64*512)
	var want []uint64
	for b := 0; b < 64; b += 7 {
		copy(data[b*512+100:], "NEEDLE")
		want = append(want, uint64(b))
	}
	copy(r.buf.Buf, data)
	if _, err := wait(t, r.dqp, func(c nvme.Completer) error { return r.dqp.Write(dns, 0, 64, r.buf, 0, c, 0) }); err != nil {
		t.Fatal(err)
	}
	cp, slm := r.cn.CP, r.cn.Memory[0]
	// Load in 100-byte chunks, activate, build a range set: 32 KiB data at 0,
	// output at 64 KiB.
	if err := r.comp.LoadProgram(cp, 2, nvme.ProgTypeEBPF, patternImage(t, "NEEDLE"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.ExecuteProgram(cp, 2, 1, 0, 0, 0, 0, c, 0)
	}); !errors.Is(err, nvme.ErrProgramNotActive) {
		t.Fatalf("execute of an inactive program: %v", err)
	}
	if err := r.comp.ActivateProgram(cp, 2); err != nil {
		t.Fatal(err)
	}
	rsid, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: 0, Length: 32 << 10}, {NSID: slm.ID, Offset: 64 << 10, Length: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	before := r.dm.Bus().Stats()
	src := []nvme.MemCopySource{{Controller: r.data.IdentifyData().CNTLID, NSID: dns.ID, LBA: 0, Blocks: 40}, {Controller: r.data.IdentifyData().CNTLID, NSID: dns.ID, LBA: 40, Blocks: 24}}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryCopy(slm, 0, src, c, 0) }); err != nil {
		t.Fatal(err)
	}
	r0, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.ExecuteProgram(cp, 2, rsid, 0, 0, uint64(dns.ID)|512<<32, 0, c, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if r0 != uint64(len(want)) {
		t.Fatalf("r0 = %d, want %d matches", r0, len(want))
	}
	out := r.buf.Buf[512<<10:]
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.MemoryRead(slm, 64<<10, r.buf, 512<<10, nvme.ExecResultSize+8*len(want), c, 0)
	}); err != nil {
		t.Fatal(err)
	}
	h := nvme.ParseExecResult(out)
	if h.Count != uint32(len(want)) || h.R0 != r0 || h.Flags != 0 {
		t.Fatalf("result header %+v", h)
	}
	for i, w := range want {
		if got := binary.LittleEndian.Uint64(out[16+8*i:]); got != w {
			t.Fatalf("match %d = LBA %d, want %d", i, got, w)
		}
	}
	st := r.dm.Bus().Stats()
	if toHost := st.HostWrite - before.HostWrite; toHost != uint64(16+8*len(want)) {
		t.Fatalf("%d bytes reached the host, want only the %d-byte match list", toHost, 16+8*len(want))
	}
	if p2p := st.PeerWrite - before.PeerWrite; p2p != 64*512 {
		t.Fatalf("peer traffic %d, want %d", p2p, 64*512)
	}
	// The compute controller's own NVM namespace (nsid 3, 4 KiB blocks) is a
	// source too: controller 0 means "this controller".
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.MemoryCopy(slm, 256<<10, []nvme.MemCopySource{{NSID: 3, LBA: 10, Blocks: 2}}, c, 0)
	}); err != nil {
		t.Fatalf("copy from this controller: %v", err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.MemoryCopy(slm, 0, []nvme.MemCopySource{{NSID: 2, Blocks: 1}}, c, 0)
	}); !errors.Is(err, nvme.ErrInvalidNamespace) {
		t.Fatalf("copy from a memory namespace as if it had LBAs: %v", err)
	}
	// Memory Write / Fill / Read round trip.
	for i := range 64 {
		r.buf.Buf[i] = byte(i)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryWrite(slm, 128<<10, r.buf, 0, 64, c, 0) }); err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryFill(slm, 128<<10+32, 16, 0xdeadbeef, c, 0) }); err != nil {
		t.Fatal(err)
	}
	clear(r.buf.Buf[:64])
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryRead(slm, 128<<10, r.buf, 0, 64, c, 0) }); err != nil {
		t.Fatal(err)
	}
	if r.buf.Buf[31] != 31 || binary.LittleEndian.Uint32(r.buf.Buf[32:]) != 0xdeadbeef || r.buf.Buf[48] != 48 {
		t.Fatalf("memory round trip: % x", r.buf.Buf[:64])
	}
	// Out-of-range and unaligned memory commands fail.
	if _, err := wait(t, r.qp, func(c nvme.Completer) error { return r.qp.MemoryFill(slm, 1<<20, 4, 0, c, 0) }); !errors.Is(err, nvme.ErrLBAOutOfRange) {
		t.Fatalf("fill past the end: %v", err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.MemoryCopy(slm, 1<<20-512, src[:1], c, 0)
	}); !errors.Is(err, nvme.ErrCapacityExceeded) {
		t.Fatalf("copy past the end: %v", err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.MemoryCopy(slm, 0, []nvme.MemCopySource{{Controller: 77, NSID: 1, Blocks: 1}}, c, 0)
	}); !errors.Is(err, nvme.ErrMemoryUnreachable) {
		t.Fatalf("copy from a controller not on the bus: %v", err)
	}
	// Unload needs deactivation first.
	if err := r.comp.UnloadProgram(cp, 2); !errors.Is(err, nvme.ErrProgramActive) {
		t.Fatalf("unload of an active program: %v", err)
	}
	if err := r.comp.DeactivateProgram(cp, 2); err != nil {
		t.Fatal(err)
	}
	if err := r.comp.UnloadProgram(cp, 2); err != nil {
		t.Fatal(err)
	}
	if err := r.comp.DeleteRangeSet(cp, rsid); err != nil {
		t.Fatal(err)
	}
	if err := r.comp.DeleteRangeSet(cp, rsid); !errors.Is(err, nvme.ErrInvalidRangeSet) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestComputeLimitsAndRefusals(t *testing.T) {
	r := newCPRig(t, &mock.ComputeConfig{Slots: 2, MaxActive: 1, MaxRangeSets: 2, MaxRanges: 2, MaxProgram: 8 << 10})
	cp, slm := r.cn.CP, r.cn.Memory[0]
	if r.cn.Info.Slots != 2 || r.cn.Info.MaxActive != 1 || r.cn.Info.MaxRangeSets != 2 || r.cn.Info.MaxRanges != 2 || r.cn.Info.MaxProgram != 8<<10 {
		t.Fatalf("identify: %+v", r.cn.Info)
	}
	img := patternImage(t, "X")
	if err := r.comp.LoadProgram(cp, 2, nvme.ProgTypeEBPF, img, 0); !errors.Is(err, nvme.ErrInvalidProgramIndex) {
		t.Fatalf("slot beyond the limit: %v", err)
	}
	if err := r.comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, make([]byte, 9<<10), 0); !errors.Is(err, nvme.ErrCommandSizeLimit) {
		t.Fatalf("oversized program: %v", err)
	}
	if err := r.comp.LoadProgram(cp, 0, 0x01, img, 0); !errors.Is(err, nvme.ErrInvalidField) {
		t.Fatalf("foreign program type: %v", err)
	}
	// A program the verifier rejects (reads r2 uninitialised) is refused
	// with a status and a logged reason.
	bad, err := csd.Image(mustRaw(t))
	if err != nil {
		t.Fatal(err)
	}
	bad = bytes.Replace(bad, []byte{0xbf, 0x20}, []byte{0xbf, 0x30}, 1) // r0 = r2 -> r0 = r3 (uninitialised)
	if err := r.comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, bad, 0); !errors.Is(err, nvme.ErrInvalidProgram) {
		t.Fatalf("unverifiable program: %v", err)
	}
	if log := strings.Join(r.cm.ComputeLog(), "\n"); !strings.Contains(log, "slot 0: program refused") {
		t.Fatalf("no reason logged: %q", log)
	}
	if err := r.comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, []byte("garbage!"), 0); !errors.Is(err, nvme.ErrInvalidProgram) {
		t.Fatalf("garbage image: %v", err)
	}
	for s := uint16(0); s < 2; s++ {
		if err := r.comp.LoadProgram(cp, s, nvme.ProgTypeEBPF, img, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.comp.ActivateProgram(cp, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.comp.ActivateProgram(cp, 1); !errors.Is(err, nvme.ErrActiveLimit) {
		t.Fatalf("second active program: %v", err)
	}
	// Ranges: limit per set, number of sets, reachability.
	rg := nvme.MemRange{NSID: slm.ID, Length: 4096}
	if _, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{rg, rg, rg}); !errors.Is(err, nvme.ErrCommandSizeLimit) {
		t.Fatalf("3 ranges: %v", err)
	}
	if _, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: 3, Length: 4096}, rg}); !errors.Is(err, nvme.ErrMemoryUnreachable) {
		t.Fatalf("range on an NVM namespace: %v", err)
	}
	if _, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Offset: 1<<20 - 4, Length: 8}, rg}); !errors.Is(err, nvme.ErrInvalidField) {
		t.Fatalf("range past the end: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{rg, {NSID: slm.ID, Offset: 8192, Length: 4096}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{rg, rg}); !errors.Is(err, nvme.ErrRangeSetLimit) {
		t.Fatalf("third range set: %v", err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.ExecuteProgram(cp, 0, 999, 0, 0, 0, 0, c, 0)
	}); !errors.Is(err, nvme.ErrInvalidRangeSet) {
		t.Fatalf("unknown range set: %v", err)
	}
}

// mustRaw is a tiny raw program: r0 = r2 (the data length); exit.
func mustRaw(t *testing.T) *engine.Program {
	t.Helper()
	p, err := engine.FromInstructions("raw", abi.TypeRaw, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R2), asm.Return()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestComputeProgramFault: a run that exhausts the device's instruction
// budget completes with Program Execution Fault and a logged reason.
func TestComputeProgramFault(t *testing.T) {
	r := newCPRig(t, &mock.ComputeConfig{Budget: 100})
	cp, slm := r.cn.CP, r.cn.Memory[0]
	if err := r.comp.LoadProgram(cp, 0, nvme.ProgTypeEBPF, patternImage(t, "NEEDLE"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.comp.ActivateProgram(cp, 0); err != nil {
		t.Fatal(err)
	}
	rsid, err := r.comp.CreateRangeSet(cp, []nvme.MemRange{{NSID: slm.ID, Length: 4096}, {NSID: slm.ID, Offset: 8192, Length: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait(t, r.qp, func(c nvme.Completer) error {
		return r.qp.ExecuteProgram(cp, 0, rsid, 0, 0, 1|512<<32, 0, c, 0)
	}); !errors.Is(err, nvme.ErrProgramFault) {
		t.Fatalf("over-budget run: %v", err)
	}
	if log := strings.Join(r.cm.ComputeLog(), "\n"); !strings.Contains(log, "program fault") || !strings.Contains(log, "budget") {
		t.Fatalf("no reason logged: %q", log)
	}
}
