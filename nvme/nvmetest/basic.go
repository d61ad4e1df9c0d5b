package nvmetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/nvme"
)

// pattern fills b with bytes derived from seed.
func pattern(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 | 1
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	for ; i < len(b); i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

func testInitIdentify(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	for _, c := range e.ctrls {
		id := c.IdentifyData()
		if id == nil || id.Serial == "" || id.Model == "" {
			t.Fatalf("%s: identify controller lacks serial or model: %+v", c.Name(), id)
		}
		if c.Version() < 0x00010000 {
			t.Errorf("%s: VS %#x below NVMe 1.0", c.Name(), c.Version())
		}
		if id.NN < uint32(len(c.Namespaces())) {
			t.Errorf("%s: NN %d but %d active namespaces", c.Name(), id.NN, len(c.Namespaces()))
		}
		if c.IOQueues() < 1 {
			t.Errorf("%s: %d I/O queues granted", c.Name(), c.IOQueues())
		}
		if mt := c.MaxTransfer(); mt < nvme.PageSize || (id.MDTS != 0 && mt > nvme.PageSize<<id.MDTS) {
			t.Errorf("%s: MaxTransfer %d inconsistent with MDTS %d", c.Name(), mt, id.MDTS)
		}
		prev := uint32(0)
		for _, ns := range c.Namespaces() {
			if ns.ID <= prev {
				t.Errorf("%s: namespace IDs not ascending: %d after %d", c.Name(), ns.ID, prev)
			}
			prev = ns.ID
			if ns.CSI == nvme.CSINVM {
				if ns.Blocks == 0 || ns.BlockSize < 512 || ns.BlockSize&(ns.BlockSize-1) != 0 {
					t.Errorf("%s: namespace %d: %d blocks of %d bytes", c.Name(), ns.ID, ns.Blocks, ns.BlockSize)
				}
				if ns.Identify == nil || ns.Identify.NSZE != ns.Blocks {
					t.Errorf("%s: namespace %d: identify data missing or NSZE mismatch", c.Name(), ns.ID)
				}
			}
			if c.Namespace(ns.ID) != ns {
				t.Errorf("%s: Namespace(%d) lookup failed", c.Name(), ns.ID)
			}
		}
		// The active namespace list and Identify Namespace agree.
		list, err := c.Identify(nvme.CNSActiveNSList, 0, 0, 0)
		if err != nil {
			t.Fatalf("%s: active namespace list: %+v", c.Name(), err)
		}
		ids, err := nvme.ParseNSList(list)
		if err != nil || len(ids) < len(c.Namespaces()) {
			t.Fatalf("%s: active list %v (%v) vs %d namespaces", c.Name(), ids, err, len(c.Namespaces()))
		}
		nq, err := c.GetFeatures(nvme.FeatNumQueues, 0, 0)
		if err != nil {
			t.Fatalf("%s: get features number of queues: %+v", c.Name(), err)
		}
		if got := min(int(nq&0xffff), int(nq>>16)) + 1; got < c.IOQueues() {
			t.Errorf("%s: get features says %d queues, driver uses %d", c.Name(), got, c.IOQueues())
		}
		if _, err := c.SMART(); err != nil {
			t.Errorf("%s: SMART log: %+v", c.Name(), err)
		}
		if _, err := c.ErrorLog(); err != nil {
			t.Errorf("%s: error log: %+v", c.Name(), err)
		}
	}
}

func testCommands(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	for _, r := range e.nvmNamespaces() {
		c, ns := r.c, r.ns
		bs := int(ns.BlockSize)
		qp := newQP(t, c, 32)
		wbuf := allocDMA(t, c, 16*bs)
		rbuf := allocDMA(t, c, 16*bs)
		lba := ns.Blocks / 2
		pattern(wbuf.Buf, uint64(ns.ID)<<32|lba)
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, lba, 8, wbuf, 0, cb, 0) }); err != nil {
			t.Fatalf("%s ns %d: write: %+v", c.Name(), ns.ID, err)
		}
		read := func(l uint64, n uint32) []byte {
			clear(rbuf.Buf)
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, l, n, rbuf, 0, cb, 0) }); err != nil {
				t.Fatalf("%s ns %d: read %d+%d: %+v", c.Name(), ns.ID, l, n, err)
			}
			return rbuf.Buf[:int(n)*bs]
		}
		if got := read(lba, 8); !bytes.Equal(got, wbuf.Buf[:8*bs]) {
			t.Fatalf("%s ns %d: read back differs from write", c.Name(), ns.ID)
		}
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Flush(ns, cb, 0) }); err != nil {
			t.Errorf("%s ns %d: flush: %+v", c.Name(), ns.ID, err)
		}
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.WriteFUA(ns, lba+8, 1, wbuf, 8*bs, cb, 0) }); err != nil {
			t.Errorf("%s ns %d: FUA write: %+v", c.Name(), ns.ID, err)
		}
		want := append([]byte(nil), wbuf.Buf[:8*bs]...)
		if c.Supports(nvme.OpWriteZeroes) {
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.WriteZeroes(ns, lba+2, 2, false, cb, 0) }); err != nil {
				t.Fatalf("%s ns %d: write zeroes: %+v", c.Name(), ns.ID, err)
			}
			clear(want[2*bs : 4*bs])
			if got := read(lba, 8); !bytes.Equal(got, want) {
				t.Fatalf("%s ns %d: write zeroes did not zero exactly blocks 2-3", c.Name(), ns.ID)
			}
		} else if err := qp.WriteZeroes(ns, lba, 1, false, nil, 0); !errors.Is(err, nvme.ErrNotSupported) {
			t.Errorf("%s: write zeroes without ONCS support: %v, want ErrNotSupported", c.Name(), err)
		}
		if c.Supports(nvme.OpDSM) {
			err := do(t, qp, func(cb nvme.Completer) error {
				return qp.Deallocate(ns, []nvme.Range{{LBA: lba + 4, Blocks: 1}, {LBA: lba + 5, Blocks: 1}}, cb, 0)
			})
			if err != nil {
				t.Fatalf("%s ns %d: deallocate: %+v", c.Name(), ns.ID, err)
			}
			if ns.Identify.DLFEAT&7 == 1 {
				clear(want[4*bs : 6*bs])
				if got := read(lba, 8); !bytes.Equal(got, want) {
					t.Fatalf("%s ns %d: deallocated blocks do not read as zeroes (DLFEAT %#x)", c.Name(), ns.ID, ns.Identify.DLFEAT)
				}
			}
		}
		if c.Supports(nvme.OpCopy) {
			id := ns.Identify
			src := []nvme.Range{{LBA: lba, Blocks: 2}, {LBA: lba + 6, Blocks: 2}}
			if id.MSRC < 1 || id.MSSRL < 2 || id.MCL < 4 {
				src = src[:1]
				src[0].Blocks = 1
			}
			dst := lba + 100
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Copy(ns, dst, src, cb, 0) }); err != nil {
				t.Fatalf("%s ns %d: copy: %+v", c.Name(), ns.ID, err)
			}
			var exp []byte
			total := uint32(0)
			for _, s := range src {
				o := int(s.LBA-lba) * bs
				exp = append(exp, want[o:o+int(s.Blocks)*bs]...)
				total += s.Blocks
			}
			if got := read(dst, total); !bytes.Equal(got, exp) {
				t.Fatalf("%s ns %d: copy destination differs from sources", c.Name(), ns.ID)
			}
		} else if err := qp.Copy(ns, 0, []nvme.Range{{LBA: 1, Blocks: 1}}, nil, 0); !errors.Is(err, nvme.ErrNotSupported) {
			t.Errorf("%s: copy without ONCS support: %v, want ErrNotSupported", c.Name(), err)
		}
		// The last block of the namespace is reachable.
		last := ns.Blocks - 1
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, last, 1, wbuf, 0, cb, 0) }); err != nil {
			t.Fatalf("%s ns %d: write last block: %+v", c.Name(), ns.ID, err)
		}
		if got := read(last, 1); !bytes.Equal(got, wbuf.Buf[:bs]) {
			t.Fatalf("%s ns %d: last block read back differs", c.Name(), ns.ID)
		}
		// A raw command through Submit.
		cmd := nvme.SQE{OPC: nvme.OpRead, NSID: ns.ID, CDW10: uint32(lba), CDW11: uint32(lba >> 32), CDW12: 0}
		clear(rbuf.Buf)
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Submit(&cmd, rbuf, 0, bs, cb, 0) }); err != nil {
			t.Fatalf("%s ns %d: raw read: %+v", c.Name(), ns.ID, err)
		}
		if !bytes.Equal(rbuf.Buf[:bs], want[:bs]) {
			t.Fatalf("%s ns %d: raw read data differs", c.Name(), ns.ID)
		}
	}
}

