package vfio_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/vfio"
)

func TestDeviceOpen(t *testing.T) {
	for _, d := range openAll(t, false) {
		r, err := d.Region(0)
		if err != nil || !r.Mappable() || r.Size < 0x2000 {
			t.Fatalf("%s BAR0 %+v %v", d.Name(), r, err)
		}
		class, err := d.Config32(0x08)
		if err != nil || class>>8 != pci.ClassNVMe {
			t.Fatalf("%s class register %#x %v", d.Name(), class, err)
		}
		cmd, err := d.Config16(0x04)
		if err != nil || cmd&0x6 != 0x6 {
			t.Fatalf("%s command register %#x %v: memory decoding and bus mastering must be on", d.Name(), cmd, err)
		}
		c := d.Container()
		info := c.IOMMUInfo()
		if typ := c.IOMMUType(); typ != 3 && typ != 1 {
			t.Fatalf("IOMMU type %d", typ)
		}
		if info.PageSizes&4096 == 0 || len(info.Ranges) == 0 {
			t.Fatalf("IOMMU info %+v", info)
		}
		t.Logf("%s: IOMMU type %d, page sizes %#x, IOVA ranges %#x, DMA mappings left %d, command %#x",
			d.Name(), c.IOMMUType(), info.PageSizes, info.Ranges, info.DMAAvail, cmd)
		// With hugepages reserved, DMA memory comes from them.
		buf, err := d.AllocDMA(4096)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := os.ReadFile("/proc/sys/vm/nr_hugepages"); strings.TrimSpace(string(n)) != "0" && d.HugePageChunks() == 0 {
			t.Fatalf("%s: %s hugepages reserved but DMA memory uses 4 KiB pages", d.Name(), strings.TrimSpace(string(n)))
		}
		d.FreeDMA(buf)
		// The group is taken: a second open must fail with a clear error.
		if d2, err := vfio.Open(d.Name(), quietOptions(t, nil)); err == nil {
			d2.Close()
			t.Fatalf("%s opened twice", d.Name())
		} else {
			t.Logf("second open: %v", err)
		}
	}
}

