package mock_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// ioWorker drives one queue pair from its own goroutine and counts what
// the device must have counted.
type ioWorker struct {
	qp       *nvme.QueuePair
	ns, null *nvme.Namespace
	base     uint64 // the worker's own LBAs: overlapping I/O would race
	buf, bad *nvme.DMA
	rng      *rand.Rand
	inflight map[uint64]byte // tag -> kind of command
	err      error

	readsOK, writesOK    uint64 // completed successfully
	readsBus, writesBus  uint64 // failed by a bus fault (unmapped PRP)
	media, internal      uint64 // failed by the two injected statuses
	bytesRead, bytesWrit uint64 // payload of successful commands
}

const (
	kRead = iota
	kWrite
	kReadBad
	kWriteBad
	kReadMedia
)

const blk = 512

func (w *ioWorker) Complete(tag, _ uint64, err error) {
	kind := w.inflight[tag]
	delete(w.inflight, tag)
	n := uint64(tag>>32) * blk
	switch {
	case err == nil && (kind == kRead || kind == kWrite):
		if kind == kRead {
			w.readsOK++
			w.bytesRead += n
		} else {
			w.writesOK++
			w.bytesWrit += n
		}
	case errors.Is(err, nvme.ErrDataTransfer) && kind == kReadBad:
		w.readsBus++
	case errors.Is(err, nvme.ErrDataTransfer) && kind == kWriteBad:
		w.writesBus++
	case errors.Is(err, nvme.ErrUnrecoveredRead) && kind == kReadMedia:
		w.media++
	case errors.Is(err, nvme.ErrInternal) && (kind == kWrite || kind == kWriteBad):
		w.internal++
	default:
		if w.err == nil {
			w.err = fmt.Errorf("command %#x (kind %d): %v", tag, kind, err)
		}
	}
}

func (w *ioWorker) run(ios, qd int) {
	next := uint64(0)
	for submitted := 0; submitted < ios || len(w.inflight) > 0; {
		for submitted < ios && len(w.inflight) < qd {
			kind := w.rng.IntN(5)
			blocks := uint32(1 + w.rng.IntN(16))
			ns, lba := w.ns, w.base+w.rng.Uint64N(1000)
			buf := w.buf
			if kind == kReadBad || kind == kWriteBad {
				buf = w.bad
			}
			if kind == kReadMedia {
				ns, lba = w.null, w.rng.Uint64N(64)
			}
			next++
			tag := next | uint64(blocks)<<32
			w.inflight[tag] = byte(kind)
			off := int(w.rng.Uint64N(4)) * 4096
			var err error
			if kind == kWrite || kind == kWriteBad {
				err = w.qp.Write(ns, lba, blocks, buf, off, w, tag)
			} else {
				err = w.qp.Read(ns, lba, blocks, buf, off, w, tag)
			}
			if err != nil {
				w.err = err
				return
			}
			submitted++
		}
		if w.qp.Process(0) == 0 {
			runtime.Gosched() // let a device core run on a machine with few cores
		}
	}
}

// TestConcurrentQueueCounters runs several queue pairs of one controller on
// parallel goroutines, with injected faults (a status on every read of a
// namespace, a status on a random 20% of writes, DMA to unmapped memory), and
// checks that the per-queue counters, summed, account for every command
// exactly: SMART commands, data units, media errors and error count, the
// error log, fault hits and the bus bytes and faults. A lost per-queue
// increment fails it.
func TestConcurrentQueueCounters(t *testing.T) {
	for _, mode := range []mock.Mode{mock.Inline, mock.DeviceCore} {
		t.Run([]string{"inline", "device-core"}[mode], func(t *testing.T) { testConcurrentCounters(t, mode) })
	}
}