func testErrors(t *testing.T, open func(t *testing.T) []nvme.Transport, noRangeCheck string) {
	e := setup(t, open, nvme.Options{})
	for _, r := range e.nvmNamespaces() {
		c, ns := r.c, r.ns
		bs := int(ns.BlockSize)
		qp := newQP(t, c, 16)
		buf := allocDMA(t, c, 4*bs)
		before, err := c.SMART()
		if err != nil {
			t.Fatalf("%s: SMART: %+v", c.Name(), err)
		}
		err = do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, ns.Blocks, 1, buf, 0, cb, 0) })
		var se nvme.StatusError
		switch {
		case noRangeCheck != "":
			if !errors.As(err, &se) {
				t.Errorf("%s ns %d: read past the end: %v, want an NVMe status", c.Name(), ns.ID, err)
			}
			t.Logf("%s ns %d: read past the end: %v (not LBA Out of Range: %s)", c.Name(), ns.ID, err, noRangeCheck)
		case !errors.Is(err, nvme.ErrLBAOutOfRange) || !errors.As(err, &se) || !strings.Contains(err.Error(), "LBA Out of Range"):
			t.Errorf("%s ns %d: read past the end: %v, want LBA Out of Range", c.Name(), ns.ID, err)
		}
		err = do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, ns.Blocks-1, 2, buf, 0, cb, 0) })
		switch {
		case noRangeCheck != "":
			if !errors.As(err, &se) {
				t.Errorf("%s ns %d: write across the end: %v, want an NVMe status", c.Name(), ns.ID, err)
			}
		case !errors.Is(err, nvme.ErrLBAOutOfRange):
			t.Errorf("%s ns %d: write across the end: %v, want LBA Out of Range", c.Name(), ns.ID, err)
		}
		cmd := nvme.SQE{OPC: nvme.OpRead, NSID: 0}
		err = do(t, qp, func(cb nvme.Completer) error { return qp.Submit(&cmd, buf, 0, bs, cb, 0) })
		if !errors.Is(err, nvme.ErrInvalidNamespace) && !errors.Is(err, nvme.ErrInvalidField) {
			t.Errorf("%s: read of NSID 0: %v, want Invalid Namespace or Format", c.Name(), err)
		}
		cmd = nvme.SQE{OPC: 0x7e, NSID: ns.ID}
		err = do(t, qp, func(cb nvme.Completer) error { return qp.Submit(&cmd, nil, 0, 0, cb, 0) })
		if !errors.Is(err, nvme.ErrInvalidOpcode) {
			t.Errorf("%s: opcode 0x7e: %v, want Invalid Command Opcode", c.Name(), err)
		}
		// The queue keeps working after errors.
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 0, 1, buf, 0, cb, 0) }); err != nil {
			t.Errorf("%s: read after errors: %+v", c.Name(), err)
		}
		after, err := c.SMART()
		if err != nil {
			t.Fatalf("%s: SMART: %+v", c.Name(), err)
		}
		if after.HostReads <= before.HostReads {
			t.Errorf("%s: SMART host reads did not grow: %d -> %d", c.Name(), before.HostReads, after.HostReads)
		}
		// Host-side validation: errors, never panics, nothing submitted.
		for _, bad := range []func() error{
			func() error { return qp.Read(ns, 0, 0, buf, 0, nil, 0) },
			func() error { return qp.Read(ns, 0, 1, buf, 2, nil, 0) },
			func() error { return qp.Read(ns, 0, 5, buf, 0, nil, 0) },
			func() error { return qp.Read(ns, 0, 1, nil, 0, nil, 0) },
			func() error { return qp.Read(nil, 0, 1, buf, 0, nil, 0) },
			func() error { return qp.Read(ns, 0, 1, buf, -4, nil, 0) },
		} {
			if err := bad(); err == nil {
				t.Errorf("%s: invalid request accepted", c.Name())
			}
		}
		if n := qp.Outstanding(); n != 0 {
			t.Errorf("%s: %d commands outstanding after rejected submissions", c.Name(), n)
		}
	}
	for _, c := range e.ctrls {
		if _, err := c.Identify(0xff, 0, 0, 0); !errors.Is(err, nvme.ErrInvalidField) {
			t.Errorf("%s: identify CNS 0xff: %v, want Invalid Field in Command", c.Name(), err)
		}
		if _, err := c.GetLogPage(0xbe, 0, 0, 512); !errors.Is(err, nvme.ErrInvalidLogPage) && !errors.Is(err, nvme.ErrInvalidField) {
			t.Errorf("%s: log page 0xbe: %v, want Invalid Log Page", c.Name(), err)
		}
		if _, err := c.ErrorLog(); err != nil {
			t.Errorf("%s: error log: %+v", c.Name(), err)
		}
	}
}

