package mock_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/poller"
)

type rig struct {
	bus  *mock.Bus
	dev  *mock.Controller
	ctrl *nvme.Controller
	ns   *nvme.Namespace
	buf  *nvme.DMA
}

func newRig(t *testing.T, cfg mock.Config, opts nvme.Options) *rig {
	t.Helper()
	if cfg.Namespaces == nil {
		cfg.Namespaces = []mock.NamespaceConfig{{Kind: mock.Memory, Size: 16 << 20}}
	}
	bus := mock.NewBus()
	dev, err := mock.NewController(bus, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := nvme.NewController(dev, opts)
	if err != nil {
		dev.Close()
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { ctrl.Close() })
	buf, err := dev.AllocDMA(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{bus: bus, dev: dev, ctrl: ctrl, ns: ctrl.Namespaces()[0], buf: buf}
}

type rec struct {
	n   map[uint64]int
	err map[uint64]error
}

func newRec() *rec { return &rec{n: map[uint64]int{}, err: map[uint64]error{}} }

func (r *rec) Complete(tag, _ uint64, err error) { r.n[tag]++; r.err[tag] = err }

func (r *rec) once(t *testing.T, tags ...uint64) {
	t.Helper()
	for _, tag := range tags {
		if r.n[tag] != 1 {
			t.Fatalf("command %d completed %d times, want exactly once", tag, r.n[tag])
		}
	}
}

func drain(t *testing.T, qp *nvme.QueuePair) {
	t.Helper()
	if err := qp.Drain(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestStatusInjection(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{})
	h := r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, LBA: 100, Blocks: 10, Status: nvme.ErrUnrecoveredRead})
	qp, err := r.ctrl.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	rc := newRec()
	qp.Read(r.ns, 105, 1, r.buf, 0, rc, 1)
	qp.Read(r.ns, 0, 8, r.buf, 4096, rc, 2)
	qp.Read(r.ns, 95, 6, r.buf, 8192, rc, 3) // overlaps 100
	qp.Write(r.ns, 105, 1, r.buf, 0, rc, 4)  // writes are not matched
	drain(t, qp)
	rc.once(t, 1, 2, 3, 4)
	var se nvme.StatusError
	if err := rc.err[1]; !errors.Is(err, nvme.ErrUnrecoveredRead) || !errors.As(err, &se) || se.SCT != nvme.SCTMedia ||
		!strings.Contains(err.Error(), "Unrecovered Read Error") {
		t.Errorf("read in faulty range: %v", err)
	}
	if !errors.Is(rc.err[3], nvme.ErrUnrecoveredRead) || rc.err[2] != nil || rc.err[4] != nil {
		t.Errorf("errors %v %v %v", rc.err[2], rc.err[3], rc.err[4])
	}
	if h.Hits() != 2 {
		t.Errorf("fault hit %d commands, want 2", h.Hits())
	}
	log, err := r.ctrl.ErrorLog()
	if err != nil || len(log) < 2 || log[0].LBA != 95 || nvme.StatusFromField(log[0].Status) == nil {
		t.Errorf("error log %+v (%v): want newest entry for LBA 95", log, err)
	}
	sm, err := r.ctrl.SMART()
	if err != nil || sm.MediaErrors != 2 || sm.ErrorLogEntries < 2 {
		t.Errorf("SMART %+v (%v): want 2 media errors", sm, err)
	}
}

// TestFaultSeed: probabilistic faults are reproducible from the seed.
func TestFaultSeed(t *testing.T) {
	run := func(seed uint64) []bool {
		r := newRig(t, mock.Config{Seed: seed}, nvme.Options{})
		r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Probability: 0.3, Status: nvme.ErrInternal})
		qp, _ := r.ctrl.NewQueuePair(8)
		rc := newRec()
		var out []bool
		for i := uint64(0); i < 200; i++ {
			qp.Read(r.ns, i, 1, r.buf, 0, rc, i)
			drain(t, qp)
			out = append(out, rc.err[i] != nil)
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	fails := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different outcome at command %d", i)
		}
		if a[i] {
			fails++
		}
	}
	if fails < 30 || fails > 90 {
		t.Errorf("%d of 200 failed at probability 0.3", fails)
	}
	same := true
	for i := range a {
		same = same && a[i] == c[i]
	}
	if same {
		t.Error("different seeds gave identical outcomes")
	}
}