func TestDeviceOpenType1(t *testing.T) {
	addrs := testDevices(t)
	d, err := vfio.Open(addrs[0], &vfio.Options{IOMMUType: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Container().IOMMUType() != 1 {
		t.Fatalf("IOMMU type %d, want 1", d.Container().IOMMUType())
	}
	if v := d.Read32(nvme.RegVS); v < 0x10000 {
		t.Fatalf("VS %#x", v)
	}
}

func TestDeviceOpenErrors(t *testing.T) {
	addrs := testDevices(t)
	for in, want := range map[string]string{
		"pci:0000:01:00":   "bad address",
		"pci:00ff:1f:1f.7": "no PCI function",
	} {
		if _, err := vfio.Open(in, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error with %q", in, err, want)
		}
	}
	// A function that is not bound to vfio-pci is named with its driver.
	fs, _ := (&pci.Host{}).Functions()
	for _, f := range fs {
		if f.Driver != "" && f.Driver != pci.DriverVFIO {
			_, err := vfio.Open(f.Addr.String(), nil)
			if err == nil || !strings.Contains(err.Error(), "bound to "+f.Driver) {
				t.Errorf("Open(%s) bound to %s: %v", f.Addr, f.Driver, err)
			}
			break
		}
	}
	_ = addrs
}

func TestDeviceRegisters(t *testing.T) {
	for _, d := range openAll(t, false) {
		cap64 := d.Read64(nvme.RegCAP)
		lo, hi := d.Read32(nvme.RegCAP), d.Read32(nvme.RegCAP+4)
		if cap64 != uint64(lo)|uint64(hi)<<32 || cap64 == 0 || cap64 == ^uint64(0) {
			t.Fatalf("%s CAP %#x vs halves %#x %#x", d.Name(), cap64, hi, lo)
		}
		c := nvme.CAP(cap64)
		if c.MQES() == 0 || c.CSS()&nvme.CSSNVM == 0 {
			t.Fatalf("%s CAP %#x: MQES %d CSS %#x", d.Name(), cap64, c.MQES(), c.CSS())
		}
		if vs := d.Read32(nvme.RegVS); vs < 0x10000 || vs>>16 > 9 {
			t.Fatalf("%s VS %#x", d.Name(), vs)
		}
		// With the controller disabled, ASQ is a plain 64-bit register: a
		// 64-bit store must land whole and read back at both widths.
		d.Write32(nvme.RegCC, 0)
		if err := waitReady(d, false); err != nil {
			t.Fatal(err)
		}
		const v = 0x0000_1234_5678_9000
		d.Write64(nvme.RegASQ, v)
		if got := d.Read64(nvme.RegASQ); got != v {
			t.Fatalf("%s ASQ reads %#x after a 64-bit store of %#x", d.Name(), got, v)
		}
		if lo, hi := d.Read32(nvme.RegASQ), d.Read32(nvme.RegASQ+4); lo != 0x56789000 || hi != 0x1234 {
			t.Fatalf("%s ASQ halves %#x %#x", d.Name(), hi, lo)
		}
		d.Write64(nvme.RegASQ, 0)
		// Outside BAR0 and misaligned: all ones, no crash.
		if d.Read32(1<<30) != ^uint32(0) || d.Read32(2) != ^uint32(0) || d.Read64(4) != ^uint64(0) {
			t.Fatal("bad offsets do not read as all ones")
		}
		d.Write32(1<<30, 0)
		t.Logf("%s CAP %#x (MQES %d, TO %v, DSTRD %d, CMBS %v) VS %#x", d.Name(), cap64, c.MQES(), c.TO(), c.DSTRD(), c.CMBS(), d.Read32(nvme.RegVS))
	}
}

// TestDeviceAdminIdentify brings a controller up by hand over the transport
// (admin queues, CC.EN, Identify) without the driver.
func TestDeviceAdminIdentify(t *testing.T) {
	for _, d := range openAll(t, false) {
		d.Write32(nvme.RegCC, 0)
		if err := waitReady(d, false); err != nil {
			t.Fatal(err)
		}
		const depth = 16
		q, err := newRawQueue(d, 0, depth)
		if err != nil {
			t.Fatal(err)
		}
		d.Write32(nvme.RegAQA, (depth-1)<<16|(depth-1))
		d.Write64(nvme.RegASQ, q.sq.IOVA)
		d.Write64(nvme.RegACQ, q.cq.IOVA)
		d.Write32(nvme.RegINTMS, ^uint32(0))
		start := time.Now()
		d.Write32(nvme.RegCC, 4<<nvme.CCIOCQESShift|6<<nvme.CCIOSQESShift|nvme.CCEnable)
		if err := waitReady(d, true); err != nil {
			t.Fatal(err)
		}
		enable := time.Since(start)
		buf, err := d.AllocDMA(nvme.IdentifyDataSize)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		if _, err := q.run(nvme.SQE{OPC: nvme.AdminIdentify, PRP1: buf.IOVA, CDW10: nvme.CNSController}); err != nil {
			t.Fatalf("%s Identify: %v", d.Name(), err)
		}
		rt := time.Since(start)
		id, err := nvme.ParseIdentifyController(buf.Buf)
		if err != nil {
			t.Fatal(err)
		}
		if id.VID == 0 || id.VID == 0xffff || id.Serial == "" || id.NN == 0 {
			t.Fatalf("%s identify: VID %#x SN %q NN %d", d.Name(), id.VID, id.Serial, id.NN)
		}
		// The active namespace list comes through the same queue.
		if _, err := q.run(nvme.SQE{OPC: nvme.AdminIdentify, PRP1: buf.IOVA, CDW10: nvme.CNSActiveNSList}); err != nil {
			t.Fatal(err)
		}
		nsids, err := nvme.ParseNSList(buf.Buf)
		if err != nil || len(nsids) == 0 {
			t.Fatalf("%s namespaces %v %v", d.Name(), nsids, err)
		}
		t.Logf("%s: CC.EN->RDY %v, Identify round trip %v: VID %#x SN %q MN %q FR %q ONCS %#x MDTS %d namespaces %v",
			d.Name(), enable, rt, id.VID, id.Serial, id.Model, id.Firmware, id.ONCS, id.MDTS, nsids)
		d.Write32(nvme.RegCC, 0)
		if err := waitReady(d, false); err != nil {
			t.Fatal(err)
		}
		d.FreeDMA(buf)
		q.free()
	}
}

func newController(t *testing.T, d *vfio.Device) *nvme.Controller {
	t.Helper()
	c, err := nvme.NewController(d, nvme.Options{})
	if err != nil {
		t.Fatalf("%s: NewController: %v", d.Name(), err)
	}
	return c
}

// TestDriverOverVFIO initialises every controller with the driver and checks
// what Identify reported.
func TestDriverOverVFIO(t *testing.T) {
	multi := false
	for _, d := range openAll(t, false) {
		c := newController(t, d)
		id := c.IdentifyData()
		if id.VID == 0 || id.Serial == "" || len(c.Namespaces()) == 0 || c.IOQueues() == 0 {
			t.Fatalf("%s: VID %#x SN %q, %d namespaces, %d I/O queues", d.Name(), id.VID, id.Serial, len(c.Namespaces()), c.IOQueues())
		}
		for _, ns := range c.Namespaces() {
			if ns.Blocks == 0 || ns.BlockSize < 512 {
				t.Fatalf("%s ns %d: %d blocks of %d bytes", d.Name(), ns.ID, ns.Blocks, ns.BlockSize)
			}
			t.Logf("%s ns %d: %d blocks of %d bytes, MSSRL %d MCL %d", d.Name(), ns.ID, ns.Blocks, ns.BlockSize,
				ns.Identify.MSSRL, ns.Identify.MCL)
		}
		multi = multi || len(c.Namespaces()) > 1
		t.Logf("%s: %s %s FR %s, version %#x, %d I/O queues, max transfer %d, ONCS %#x", d.Name(), id.Model, id.Serial,
			id.Firmware, c.Version(), c.IOQueues(), c.MaxTransfer(), c.ONCS())
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !multi {
		t.Skip("no controller has two namespaces (test/qemu gives one two, and requires this test to pass)")
	}
}

// TestDeviceIO runs every I/O command the controllers support and checks the
// data.
func TestDeviceIO(t *testing.T) {
	for _, d := range openAll(t, false) {
		t.Run(strings.TrimPrefix(d.Name(), "pci:"), func(t *testing.T) { testIO(t, d) })
	}
}

func testIO(t *testing.T, d *vfio.Device) {
	c := newController(t, d)
	defer c.Close()
	qp, err := c.NewQueuePair(64)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	bs := int(ns.BlockSize)
	big := max(c.MaxTransfer()*2+3*bs, 1<<20) // split over several commands, PRP lists
	wbuf, err := d.AllocDMA(big)
	if err != nil {
		t.Fatal(err)
	}
	rbuf, err := d.AllocDMA(big)
	if err != nil {
		t.Fatal(err)
	}
	blocks := uint32(big / bs)
	n := int(blocks) * bs
	check := func(what string, lba uint64, want []byte) {
		t.Helper()
		clear(rbuf.Buf)
		if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, lba, uint32(len(want)/bs), rbuf, 0, cb, 0) }); err != nil {
			t.Fatalf("%s: read back: %v", what, err)
		}
		if i := firstDiff(rbuf.Buf[:len(want)], want); i >= 0 {
			t.Fatalf("%s: data differs at byte %d (LBA %d)", what, i, lba+uint64(i/bs))
		}
	}

	// Write + Read, one block and a large multi-command transfer.
	fill(wbuf.Buf, 1)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 10, 1, wbuf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	check("write 1 block", 10, wbuf.Buf[:bs])
	fill(wbuf.Buf, 2)
	start := time.Now()
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 100, blocks, wbuf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("write of %d KiB in %v", n>>10, time.Since(start))
	check("large write", 100, wbuf.Buf[:n])
	// Unaligned offset in the buffer (PRP1 with an offset).
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 5000, 3, wbuf, 512, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	check("write at buffer offset 512", 5000, wbuf.Buf[512:512+3*bs])

	// FUA and Flush.
	fill(wbuf.Buf, 3)
	if err := do(qp, func(cb nvme.Completer) error { return qp.WriteFUA(ns, 20, 4, wbuf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	check("write FUA", 20, wbuf.Buf[:4*bs])
	if err := do(qp, func(cb nvme.Completer) error { return qp.Flush(ns, cb, 0) }); err != nil {
		t.Fatal(err)
	}

	// Write Zeroes.
	if c.Supports(nvme.OpWriteZeroes) {
		if err := do(qp, func(cb nvme.Completer) error { return qp.WriteZeroes(ns, 101, 2, false, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		check("write zeroes", 101, make([]byte, 2*bs))
		orig := make([]byte, n)
		fill(orig, 2) // what the large write put at LBA 100...
		check("block after write zeroes", 103, orig[3*bs:4*bs])
	}

	// Dataset Management (deallocate); QEMU reads deallocated blocks as zeroes
	// when DLFEAT says so, so only the status is checked in general.
	if c.Supports(nvme.OpDSM) {
		if err := do(qp, func(cb nvme.Completer) error {
			return qp.Deallocate(ns, []nvme.Range{{LBA: 200, Blocks: 8}, {LBA: 300, Blocks: 1}}, cb, 0)
		}); err != nil {
			t.Fatal(err)
		}
		if ns.Identify.DLFEAT&7 == 1 {
			check("deallocate", 200, make([]byte, 8*bs))
		}
	}

	// Copy inside the namespace.
	if c.Supports(nvme.OpCopy) {
		fill(wbuf.Buf, 4)
		if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 400, 8, wbuf, 0, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		if err := do(qp, func(cb nvme.Completer) error {
			return qp.Copy(ns, 1000, []nvme.Range{{LBA: 404, Blocks: 4}, {LBA: 400, Blocks: 4}}, cb, 0)
		}); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), wbuf.Buf[4*bs:8*bs]...), wbuf.Buf[:4*bs]...)
		check("copy", 1000, want)
	} else {
		t.Errorf("%s does not advertise Copy", d.Name())
	}

	// Compare: equal data succeeds, different data fails with Compare Failure.
	if c.Supports(nvme.OpCompare) {
		fill(wbuf.Buf, 5)
		if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 600, 2, wbuf, 0, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		cmp := func() error {
			return do(qp, func(cb nvme.Completer) error {
				return qp.Submit(&nvme.SQE{OPC: nvme.OpCompare, NSID: ns.ID, CDW10: 600, CDW12: 1}, wbuf, 0, 2*bs, cb, 0)
			})
		}
		if err := cmp(); err != nil {
			t.Fatalf("compare of equal data: %v", err)
		}
		wbuf.Buf[bs+7] ^= 0xff
		if err := cmp(); !errors.Is(err, nvme.ErrCompareFailure) {
			t.Fatalf("compare of different data: %v, want %v", err, nvme.ErrCompareFailure)
		}
	}

	// Out of range: a typed status, and the queue keeps working.
	err = do(qp, func(cb nvme.Completer) error { return qp.Read(ns, ns.Blocks-1, 2, rbuf, 0, cb, 0) })
	if !errors.Is(err, nvme.ErrLBAOutOfRange) {
		t.Fatalf("read past the end: %v, want %v", err, nvme.ErrLBAOutOfRange)
	}

	// Namespaces are separate: the same LBA holds different data.
	if len(c.Namespaces()) > 1 {
		ns2 := c.Namespaces()[1]
		fill(wbuf.Buf, 6)
		if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns2, 10, 1, wbuf, 0, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), wbuf.Buf[:bs]...)
		fill(wbuf.Buf, 1)
		check("ns 1 after writing ns 2", 10, wbuf.Buf[:bs])
		clear(rbuf.Buf)
		if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns2, 10, 1, rbuf, 0, cb, 0) }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rbuf.Buf[:bs], want) {
			t.Fatal("namespace 2 lost its data")
		}
	}

	// Many commands in flight at once.
	const inflight = 32
	fill(wbuf.Buf, 7)
	ws := make([]waiter, inflight)
	for i := range ws {
		if err := qp.Write(ns, 2000+uint64(i), 1, wbuf, i*bs, &ws[i], 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := qp.Drain(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range ws {
		if !ws[i].done || ws[i].err != nil {
			t.Fatalf("write %d: done %v err %v", i, ws[i].done, ws[i].err)
		}
	}
	check("32 writes in flight", 2000, wbuf.Buf[:inflight*bs])
	st := qp.Stats()
	if st.BadCompletions != 0 || st.Timeouts != 0 {
		t.Fatalf("queue stats %+v", st)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestDeviceCMBDataBuffer uses a controller's CMB as the data buffer of its
// own reads and writes.
func TestDeviceCMBDataBuffer(t *testing.T) {
	d, cmb, _ := cmbDevice(t, openAll(t, false))
	f := cmb.Features()
	bar, off := cmb.BAR()
	t.Logf("%s CMB: %d MiB in BAR%d+%#x at bus address %#x, features %+v", d.Name(), cmb.Size()>>20, bar, off, cmb.BusAddr(), f)
	if !f.ReadData || !f.WriteData {
		t.Fatalf("CMB takes no data: %+v", f)
	}
	// CPU access through the mapping.
	pat := make([]byte, 4096+13)
	fill(pat, 9)
	if _, err := cmb.WriteAt(pat, int64(cmb.Size())-int64(len(pat))); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(pat))
	if _, err := cmb.ReadAt(got, int64(cmb.Size())-int64(len(pat))); err != nil || !bytes.Equal(got, pat) {
		t.Fatalf("CPU read back of the CMB: %v", err)
	}
	if _, err := cmb.WriteAt(pat, int64(cmb.Size())-10); err == nil {
		t.Fatal("write across the CMB's end accepted")
	}

	c := newController(t, d)
	defer c.Close()
	// The driver maps the same CMB through MapBAR and agrees on its address.
	dcmb, info, err := c.MapCMB()
	if err != nil {
		t.Fatal(err)
	}
	if dcmb.IOVA != cmb.BusAddr() || uint64(len(dcmb.Buf)) != cmb.Size() || info.Size != cmb.Size() {
		t.Fatalf("driver CMB at %#x (%d bytes), transport says %#x (%d bytes)", dcmb.IOVA, len(dcmb.Buf), cmb.BusAddr(), cmb.Size())
	}
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	bs := int(ns.BlockSize)
	const blocks = 16
	data := make([]byte, blocks*bs)
	fill(data, 10)
	if _, err := cmb.WriteAt(data, 0x10000); err != nil {
		t.Fatal(err)
	}
	// Write sourcing the CMB, read back into host memory.
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 700, blocks, dcmb, 0x10000, cb, 0) }); err != nil {
		t.Fatalf("write from the CMB: %v", err)
	}
	host, err := d.AllocDMA(len(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 700, blocks, host, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(host.Buf, data); i >= 0 {
		t.Fatalf("data written from the CMB differs at byte %d", i)
	}
	// Read into the CMB, check through the CPU mapping.
	zero := make([]byte, len(data))
	cmb.WriteAt(zero, 0x80000)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 700, blocks, dcmb, 0x80000, cb, 0) }); err != nil {
		t.Fatalf("read into the CMB: %v", err)
	}
	back := make([]byte, len(data))
	cmb.ReadAt(back, 0x80000)
	if i := firstDiff(back, data); i >= 0 {
		t.Fatalf("data read into the CMB differs at byte %d", i)
	}
}