func testPRP(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	seen := map[*nvme.Controller]bool{}
	for _, r := range e.nvmNamespaces() {
		c, ns := r.c, r.ns
		if seen[c] {
			continue // one namespace per controller is enough
		}
		seen[c] = true
		bs := int(ns.BlockSize)
		mt := c.MaxTransfer()
		size := 2*mt + 2*nvme.PageSize
		wbuf := allocDMA(t, c, size)
		rbuf := allocDMA(t, c, size)
		qp := newQP(t, c, 64)
		sizes := []int{bs, nvme.PageSize, nvme.PageSize + bs, 2 * nvme.PageSize, 3 * nvme.PageSize,
			mt - bs, mt, mt + bs, 2 * mt}
		offsets := []int{0, 4, 512, nvme.PageSize - 4, nvme.PageSize - bs}
		lba := uint64(0)
		for _, n := range sizes {
			n = n / bs * bs
			blocks := uint32(n / bs)
			if n == 0 || uint64(blocks) > ns.Blocks {
				continue
			}
			for i, off := range offsets {
				roff := offsets[(i+1)%len(offsets)]
				if off+n > size || roff+n > size {
					continue
				}
				if lba+uint64(blocks) > ns.Blocks {
					lba = 0
				}
				pattern(wbuf.Buf[off:off+n], uint64(n)<<16|uint64(off))
				if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, lba, blocks, wbuf, off, cb, 0) }); err != nil {
					t.Fatalf("%s: write %d bytes from offset %d: %+v", c.Name(), n, off, err)
				}
				clear(rbuf.Buf)
				if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, lba, blocks, rbuf, roff, cb, 0) }); err != nil {
					t.Fatalf("%s: read %d bytes to offset %d: %+v", c.Name(), n, roff, err)
				}
				if !bytes.Equal(rbuf.Buf[roff:roff+n], wbuf.Buf[off:off+n]) {
					t.Fatalf("%s: %d bytes written from offset %d read back to offset %d differ", c.Name(), n, off, roff)
				}
				if roff > 0 && !allZero(rbuf.Buf[:roff]) || !allZero(rbuf.Buf[roff+n:]) {
					t.Fatalf("%s: read of %d bytes to offset %d wrote outside its buffer", c.Name(), n, roff)
				}
				lba += uint64(blocks)
			}
		}
		if qp.Outstanding() != 0 {
			t.Errorf("%s: %d commands outstanding", c.Name(), qp.Outstanding())
		}
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func testQueueFull(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	r := e.nvmNamespaces()[0]
	c, ns := r.c, r.ns
	qp := newQP(t, c, 8)
	buf := allocDMA(t, c, 8*int(ns.BlockSize))
	rec := newRecorder()
	n := 0
	var err error
	for ; n < 100; n++ {
		if err = qp.Read(ns, uint64(n), 1, buf, n%8*int(ns.BlockSize), rec, uint64(n)); err != nil {
			break
		}
	}
	if !errors.Is(err, nvme.ErrQueueFull) || n != qp.Depth()-1 {
		t.Fatalf("accepted %d of depth %d before %v, want %d then ErrQueueFull", n, qp.Depth(), err, qp.Depth()-1)
	}
	if err := qp.Drain(drainTimeout); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if rec.count[uint64(i)] != 1 || rec.err[uint64(i)] != nil {
			t.Fatalf("command %d: completed %d times, err %v", i, rec.count[uint64(i)], rec.err[uint64(i)])
		}
	}
	// A request that needs more commands than there are free slots is
	// refused as a whole.
	qp4 := newQP(t, c, 4)
	blocks := uint64(4*c.MaxTransfer()) / uint64(ns.BlockSize)
	if blocks <= ns.Blocks && blocks <= 1<<32-1 {
		big := allocDMA(t, c, 4*c.MaxTransfer())
		if err := qp4.Read(ns, 0, uint32(blocks), big, 0, rec, 1000); !errors.Is(err, nvme.ErrQueueFull) {
			t.Errorf("read needing 4 commands on a 3-slot queue: %v, want ErrQueueFull", err)
		}
		if qp4.Outstanding() != 0 {
			t.Errorf("%d slots left in use after a refused request", qp4.Outstanding())
		}
	}
	if err := qp.Read(ns, 0, 1, buf, 0, rec, 2000); err != nil {
		t.Fatalf("submit after drain: %+v", err)
	}
	if err := qp.Drain(drainTimeout); err != nil || rec.err[2000] != nil {
		t.Fatalf("after drain: %v %v", err, rec.err[2000])
	}
}