// TestTimeoutAbort: a dropped completion times out, the driver aborts the
// command, and it completes once with ErrTimeout and ErrAborted; no reset.
func TestTimeoutAbort(t *testing.T) {
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		r := newRig(t, mock.Config{Mode: mode}, nvme.Options{IOTimeout: 50 * time.Millisecond})
		r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Drop: true, Count: 1})
		qp, _ := r.ctrl.NewQueuePair(16)
		rc := newRec()
		qp.Read(r.ns, 1, 1, r.buf, 0, rc, 1)
		qp.Read(r.ns, 2, 1, r.buf, 4096, rc, 2)
		drain(t, qp)
		rc.once(t, 1, 2)
		if err := rc.err[1]; !errors.Is(err, nvme.ErrTimeout) || !errors.Is(err, nvme.ErrAborted) {
			t.Errorf("mode %d: dropped read: %v, want ErrTimeout and ErrAborted", mode, err)
		}
		if rc.err[2] != nil {
			t.Errorf("mode %d: second read: %v", mode, rc.err[2])
		}
		st := qp.Stats()
		if st.Timeouts != 1 || st.Aborts != 1 || r.ctrl.Resets() != 0 {
			t.Errorf("mode %d: stats %+v, resets %d; want 1 timeout, 1 abort, no reset", mode, st, r.ctrl.Resets())
		}
		if r.dev.Held(qp.ID()) != 0 {
			t.Errorf("mode %d: device still holds %d commands", mode, r.dev.Held(qp.ID()))
		}
		qp.Read(r.ns, 3, 1, r.buf, 0, rc, 3)
		drain(t, qp)
		if rc.err[3] != nil {
			t.Errorf("mode %d: read after abort: %v", mode, rc.err[3])
		}
	}
}

// TestTimeoutReset: lost commands that an Abort cannot find make the driver
// reset the controller; every outstanding command on every queue pair
// completes exactly once with an error and the queues work again.
func TestTimeoutReset(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{IOTimeout: 100 * time.Millisecond})
	qp1, _ := r.ctrl.NewQueuePair(16)
	qp2, _ := r.ctrl.NewQueuePair(16)
	rc := newRec()
	pattern := bytes.Repeat([]byte{0xab}, 512)
	copy(r.buf.Buf, pattern)
	qp1.Write(r.ns, 50, 1, r.buf, 0, rc, 100)
	drain(t, qp1)
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, NSID: r.ns.ID, Lose: true, Count: 3})
	for i := uint64(0); i < 3; i++ {
		qp1.Read(r.ns, i, 1, r.buf, 4096, rc, i)
	}
	for i := uint64(10); i < 15; i++ {
		qp1.Write(r.ns, i, 1, r.buf, 8192, rc, i)
	}
	qp1.Process(0)
	// qp2 gets a command the device holds; its owner does not poll until
	// qp1 has finished.
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpFlush}, Drop: true, Count: 1})
	qp2.Flush(r.ns, rc, 20)
	qp2.Ring()
	drain(t, qp1)
	rc.once(t, 0, 1, 2, 10, 11, 12, 13, 14)
	for i := uint64(0); i < 3; i++ {
		if !errors.Is(rc.err[i], nvme.ErrTimeout) || errors.Is(rc.err[i], nvme.ErrAborted) {
			t.Errorf("lost read %d: %v, want ErrTimeout (not aborted)", i, rc.err[i])
		}
	}
	for i := uint64(10); i < 15; i++ {
		if rc.err[i] != nil {
			t.Errorf("write %d: %v", i, rc.err[i])
		}
	}
	if r.ctrl.Resets() != 1 {
		t.Fatalf("%d resets, want 1", r.ctrl.Resets())
	}
	drain(t, qp2)
	rc.once(t, 20)
	if !errors.Is(rc.err[20], nvme.ErrReset) {
		t.Errorf("held flush on the other queue: %v, want ErrReset", rc.err[20])
	}
	for i, qp := range []*nvme.QueuePair{qp1, qp2} {
		clear(r.buf.Buf[:512])
		tag := uint64(200 + i)
		qp.Read(r.ns, 50, 1, r.buf, 0, rc, tag)
		drain(t, qp)
		if rc.err[tag] != nil || !bytes.Equal(r.buf.Buf[:512], pattern) {
			t.Errorf("queue %d after reset: %v", qp.ID(), rc.err[tag])
		}
	}
}