// TestDevicePeerToPeer lets one controller move data into and out of
// another controller's CMB through the IOMMU, with the devices in one
// container and in separate ones.
func TestDevicePeerToPeer(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "shared-container", false: "separate-containers"}[shared], func(t *testing.T) {
			owner, cmb, others := cmbDevice(t, openAll(t, shared))
			if len(others) == 0 {
				t.Skip("needs a second controller")
			}
			peer := others[0]
			view, err := peer.MapPeer(cmb)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s reaches the CMB of %s at IOVA %#x (owner's bus address %#x)", peer.Name(), owner.Name(), view.IOVA, cmb.BusAddr())
			if shared && view.IOVA != cmb.BusAddr() {
				t.Fatalf("same container, different address: %#x vs %#x", view.IOVA, cmb.BusAddr())
			}
			c := newController(t, peer)
			defer c.Close()
			qp, err := c.NewQueuePair(16)
			if err != nil {
				t.Fatal(err)
			}
			defer qp.Close()
			ns := c.Namespaces()[0]
			bs := int(ns.BlockSize)
			data := make([]byte, 8*bs)
			fill(data, 11)
			if shared {
				fill(data, 12)
			}
			cmb.WriteAt(data, 0x200000)
			// The peer's Write reads its payload from the other CMB.
			if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 800, 8, view, 0x200000, cb, 0) }); err != nil {
				t.Fatalf("write sourcing the peer CMB: %v", err)
			}
			host, err := peer.AllocDMA(len(data))
			if err != nil {
				t.Fatal(err)
			}
			if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 800, 8, host, 0, cb, 0) }); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(host.Buf, data); i >= 0 {
				t.Fatalf("payload from the peer CMB differs at byte %d", i)
			}
			// The peer's Read lands in the other CMB.
			cmb.WriteAt(make([]byte, len(data)), 0x300000)
			if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 800, 8, view, 0x300000, cb, 0) }); err != nil {
				t.Fatalf("read into the peer CMB: %v", err)
			}
			back := make([]byte, len(data))
			cmb.ReadAt(back, 0x300000)
			if i := firstDiff(back, data); i >= 0 {
				t.Fatalf("data read into the peer CMB differs at byte %d", i)
			}
			if err := peer.UnmapPeer(cmb); err != nil {
				t.Fatal(err)
			}
			if err := peer.UnmapPeer(cmb); err == nil && !shared {
				t.Fatal("second UnmapPeer accepted")
			}
		})
	}
}

