package nvmetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
)

// IntegrityOps is the number of random reads and writes the Integrity test
// issues in total (spread over every controller, namespace and queue pair).
// Under -short it is 20,000.
const IntegrityOps = 100_000

const (
	integrityQD        = 16
	integrityQueues    = 2    // queue pairs per controller
	integrityRegion    = 8192 // blocks per namespace each queue pair owns
	integrityMaxBlocks = 64
	blockMagic         = 0x6270666b // "bpfk"
)

func testIntegrity(t *testing.T, open func(t *testing.T) []nvme.Transport, total int) {
	e := setup(t, open, nvme.Options{})
	if total <= 0 {
		total = IntegrityOps
		if testing.Short() {
			total = 20_000
		}
	}
	var workers []*worker
	for ci, c := range e.ctrls {
		var nss []*nvme.Namespace
		for _, ns := range c.Namespaces() {
			if ns.CSI == nvme.CSINVM && ns.BlockSize != 0 {
				nss = append(nss, ns)
			}
		}
		if len(nss) == 0 {
			continue
		}
		nq := min(integrityQueues, c.IOQueues())
		for q := 0; q < nq; q++ {
			w := &worker{t: t, c: c, qp: newQP(t, c, 64), nss: nss, rng: rand.New(rand.NewPCG(uint64(ci), uint64(q)))}
			maxBS := 0
			for _, ns := range nss {
				span := min(ns.Blocks/uint64(nq), integrityRegion)
				w.base = append(w.base, uint64(q)*span)
				w.span = append(w.span, span)
				w.seq = append(w.seq, make([]uint32, span))
				maxBS = max(maxBS, int(ns.BlockSize))
			}
			w.maxBlocks = min(integrityMaxBlocks, 2*c.MaxTransfer()/maxBS)
			w.slotSize = w.maxBlocks * maxBS
			w.buf = allocDMA(t, c, integrityQD*w.slotSize)
			workers = append(workers, w)
		}
	}
	if len(workers) == 0 {
		t.Fatal("no NVM namespace")
	}
	per := (total + len(workers) - 1) / len(workers)
	var wg sync.WaitGroup
	for _, w := range workers {
		w.ops = per
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	wg.Wait()
	var done, verified int
	for _, w := range workers {
		if w.err != nil {
			t.Fatal(w.err)
		}
		done += w.completed
		verified += w.verified
	}
	if done < total {
		t.Fatalf("%d operations completed, want %d", done, total)
	}
	if verified == 0 {
		t.Fatal("no block was verified")
	}
	t.Logf("%d operations on %d queue pairs, %d blocks verified by checksum", done, len(workers), verified)
}

type iop struct {
	active bool
	write  bool
	ns     int
	lba    uint64 // relative to the worker's region
	n      uint32
	seq    uint32
}

type worker struct {
	t         *testing.T
	c         *nvme.Controller
	qp        *nvme.QueuePair
	nss       []*nvme.Namespace
	base      []uint64
	span      []uint64
	seq       [][]uint32
	buf       *nvme.DMA
	slotSize  int
	maxBlocks int
	rng       *rand.Rand
	ops       int
	inflight  [integrityQD]iop
	active    int
	nextSeq   uint32
	completed int
	verified  int
	err       error
}

func (w *worker) fail(format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("%s queue %d: %s", w.c.Name(), w.qp.ID(), fmt.Sprintf(format, args...))
	}
}