// TestFatalStatus: CSTS.CFS makes the driver reset the controller.
func TestFatalStatus(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{IOTimeout: 40 * time.Millisecond})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	r.dev.SetFatal()
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	drain(t, qp)
	rc.once(t, 1)
	if !errors.Is(rc.err[1], nvme.ErrReset) {
		t.Errorf("read on a fatal controller: %v, want ErrReset", rc.err[1])
	}
	if r.ctrl.Resets() != 1 || r.ctrl.Failed() {
		t.Errorf("resets %d failed %v", r.ctrl.Resets(), r.ctrl.Failed())
	}
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 2)
	drain(t, qp)
	if rc.err[2] != nil {
		t.Errorf("read after recovery: %v", rc.err[2])
	}
}

// TestHungController: a controller that stops answering ends in
// ErrControllerFatal for every command, within the configured timeouts.
func TestHungController(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{IOTimeout: 30 * time.Millisecond,
		AdminTimeout: 50 * time.Millisecond, ReadyTimeout: 50 * time.Millisecond})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	r.dev.Hang(true)
	start := time.Now()
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	qp.Read(r.ns, 1, 1, r.buf, 512, rc, 2)
	drain(t, qp)
	rc.once(t, 1, 2)
	for _, tag := range []uint64{1, 2} {
		if !errors.Is(rc.err[tag], nvme.ErrTimeout) {
			t.Errorf("read %d on a hung controller: %v, want ErrTimeout", tag, rc.err[tag])
		}
	}
	if !r.ctrl.Failed() {
		t.Error("controller not marked failed")
	}
	if err := qp.Read(r.ns, 0, 1, r.buf, 0, rc, 3); !errors.Is(err, nvme.ErrControllerFatal) {
		t.Errorf("submit after failure: %v, want ErrControllerFatal", err)
	}
	if _, err := r.ctrl.Identify(nvme.CNSController, 0, 0, 0); !errors.Is(err, nvme.ErrControllerFatal) {
		t.Errorf("admin after failure: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("giving up took %v", d)
	}
	// Once the device answers again, a reset brings the controller back and
	// the queue pair recreates its queues.
	r.dev.Hang(false)
	if err := r.ctrl.Reset(); err != nil || r.ctrl.Failed() {
		t.Fatalf("reset after the device came back: %+v (failed %v)", err, r.ctrl.Failed())
	}
	if err := qp.Read(r.ns, 0, 1, r.buf, 0, rc, 4); err != nil {
		t.Fatalf("submit after recovery: %+v", err)
	}
	drain(t, qp)
	if rc.err[4] != nil {
		t.Errorf("read after recovery: %v", rc.err[4])
	}
	// Close of a hung controller returns.
	r.dev.Hang(true)
	done := make(chan struct{})
	go func() { r.ctrl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a hung controller")
	}
}

// TestAdminTimeout: a dropped admin command times out without hanging.
func TestAdminTimeout(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{AdminTimeout: 50 * time.Millisecond})
	r.dev.InjectFault(mock.Fault{Admin: true, Opcodes: []uint8{nvme.AdminGetLogPage}, Drop: true, Count: 1})
	if _, err := r.ctrl.SMART(); !errors.Is(err, nvme.ErrTimeout) {
		t.Fatalf("dropped admin command: %v, want ErrTimeout", err)
	}
	if _, err := r.ctrl.SMART(); err != nil {
		t.Fatalf("next admin command: %+v", err)
	}
	if err := r.ctrl.Reset(); err != nil {
		t.Fatalf("reset: %+v", err)
	}
}