// klog returns the kernel log.
func klog(t *testing.T) string {
	buf := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		t.Fatalf("klogctl: %v", err)
	}
	return string(buf[:n])
}

// TestDeviceIOMMUBlocksUnmappedDMA points a Read at an IOVA that is not
// mapped. The IOMMU must block the controller's DMA write and log a DMAR
// fault (QEMU's controller still completes the command successfully), and
// the controller must keep working.
func TestDeviceIOMMUBlocksUnmappedDMA(t *testing.T) {
	if _, err := os.Stat("/sys/class/iommu"); err != nil {
		t.Fatal("no /sys/class/iommu")
	}
	d := openAll(t, false)[0]
	c := newController(t, d)
	defer c.Close()
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	const bad = 0x7000000000 // far above anything the container hands out
	before := len(klog(t))
	fake := &nvme.DMA{Buf: make([]byte, ns.BlockSize), IOVA: bad}
	status := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 0, 1, fake, 0, cb, 0) })
	want := fmt.Sprintf("fault addr %#x", bad)
	var line string
	deadline := time.Now().Add(5 * time.Second)
	for line == "" && time.Now().Before(deadline) {
		log := klog(t)
		if len(log) > before {
			for _, l := range strings.Split(log[before:], "\n") {
				if strings.Contains(l, "DMAR") && strings.Contains(l, want) {
					line = strings.TrimSpace(l)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if line == "" {
		t.Fatalf("no DMAR fault for %s in the kernel log (command status: %v)", want, status)
	}
	t.Logf("blocked: %s (NVMe status: %v)", line, status)
	// The controller keeps working.
	host, err := d.AllocDMA(int(ns.BlockSize))
	if err != nil {
		t.Fatal(err)
	}
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 0, 1, host, 0, cb, 0) }); err != nil {
		t.Fatalf("read after the fault: %v", err)
	}
}