func testReset(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	r := e.nvmNamespaces()[0]
	c, ns := r.c, r.ns
	bs := int(ns.BlockSize)
	qp := newQP(t, c, 32)
	qp2 := newQP(t, c, 32)
	buf := allocDMA(t, c, 32*bs)
	pattern(buf.Buf[:bs], 77)
	if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, 5, 1, buf, 0, cb, 0) }); err != nil {
		t.Fatalf("write: %+v", err)
	}
	want := append([]byte(nil), buf.Buf[:bs]...)
	rec := newRecorder()
	for i := 0; i < 16; i++ {
		if err := qp.Read(ns, uint64(i), 1, buf, (i+1)*bs, rec, uint64(i)); err != nil {
			t.Fatalf("read %d: %+v", i, err)
		}
		if err := qp2.Read(ns, uint64(i), 1, buf, (i+1)*bs, rec, uint64(100+i)); err != nil {
			t.Fatalf("read %d: %+v", i, err)
		}
	}
	qp.Ring()
	if err := c.Reset(); err != nil {
		t.Fatalf("reset: %+v", err)
	}
	if c.Resets() != 1 {
		t.Errorf("Resets() = %d, want 1", c.Resets())
	}
	for _, q := range []*nvme.QueuePair{qp, qp2} {
		if err := q.Drain(drainTimeout); err != nil {
			t.Fatal(err)
		}
	}
	for _, base := range []uint64{0, 100} {
		for i := uint64(0); i < 16; i++ {
			if n := rec.count[base+i]; n != 1 {
				t.Fatalf("command %d completed %d times across the reset, want once", base+i, n)
			}
			if err := rec.err[base+i]; err != nil && !errors.Is(err, nvme.ErrReset) {
				t.Errorf("command %d: %v, want nil or ErrReset", base+i, err)
			}
		}
	}
	// Both queue pairs were recreated and work.
	for _, q := range []*nvme.QueuePair{qp, qp2} {
		clear(buf.Buf)
		if err := do(t, q, func(cb nvme.Completer) error { return q.Read(ns, 5, 1, buf, 0, cb, 0) }); err != nil {
			t.Fatalf("queue %d after reset: %+v", q.ID(), err)
		}
		if !bytes.Equal(buf.Buf[:bs], want) {
			t.Fatalf("queue %d after reset: data written before the reset differs", q.ID())
		}
		if q.Stats().Resets != 1 {
			t.Errorf("queue %d: Stats().Resets = %d, want 1", q.ID(), q.Stats().Resets)
		}
	}
	if _, err := c.Identify(nvme.CNSController, 0, 0, 0); err != nil {
		t.Errorf("admin after reset: %+v", err)
	}
	q3 := newQP(t, c, 8)
	if err := do(t, q3, func(cb nvme.Completer) error { return q3.Read(ns, 5, 1, buf, 0, cb, 0) }); err != nil {
		t.Fatalf("new queue after reset: %+v", err)
	}
}