// TestGarbageCompletions: unknown CIDs, duplicates, foreign SQIDs and entries
// with the wrong phase are counted and ignored, never a panic.
func TestGarbageCompletions(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{IOTimeout: 50 * time.Millisecond})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	drain(t, qp)
	q := qp.ID()
	for _, e := range []nvme.CQE{
		{SQID: q, CID: 500},    // beyond the slot table
		{SQID: q, CID: 0xffff}, // likewise
		{SQID: q, CID: 0},      // duplicate of the finished command
		{SQID: q + 5, CID: 1},  // another queue's SQID
		{SQID: q, CID: 3, Status: nvme.ErrInternal.Field()},
	} {
		if err := r.dev.PostCQE(q, e, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := qp.Process(0); n != 5 {
		t.Errorf("reaped %d garbage entries, want 5", n)
	}
	if st := qp.Stats(); st.BadCompletions != 5 {
		t.Errorf("BadCompletions %d, want 5", st.BadCompletions)
	}
	// A wrong-phase entry is not consumed.
	if err := r.dev.PostCQE(q, nvme.CQE{SQID: q, CID: 0}, true); err != nil {
		t.Fatal(err)
	}
	if n := qp.Process(0); n != 0 {
		t.Errorf("consumed %d entries with the wrong phase", n)
	}
	// A garbage completion for a live command's CID completes it (the host
	// cannot tell); the real completion that follows is then a duplicate.
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Drop: true, Count: 1})
	qp.Read(r.ns, 1, 1, r.buf, 0, rc, 2)
	qp.Ring()
	r.dev.PostCQE(q, nvme.CQE{SQID: q, CID: 0, Status: nvme.ErrInternal.Field()}, false)
	drain(t, qp)
	rc.once(t, 2)
	// Garbage on the admin queue: stale CIDs are skipped.
	r.dev.PostCQE(0, nvme.CQE{SQID: 0, CID: 0x7777}, false)
	if _, err := r.ctrl.Identify(nvme.CNSController, 0, 0, 0); err != nil {
		t.Errorf("admin after garbage: %+v", err)
	}
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 3)
	drain(t, qp)
	if rc.err[3] != nil {
		t.Errorf("read after garbage: %v", rc.err[3])
	}
}

// TestBusFault: DMA to an unmapped IOVA is a counted fault and a Data
// Transfer Error; host memory elsewhere is untouched.
func TestBusFault(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	before := r.bus.Stats().Faults
	bogus := &nvme.DMA{Buf: make([]byte, 8192), IOVA: 0x2000}
	qp.Read(r.ns, 0, 1, bogus, 0, rc, 1)
	freed, _ := r.dev.AllocDMA(4096)
	r.dev.FreeDMA(freed)
	qp.Write(r.ns, 0, 1, freed, 0, rc, 2)
	// A PRP list pointing nowhere.
	cmd := nvme.SQE{OPC: nvme.OpRead, NSID: r.ns.ID, CDW12: 23, PRP1: r.buf.IOVA, PRP2: 0x3000}
	qp.Submit(&cmd, nil, 0, 0, rc, 3)
	// A misaligned PRP entry.
	cmd = nvme.SQE{OPC: nvme.OpRead, NSID: r.ns.ID, CDW12: 15, PRP1: r.buf.IOVA, PRP2: r.buf.IOVA + 4096 + 8}
	qp.Submit(&cmd, nil, 0, 0, rc, 4)
	drain(t, qp)
	rc.once(t, 1, 2, 3, 4)
	for _, tag := range []uint64{1, 2, 3} {
		if !errors.Is(rc.err[tag], nvme.ErrDataTransfer) {
			t.Errorf("command %d: %v, want Data Transfer Error", tag, rc.err[tag])
		}
	}
	if !errors.Is(rc.err[4], nvme.ErrPRPOffsetInvalid) {
		t.Errorf("misaligned PRP: %v, want PRP Offset Invalid", rc.err[4])
	}
	if got := r.bus.Stats().Faults - before; got != 3 {
		t.Errorf("%d bus faults counted, want 3", got)
	}
}