// TestDeviceMSIX routes MSI-X to eventfds, creates an I/O queue pair whose
// completion queue interrupts, and waits for a completion by sleeping on the
// eventfd.
func TestDeviceMSIX(t *testing.T) {
	d := openAll(t, false)[0]
	n, err := d.MSIXVectors()
	if err != nil || n < 2 {
		t.Fatalf("MSI-X vectors %d %v", n, err)
	}
	// MSI-X first, then the controller: the vectors bind to queues created
	// while MSI-X is on.
	irqs, err := d.EnableMSIX(2)
	if err != nil {
		t.Fatal(err)
	}
	c := newController(t, d)
	defer c.Close()
	qid := uint16(c.IOQueues()) // the last queue ID the driver was granted; unused so far
	const depth = 16
	q, err := newRawQueue(d, qid, depth)
	if err != nil {
		t.Fatal(err)
	}
	defer q.free()
	if _, err := c.AdminCommand(&nvme.SQE{OPC: nvme.AdminCreateCQ, PRP1: q.cq.IOVA,
		CDW10: (depth-1)<<16 | uint32(qid), CDW11: 1<<16 | 1<<1 | 1}, nil, false); err != nil { // IV 1, IEN, PC
		t.Fatalf("create interrupting CQ %d: %v", qid, err)
	}
	if _, err := c.AdminCommand(&nvme.SQE{OPC: nvme.AdminCreateSQ, PRP1: q.sq.IOVA,
		CDW10: (depth-1)<<16 | uint32(qid), CDW11: uint32(qid)<<16 | 1}, nil, false); err != nil {
		t.Fatalf("create SQ %d: %v", qid, err)
	}
	buf, err := d.AllocDMA(4096)
	if err != nil {
		t.Fatal(err)
	}
	ns := c.Namespaces()[0]
	for i := 0; i < 3; i++ {
		start := time.Now()
		q.post(nvme.SQE{OPC: nvme.OpRead, NSID: ns.ID, PRP1: buf.IOVA})
		got, err := irqs[1].Wait(5 * time.Second)
		if err != nil || got == 0 {
			t.Fatalf("no interrupt on vector 1 within 5 s (count %d, %v)", got, err)
		}
		woke := time.Since(start)
		if _, err := q.reap(); err != nil {
			t.Fatal(err)
		}
		t.Logf("read %d: MSI-X vector 1 woke the waiter after %v", i, woke)
	}
	if got, _ := irqs[0].Wait(0); got != 0 {
		t.Logf("vector 0 (admin) fired %d times", got)
	}
	c.AdminCommand(&nvme.SQE{OPC: nvme.AdminDeleteSQ, CDW10: uint32(qid)}, nil, false)
	c.AdminCommand(&nvme.SQE{OPC: nvme.AdminDeleteCQ, CDW10: uint32(qid)}, nil, false)
	if err := d.DisableMSIX(); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceReset resets a running controller through VFIO and brings it
// back with the driver; data on the namespace survives.
func TestDeviceReset(t *testing.T) {
	d := openAll(t, false)[0]
	c := newController(t, d)
	defer c.Close()
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	ns := c.Namespaces()[0]
	bs := int(ns.BlockSize)
	buf, err := d.AllocDMA(4 * bs)
	if err != nil {
		t.Fatal(err)
	}
	fill(buf.Buf, 13)
	want := append([]byte(nil), buf.Buf...)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 900, 4, buf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	qp.Close()
	start := time.Now()
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if cc, csts := d.Read32(nvme.RegCC), d.Read32(nvme.RegCSTS); cc&nvme.CCEnable != 0 || csts&nvme.CSTSReady != 0 {
		t.Fatalf("after VFIO_DEVICE_RESET CC %#x CSTS %#x: the controller should be disabled", cc, csts)
	}
	if cmd, err := d.Config16(0x04); err != nil || cmd&0x6 != 0x6 {
		t.Fatalf("command register %#x after reset (%v)", cmd, err)
	}
	if err := c.Reset(); err != nil {
		t.Fatalf("driver re-initialisation after the reset: %v", err)
	}
	qp, err = c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	clear(buf.Buf)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 900, 4, buf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Buf, want) {
		t.Fatal("data lost across the reset")
	}
	t.Logf("%s: VFIO_DEVICE_RESET took %v", d.Name(), took)
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestDeviceTeardown checks that Close releases everything: the group can
// be opened again, nothing leaks, and a closed device fails safely.
func TestDeviceTeardown(t *testing.T) {
	addrs := testDevices(t)
	fds := openFDs(t)
	for round := 0; round < 3; round++ {
		ct, err := vfio.OpenContainer(vfio.ContainerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var devs []*vfio.Device
		for _, a := range addrs {
			d, err := vfio.Open(a, quietOptions(t, ct))
			if err != nil {
				t.Fatalf("round %d: open %s: %v", round, a, err)
			}
			devs = append(devs, d)
		}
		for _, d := range devs {
			for _, size := range []int{512, 4096, 3 << 20} {
				if _, err := d.AllocDMA(size); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.EnableMSIX(1); err != nil {
				t.Fatal(err)
			}
			if cmb, err := d.CMB(); err == nil {
				for _, p := range devs {
					if _, err := p.MapPeer(cmb); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if round == 1 {
			ct.Close() // closing the container first: it lives on until the devices close
		}
		for _, d := range devs {
			if err := d.Close(); err != nil {
				t.Fatalf("close %s: %v", d.Name(), err)
			}
			if err := d.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if d.Read32(nvme.RegVS) != ^uint32(0) || d.Read64(nvme.RegCAP) != ^uint64(0) {
				t.Fatal("a closed device does not read as all ones")
			}
			d.Write32(nvme.RegCC, 0)
			if _, err := d.AllocDMA(4096); err == nil {
				t.Fatal("AllocDMA on a closed device")
			}
			if _, err := d.CMB(); err == nil {
				t.Fatal("CMB on a closed device")
			}
		}
		if round != 1 {
			ct.Close()
		}
	}
	if got := openFDs(t); got != fds {
		t.Fatalf("%d file descriptors open after teardown, %d before", got, fds)
	}
}

// TestDeviceNoHugePages runs I/O from DMA memory of locked 4 KiB pages.
func TestDeviceNoHugePages(t *testing.T) {
	addrs := testDevices(t)
	d, err := vfio.Open(addrs[0], &vfio.Options{NoHugePages: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	c := newController(t, d)
	defer c.Close()
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	buf, err := d.AllocDMA(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	if d.HugePageChunks() != 0 {
		t.Fatal("NoHugePages still used hugepages")
	}
	blocks := uint32(len(buf.Buf)) / ns.BlockSize
	fill(buf.Buf, 14)
	want := append([]byte(nil), buf.Buf...)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 3000, blocks, buf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	clear(buf.Buf)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 3000, blocks, buf, 0, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(buf.Buf, want); i >= 0 {
		t.Fatalf("data differs at byte %d", i)
	}
}

// TestDeviceContainerReuse closes every device of a container and opens
// them again in it: the IOMMU is set up anew.
func TestDeviceContainerReuse(t *testing.T) {
	addrs := testDevices(t)
	ct, err := vfio.OpenContainer(vfio.ContainerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	for round := 0; round < 2; round++ {
		d, err := vfio.Open(addrs[0], quietOptions(t, ct))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c := newController(t, d)
		if _, err := c.Identify(nvme.CNSController, 0, 0, 0); err != nil {
			t.Fatalf("round %d: identify: %v", round, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if ct.IOMMUType() != 0 {
			t.Fatalf("IOMMU type %d with no device in the container", ct.IOMMUType())
		}
	}
}

// TestDeviceCMBAfterDriver asks the transport for the CMB after the driver
// enabled it (what p2pdma does): the CMB keeps its address and keeps working.
func TestDeviceCMBAfterDriver(t *testing.T) {
	var d *vfio.Device
	for _, x := range openAll(t, false) {
		if nvme.CAP(x.Read64(nvme.RegCAP)).CMBS() {
			d = x
		}
	}
	if d == nil {
		t.Skip("no controller with a CMB")
	}
	c := newController(t, d)
	defer c.Close()
	dcmb, _, err := c.MapCMB()
	if err != nil {
		t.Fatal(err)
	}
	msc := d.Read64(nvme.RegCMBMSC)
	cmb, err := d.CMB()
	if err != nil {
		t.Fatal(err)
	}
	if cmb.BusAddr() != dcmb.IOVA || d.Read64(nvme.RegCMBMSC) != msc || msc != dcmb.IOVA|nvme.CMBMSCCMSE|nvme.CMBMSCCRE {
		t.Fatalf("CMBMSC %#x -> %#x, driver CMB at %#x, transport CMB at %#x", msc, d.Read64(nvme.RegCMBMSC), dcmb.IOVA, cmb.BusAddr())
	}
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	ns := c.Namespaces()[0]
	data := make([]byte, 4*ns.BlockSize)
	fill(data, 15)
	cmb.WriteAt(data, 0x4000)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Write(ns, 1500, 4, dcmb, 0x4000, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	cmb.WriteAt(make([]byte, len(data)), 0x8000)
	if err := do(qp, func(cb nvme.Completer) error { return qp.Read(ns, 1500, 4, dcmb, 0x8000, cb, 0) }); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(data))
	cmb.ReadAt(back, 0x8000)
	if i := firstDiff(back, data); i >= 0 {
		t.Fatalf("CMB data differs at byte %d", i)
	}
}