func testClose(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	r := e.nvmNamespaces()[0]
	c, ns := r.c, r.ns
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	buf := allocDMA(t, c, 8*int(ns.BlockSize))
	rec := newRecorder()
	for i := 0; i < 8; i++ {
		if err := qp.Read(ns, uint64(i), 1, buf, i*int(ns.BlockSize), rec, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	qp.Ring()
	if err := qp.Close(); err != nil {
		t.Errorf("close: %+v", err)
	}
	for i := uint64(0); i < 8; i++ {
		if rec.count[i] != 1 {
			t.Fatalf("command %d completed %d times on close", i, rec.count[i])
		}
		if err := rec.err[i]; err != nil && !errors.Is(err, nvme.ErrClosed) {
			t.Errorf("command %d: %v, want nil or ErrClosed", i, err)
		}
	}
	if err := qp.Read(ns, 0, 1, buf, 0, rec, 99); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("read on a closed queue pair: %v, want ErrClosed", err)
	}
	if n := qp.Process(0); n != 0 {
		t.Errorf("Process on a closed queue pair reaped %d", n)
	}
}

func testQueuePairs(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{MaxIOQueues: 8})
	c := e.ctrls[0]
	var qps []*nvme.QueuePair
	for {
		qp, err := c.NewQueuePair(4)
		if err != nil {
			if len(qps) != c.IOQueues() {
				t.Fatalf("created %d queue pairs of %d granted before: %v", len(qps), c.IOQueues(), err)
			}
			break
		}
		qps = append(qps, qp)
		if len(qps) > 1024 {
			t.Fatal("no limit on queue pairs")
		}
	}
	if c.IOQueues() > 8 {
		t.Errorf("controller granted %d queue pairs, asked for 8", c.IOQueues())
	}
	ns := e.nvmNamespaces()[0].ns
	buf := allocDMA(t, c, int(ns.BlockSize))
	for _, qp := range qps {
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 0, 1, buf, 0, cb, 0) }); err != nil {
			t.Fatalf("queue %d: %+v", qp.ID(), err)
		}
	}
	if err := qps[0].Close(); err != nil {
		t.Fatalf("close: %+v", err)
	}
	qp, err := c.NewQueuePair(4)
	if err != nil {
		t.Fatalf("queue pair after closing one: %+v", err)
	}
	if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 0, 1, buf, 0, cb, 0) }); err != nil {
		t.Fatalf("reused queue %d: %+v", qp.ID(), err)
	}
	for _, q := range append(qps[1:], qp) {
		q.Close()
	}
}