// TestSparseCost: a 1 TiB namespace allocates only what is written.
func TestSparseCost(t *testing.T) {
	r := newRig(t, mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 40, LBASize: 4096}}}, nvme.Options{})
	if r.ns.Blocks != 1<<28 {
		t.Fatalf("%d blocks", r.ns.Blocks)
	}
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	copy(r.buf.Buf, "far end")
	qp.Write(r.ns, r.ns.Blocks-1, 1, r.buf, 0, rc, 1)
	qp.Write(r.ns, 0, 2, r.buf, 0, rc, 2)
	drain(t, qp)
	if got := r.dev.Allocated(r.ns.ID); got != 2*64<<10 {
		t.Errorf("allocated %d bytes after writing 3 blocks, want 128 KiB", got)
	}
	clear(r.buf.Buf[:4096])
	qp.Read(r.ns, r.ns.Blocks-1, 1, r.buf, 0, rc, 3)
	drain(t, qp)
	if string(r.buf.Buf[:7]) != "far end" || rc.err[3] != nil {
		t.Errorf("read back %q (%v)", r.buf.Buf[:7], rc.err[3])
	}
	// Deallocating whole chunks releases them.
	qp.Deallocate(r.ns, []nvme.Range{{LBA: 0, Blocks: 16}}, rc, 4)
	drain(t, qp)
	if got := r.dev.Allocated(r.ns.ID); got != 64<<10 || rc.err[4] != nil {
		t.Errorf("allocated %d after deallocate (%v)", got, rc.err[4])
	}
}

// TestFileBacked: data in a file-backed namespace survives the controller.
func TestFileBacked(t *testing.T) {
	for _, lba := range []int{512, 4096} {
		path := filepath.Join(t.TempDir(), "ns.img")
		if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.File, Path: path, LBASize: lba}}}
		r := newRig(t, cfg, nvme.Options{})
		if r.ns.BlockSize != uint32(lba) || r.ns.Blocks != uint64(1<<20/lba) {
			t.Fatalf("namespace %d x %d", r.ns.Blocks, r.ns.BlockSize)
		}
		qp, _ := r.ctrl.NewQueuePair(8)
		rc := newRec()
		copy(r.buf.Buf, "persistent")
		qp.Write(r.ns, 3, 1, r.buf, 0, rc, 1)
		qp.Flush(r.ns, rc, 2)
		drain(t, qp)
		if rc.err[1] != nil || rc.err[2] != nil {
			t.Fatal(rc.err[1], rc.err[2])
		}
		r.ctrl.Close()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data[3*lba:], []byte("persistent")) {
			t.Errorf("LBA %d: file does not hold the written block", lba)
		}
	}
	if _, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.File, Path: "/nonexistent/x"}}}); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := mock.NewController(mock.NewBus(), mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20, LBASize: 1024}}}); err == nil {
		t.Error("1024-byte LBA accepted")
	}
}