func testConcurrentCounters(t *testing.T, mode mock.Mode) {
	const workers, qd = 4, 16
	ios := 3000
	if testing.Short() {
		ios = 500
	}
	r := newRig(t, mock.Config{Mode: mode, Seed: 42, Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 8 << 20}, {Kind: mock.Null, Size: 1 << 20}}}, nvme.Options{})
	media := r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpRead}, NSID: 2, Status: nvme.ErrUnrecoveredRead})
	internal := r.dev.InjectFault(mock.Fault{Opcodes: []uint8{nvme.OpWrite}, NSID: 1, Probability: 0.2, Status: nvme.ErrInternal})
	ws := make([]*ioWorker, workers)
	for i := range ws {
		qp, err := r.ctrl.NewQueuePair(qd + 1)
		if err != nil {
			t.Fatal(err)
		}
		buf, err := r.dev.AllocDMA(4*4096 + 16*blk)
		if err != nil {
			t.Fatal(err)
		}
		// A buffer whose bus address maps nothing: the device faults.
		bad := &nvme.DMA{Buf: make([]byte, len(buf.Buf)), IOVA: 0x1000}
		ws[i] = &ioWorker{qp: qp, ns: r.ns, null: r.ctrl.Namespaces()[1], base: uint64(i) * 2048, buf: buf, bad: bad, rng: rand.New(rand.NewPCG(uint64(i), 99)), inflight: map[uint64]byte{}}
	}
	smart0, err := r.ctrl.SMART()
	if err != nil {
		t.Fatal(err)
	}
	before := r.bus.Stats()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ios, qd)
		}()
	}
	wg.Wait()
	var sum ioWorker
	for _, w := range ws {
		if w.err != nil {
			t.Fatal(w.err)
		}
		sum.readsOK += w.readsOK
		sum.writesOK += w.writesOK
		sum.readsBus += w.readsBus
		sum.writesBus += w.writesBus
		sum.media += w.media
		sum.internal += w.internal
		sum.bytesRead += w.bytesRead
		sum.bytesWrit += w.bytesWrit
	}
	if sum.media == 0 || sum.internal == 0 || sum.readsBus == 0 || sum.writesBus == 0 {
		t.Fatalf("the workload did not hit every fault: %+v", sum)
	}
	after := r.bus.Stats()
	if d := after.HostWrite - before.HostWrite; d != sum.bytesRead {
		t.Errorf("bus: %d bytes written to host memory, want %d", d, sum.bytesRead)
	}
	if d := after.HostRead - before.HostRead; d != sum.bytesWrit {
		t.Errorf("bus: %d bytes read from host memory, want %d", d, sum.bytesWrit)
	}
	if d := after.Faults - before.Faults; d != sum.readsBus+sum.writesBus {
		t.Errorf("bus: %d faults, want %d", d, sum.readsBus+sum.writesBus)
	}
	if got := uint64(media.Hits()); got != sum.media {
		t.Errorf("media error fault: %d hits, want %d", got, sum.media)
	}
	if got := uint64(internal.Hits()); got != sum.internal {
		t.Errorf("internal error fault: %d hits, want %d", got, sum.internal)
	}
	sm, err := r.ctrl.SMART()
	if err != nil {
		t.Fatal(err)
	}
	// The device counts a read or write command it executed (not those an
	// injected status stopped), including those whose DMA faulted.
	if d := sm.HostReads - smart0.HostReads; d != sum.readsOK+sum.readsBus {
		t.Errorf("SMART: %d host reads, want %d", d, sum.readsOK+sum.readsBus)
	}
	if d := sm.HostWrites - smart0.HostWrites; d != sum.writesOK+sum.writesBus {
		t.Errorf("SMART: %d host writes, want %d", d, sum.writesOK+sum.writesBus)
	}
	if d := sm.MediaErrors - smart0.MediaErrors; d != sum.media {
		t.Errorf("SMART: %d media errors, want %d", d, sum.media)
	}
	failed := sum.media + sum.internal + sum.readsBus + sum.writesBus
	if d := sm.ErrorLogEntries - smart0.ErrorLogEntries; d != failed {
		t.Errorf("SMART: %d errors, want %d", d, failed)
	}
	log, err := r.ctrl.ErrorLog()
	if err != nil {
		t.Fatal(err)
	}
	if len(log) == 0 || log[0].ErrorCount != sm.ErrorLogEntries {
		t.Fatalf("error log: %d entries, newest numbered %v, want %d", len(log), log[0].ErrorCount, sm.ErrorLogEntries)
	}
	for i := 1; i < len(log); i++ {
		if log[i].ErrorCount != log[i-1].ErrorCount-1 {
			t.Fatalf("error log entry %d numbered %d after %d", i, log[i].ErrorCount, log[i-1].ErrorCount)
		}
	}
}