func testCMB(t *testing.T, open func(t *testing.T) []nvme.Transport) {
	e := setup(t, open, nvme.Options{})
	tested := false
	for _, c := range e.ctrls {
		if _, ok := c.CMBInfo(); !ok {
			continue
		}
		cmb, info, err := c.MapCMB()
		if errors.Is(err, nvme.ErrNotSupported) {
			continue
		}
		if err != nil {
			t.Fatalf("%s: MapCMB: %+v", c.Name(), err)
		}
		var ns *nvme.Namespace
		for _, n := range c.Namespaces() {
			if n.CSI == nvme.CSINVM && n.BlockSize != 0 {
				ns = n
				break
			}
		}
		if ns == nil {
			continue
		}
		tested = true
		bs := int(ns.BlockSize)
		n := min(16*bs, len(cmb.Buf)/2) / bs * bs
		host := allocDMA(t, c, n)
		qp := newQP(t, c, 8)
		if info.WriteData() {
			pattern(cmb.Buf[:n], 4242)
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, 10, uint32(n/bs), cmb, 0, cb, 0) }); err != nil {
				t.Fatalf("%s: write from CMB: %+v", c.Name(), err)
			}
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 10, uint32(n/bs), host, 0, cb, 0) }); err != nil {
				t.Fatalf("%s: read: %+v", c.Name(), err)
			}
			if !bytes.Equal(host.Buf[:n], cmb.Buf[:n]) {
				t.Fatalf("%s: data written from the CMB differs", c.Name())
			}
		}
		if info.ReadData() {
			pattern(host.Buf[:n], 4343)
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Write(ns, 10, uint32(n/bs), host, 0, cb, 0) }); err != nil {
				t.Fatalf("%s: write: %+v", c.Name(), err)
			}
			if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 10, uint32(n/bs), cmb, n, cb, 0) }); err != nil {
				t.Fatalf("%s: read into CMB: %+v", c.Name(), err)
			}
			if !bytes.Equal(host.Buf[:n], cmb.Buf[n:2*n]) {
				t.Fatalf("%s: data read into the CMB differs", c.Name())
			}
		}
		// A reset keeps the CMB usable.
		if err := c.Reset(); err != nil {
			t.Fatalf("%s: reset: %+v", c.Name(), err)
		}
		if err := do(t, qp, func(cb nvme.Completer) error { return qp.Read(ns, 10, 1, cmb, 0, cb, 0) }); err != nil && info.ReadData() {
			t.Fatalf("%s: read into CMB after reset: %+v", c.Name(), err)
		}
	}
	if !tested {
		t.Skip("no controller with a mappable CMB")
	}
}