// TestBusAccounting: payload bytes are counted by where they went, and a
// controller can DMA into a peer's CMB.
func TestBusAccounting(t *testing.T) {
	bus := mock.NewBus()
	a, err := mock.NewController(bus, mock.Config{Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := mock.NewController(bus, mock.Config{CMBSize: 1 << 20, Namespaces: []mock.NamespaceConfig{{Kind: mock.Null, Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := nvme.NewController(a, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := nvme.NewController(b, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	cmb, info, err := cb.MapCMB()
	if err != nil || !info.ReadData() || !info.WriteData() || info.Size != 1<<20 {
		t.Fatalf("MapCMB: %+v %+v", info, err)
	}
	host, _ := a.AllocDMA(8192)
	qp, _ := ca.NewQueuePair(8)
	rc := newRec()
	ns := ca.Namespaces()[0]
	copy(host.Buf, "via host")
	qp.Write(ns, 0, 2, host, 0, rc, 1) // 1024 bytes read from host memory
	drain(t, qp)
	s0 := bus.Stats()
	qp.Read(ns, 0, 2, cmb, 0, rc, 2) // 1024 bytes written into B's CMB
	drain(t, qp)
	s1 := bus.Stats()
	if rc.err[1] != nil || rc.err[2] != nil {
		t.Fatal(rc.err[1], rc.err[2])
	}
	if s0.HostRead != 1024 || s1.PeerWrite != 1024 || s1.HostWrite != s0.HostWrite {
		t.Errorf("stats %+v then %+v: want 1024 host bytes read, then 1024 peer bytes written", s0, s1)
	}
	if string(cmb.Buf[:8]) != "via host" {
		t.Errorf("CMB holds %q", cmb.Buf[:8])
	}
}

// TestDelay: added latency delays the completion, in both modes; a delay
// beyond the I/O timeout counts as a timeout.
func TestDelay(t *testing.T) {
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		r := newRig(t, mock.Config{Mode: mode}, nvme.Options{IOTimeout: 2 * time.Second})
		h := r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpWrite}, Delay: 30 * time.Millisecond})
		qp, _ := r.ctrl.NewQueuePair(8)
		rc := newRec()
		start := time.Now()
		qp.Write(r.ns, 0, 1, r.buf, 0, rc, 1)
		drain(t, qp)
		if d := time.Since(start); d < 30*time.Millisecond || rc.err[1] != nil {
			t.Errorf("mode %d: delayed write took %v (%v)", mode, d, rc.err[1])
		}
		if h.Hits() != 1 {
			t.Errorf("mode %d: %d hits", mode, h.Hits())
		}
	}
	r := newRig(t, mock.Config{Mode: mock.DeviceCore}, nvme.Options{IOTimeout: 20 * time.Millisecond})
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Delay: 300 * time.Millisecond, Count: 1})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	drain(t, qp)
	rc.once(t, 1)
	// The device core was asleep in the delay, so the Abort found nothing
	// to abort; the command then completed late, successfully.
	if err := rc.err[1]; err != nil && !errors.Is(err, nvme.ErrTimeout) {
		t.Errorf("read delayed past the timeout: %v, want success or ErrTimeout", err)
	}
	if st := qp.Stats(); st.Timeouts != 1 || st.Aborts != 0 {
		t.Errorf("stats %+v: want 1 timeout and no abort", st)
	}
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 2)
	drain(t, qp)
	if rc.err[2] != nil {
		t.Errorf("next read: %v", rc.err[2])
	}
}

// TestNoTimeoutAfterIdle: a command submitted after the queue pair sat
// unpolled for longer than the I/O timeout gets its whole timeout, though
// the queue pair's coarse clock is stale when it is submitted.
func TestNoTimeoutAfterIdle(t *testing.T) {
	r := newRig(t, mock.Config{Mode: mock.DeviceCore}, nvme.Options{IOTimeout: 100 * time.Millisecond})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	drain(t, qp)
	time.Sleep(250 * time.Millisecond)
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Delay: 50 * time.Millisecond, Count: 1})
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 2)
	drain(t, qp)
	rc.once(t, 1, 2)
	if rc.err[2] != nil {
		t.Errorf("read within its timeout after an idle queue: %v", rc.err[2])
	}
	if st := qp.Stats(); st.Timeouts != 0 {
		t.Errorf("stats %+v: want no timeout", st)
	}
}

// TestSplitError: a transfer split at MDTS completes once, with the error of
// the failing part.
func TestSplitError(t *testing.T) {
	r := newRig(t, mock.Config{MDTS: 1, Namespaces: []mock.NamespaceConfig{{Kind: mock.Memory, Size: 4 << 20}}}, nvme.Options{})
	if r.ctrl.MaxTransfer() != 8192 {
		t.Fatalf("MaxTransfer %d with MDTS 1", r.ctrl.MaxTransfer())
	}
	qp, _ := r.ctrl.NewQueuePair(64)
	rc := newRec()
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, LBA: 40, Blocks: 1, Status: nvme.ErrUnrecoveredRead})
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	copy(r.buf.Buf, pattern)
	qp.Write(r.ns, 0, 128, r.buf, 0, rc, 1) // 64 KiB = 8 commands
	if qp.Outstanding() != 8 {
		t.Fatalf("%d commands for a 64 KiB write at MDTS 8 KiB", qp.Outstanding())
	}
	drain(t, qp)
	clear(r.buf.Buf[:64<<10])
	qp.Read(r.ns, 0, 32, r.buf, 0, rc, 2)      // clean
	qp.Read(r.ns, 32, 96, r.buf, 16384, rc, 3) // one part fails
	drain(t, qp)
	rc.once(t, 1, 2, 3)
	if rc.err[1] != nil || rc.err[2] != nil || !bytes.Equal(r.buf.Buf[:16384], pattern[:16384]) {
		t.Fatalf("write %v, clean read %v", rc.err[1], rc.err[2])
	}
	if !errors.Is(rc.err[3], nvme.ErrUnrecoveredRead) {
		t.Errorf("split read with a failing part: %v", rc.err[3])
	}
	if qp.Outstanding() != 0 || qp.Free() != 63 {
		t.Errorf("%d outstanding, %d free after the split commands", qp.Outstanding(), qp.Free())
	}
}