// fillBlock writes a self-describing block: header, payload derived from
// (nsid, lba, seq), CRC-32C of everything before the last 4 bytes.
func fillBlock(b []byte, nsid uint32, lba uint64, seq uint32) {
	binary.LittleEndian.PutUint32(b[0:], blockMagic)
	binary.LittleEndian.PutUint32(b[4:], nsid)
	binary.LittleEndian.PutUint64(b[8:], lba)
	binary.LittleEndian.PutUint32(b[16:], seq)
	pattern(b[20:len(b)-4], uint64(nsid)<<48^lba<<16^uint64(seq))
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (w *worker) overlaps(ns int, lba uint64, n uint32) bool {
	for i := range w.inflight {
		o := &w.inflight[i]
		if o.active && o.ns == ns && lba < o.lba+uint64(o.n) && o.lba < lba+uint64(n) {
			return true
		}
	}
	return false
}

func (w *worker) run() {
	submitted := 0
	lastProgress := time.Now()
	for (submitted < w.ops || w.active > 0) && w.err == nil {
		for tries := 0; w.active < integrityQD && submitted < w.ops && tries < 8; tries++ {
			slot := -1
			for i := range w.inflight {
				if !w.inflight[i].active {
					slot = i
					break
				}
			}
			nsi := w.rng.IntN(len(w.nss))
			ns := w.nss[nsi]
			bs := int(ns.BlockSize)
			n := uint32(1 + w.rng.IntN(8))
			if w.rng.IntN(16) == 0 {
				n = uint32(1 + w.rng.IntN(w.maxBlocks))
			}
			n = min(n, uint32(w.slotSize/bs), uint32(w.span[nsi]))
			lba := w.rng.Uint64N(w.span[nsi] - uint64(n) + 1)
			if w.overlaps(nsi, lba, n) {
				continue
			}
			o := iop{active: true, write: w.rng.IntN(2) == 0, ns: nsi, lba: lba, n: n}
			off := slot * w.slotSize
			var err error
			if o.write {
				w.nextSeq++
				o.seq = w.nextSeq
				for i := 0; i < int(n); i++ {
					fillBlock(w.buf.Buf[off+i*bs:off+(i+1)*bs], ns.ID, w.base[nsi]+lba+uint64(i), o.seq)
				}
				err = w.qp.Write(ns, w.base[nsi]+lba, n, w.buf, off, w, uint64(slot))
			} else {
				clear(w.buf.Buf[off : off+int(n)*bs])
				err = w.qp.Read(ns, w.base[nsi]+lba, n, w.buf, off, w, uint64(slot))
			}
			if err != nil {
				if errors.Is(err, nvme.ErrQueueFull) {
					break
				}
				w.fail("submit: %+v", err)
				return
			}
			w.inflight[slot] = o
			w.active++
			submitted++
		}
		if w.qp.Process(0) > 0 {
			lastProgress = time.Now()
		} else if time.Since(lastProgress) > drainTimeout {
			w.fail("no completion for %v with %d commands outstanding", drainTimeout, w.active)
			return
		} else {
			// Let a device that runs on its own goroutine have the CPU.
			runtime.Gosched()
		}
	}
}

// Complete verifies reads and records writes.
func (w *worker) Complete(tag, _ uint64, err error) {
	o := &w.inflight[tag]
	if !o.active {
		w.fail("completion for idle slot %d", tag)
		return
	}
	o.active = false
	w.active--
	w.completed++
	ns := w.nss[o.ns]
	if err != nil {
		w.fail("%s of %d blocks at %d on ns %d: %+v", map[bool]string{true: "write", false: "read"}[o.write], o.n, o.lba, ns.ID, err)
		return
	}
	seqs := w.seq[o.ns]
	if o.write {
		for i := uint64(0); i < uint64(o.n); i++ {
			seqs[o.lba+i] = o.seq
		}
		return
	}
	bs := int(ns.BlockSize)
	off := int(tag) * w.slotSize
	for i := 0; i < int(o.n); i++ {
		want := seqs[o.lba+uint64(i)]
		if want == 0 {
			continue // never written in this run
		}
		b := w.buf.Buf[off+i*bs : off+(i+1)*bs]
		lba := w.base[o.ns] + o.lba + uint64(i)
		if crc32.Checksum(b[:bs-4], castagnoli) != binary.LittleEndian.Uint32(b[bs-4:]) {
			w.fail("ns %d lba %d: checksum mismatch (want seq %d)", ns.ID, lba, want)
			return
		}
		if binary.LittleEndian.Uint32(b[0:]) != blockMagic || binary.LittleEndian.Uint32(b[4:]) != ns.ID ||
			binary.LittleEndian.Uint64(b[8:]) != lba || binary.LittleEndian.Uint32(b[16:]) != want {
			w.fail("ns %d lba %d: block holds ns %d lba %d seq %d, want seq %d", ns.ID, lba,
				binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint32(b[16:]), want)
			return
		}
		w.verified++
	}
}