// TestAdminLargeData: admin data over two pages uses a PRP list; 64 KiB works.
func TestAdminLargeData(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	qp.Read(r.ns, 1<<40, 1, r.buf, 0, rc, 1)
	drain(t, qp)
	for _, n := range []int{4096, 8192, 12288, nvme.MaxAdminData} {
		b, err := r.ctrl.GetLogPage(nvme.LogErrorInfo, 0, 0, n)
		if err != nil {
			t.Fatalf("%d bytes: %+v", n, err)
		}
		ents, err := nvme.ParseErrorLog(b)
		if err != nil || len(ents) != 1 || ents[0].ErrorCount != 1 {
			t.Fatalf("%d bytes: %+v %v", n, ents, err)
		}
	}
	if _, err := r.ctrl.GetLogPage(nvme.LogErrorInfo, 0, 0, nvme.MaxAdminData+4); err == nil {
		t.Error("oversized log page read accepted")
	}
}

// TestControllerClose: closing the controller completes every queue pair's
// outstanding commands once and later use fails with ErrClosed.
func TestControllerClose(t *testing.T) {
	r := newRig(t, mock.Config{}, nvme.Options{})
	qp, _ := r.ctrl.NewQueuePair(8)
	rc := newRec()
	r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, Drop: true})
	qp.Read(r.ns, 0, 1, r.buf, 0, rc, 1)
	qp.Process(0)
	if err := r.ctrl.Close(); err != nil {
		t.Fatal(err)
	}
	rc.once(t, 1)
	if !errors.Is(rc.err[1], nvme.ErrClosed) {
		t.Errorf("held read at close: %v, want ErrClosed", rc.err[1])
	}
	if err := qp.Read(r.ns, 0, 1, r.buf, 0, rc, 2); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if qp.Process(0) != 0 || r.ctrl.Close() != nil {
		t.Error("Process or a second Close after Close")
	}
	if _, err := r.ctrl.NewQueuePair(8); err == nil {
		t.Error("NewQueuePair after Close succeeded")
	}
	if _, err := r.ctrl.Identify(nvme.CNSController, 0, 0, 0); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("admin after close: %v", err)
	}
}

// TestSharedReactor: device-core controllers can share a reactor the caller
// owns, and closing one from that reactor's goroutine does not wait on itself.
func TestSharedReactor(t *testing.T) {
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() }) // after the controllers' cleanups
	re := g.Reactors()[0]
	var devs []*mock.Controller
	for i := 0; i < 2; i++ {
		r := newRig(t, mock.Config{Mode: mock.DeviceCore, Reactor: re}, nvme.Options{})
		qp, _ := r.ctrl.NewQueuePair(8)
		rc := newRec()
		copy(r.buf.Buf, "shared")
		qp.Write(r.ns, 1, 1, r.buf, 0, rc, 1)
		drain(t, qp)
		clear(r.buf.Buf[:512])
		qp.Read(r.ns, 1, 1, r.buf, 0, rc, 2)
		drain(t, qp)
		if rc.err[1] != nil || rc.err[2] != nil || string(r.buf.Buf[:6]) != "shared" {
			t.Fatalf("controller %d: %v %v %q", i, rc.err[1], rc.err[2], r.buf.Buf[:6])
		}
		devs = append(devs, r.dev)
	}
	done := make(chan error, 1)
	if err := re.Send(func() { done <- devs[0].Close() }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close from the device reactor waited on itself")
	}
}
