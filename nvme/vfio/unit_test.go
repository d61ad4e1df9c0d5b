package vfio

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/bpfblk/bpfblk/nvme/pci"
	"github.com/bpfblk/bpfblk/nvme/pci/pcitest"
)

func TestIOVASpace(t *testing.T) {
	s := newIOVASpace([][2]uint64{{0, 0xfedfffff}, {0xfef00000, 1<<39 - 1}})
	total := s.freeBytes()
	a, err := s.alloc(4096, 2<<20)
	if err != nil || a != iovaFloor {
		t.Fatalf("first alloc %#x %v", a, err)
	}
	b, err := s.alloc(3<<20, 2<<20)
	if err != nil || b != 4<<20 {
		t.Fatalf("second alloc %#x %v", b, err)
	}
	// Ranges that cross the MSI window are skipped.
	if !s.reserve(0xfee00000-0x1000, 0x1000) || s.reserve(0xfee00000, 0x1000) {
		t.Fatal("reserve around the MSI window")
	}
	c, err := s.alloc(0x200000, 0x200000)
	if err != nil || c != 8<<20 {
		t.Fatalf("third alloc %#x %v", c, err)
	}
	s.release(b, 3<<20)
	s.release(a, 4096)
	s.release(c, 0x200000)
	s.release(0xfee00000-0x1000, 0x1000)
	if s.freeBytes() != total || len(s.free) != 2 {
		t.Fatalf("after release: %d free bytes in %v, want %d in 2 spans", s.freeBytes(), s.free, total)
	}
	if _, err := s.alloc(1<<40, 4096); err == nil {
		t.Fatal("allocated more than the space")
	}
	if _, err := s.alloc(4096, 3); err == nil {
		t.Fatal("accepted a non power of two alignment")
	}
}

func TestIOVASpaceRandom(t *testing.T) {
	s := newIOVASpace(nil)
	total := s.freeBytes()
	rng := rand.New(rand.NewSource(1))
	type r struct{ a, n uint64 }
	var live []r
	for i := 0; i < 2000; i++ {
		if len(live) > 0 && rng.Intn(3) == 0 {
			k := rng.Intn(len(live))
			s.release(live[k].a, live[k].n)
			live = append(live[:k], live[k+1:]...)
			continue
		}
		n := uint64(rng.Intn(64)+1) * 4096
		a, err := s.alloc(n, 4096<<rng.Intn(10))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range live {
			if a < o.a+o.n && o.a < a+n {
				t.Fatalf("overlap [%#x+%#x] with [%#x+%#x]", a, n, o.a, o.n)
			}
		}
		live = append(live, r{a, n})
	}
	for _, o := range live {
		s.release(o.a, o.n)
	}
	if s.freeBytes() != total {
		t.Fatalf("leaked %d bytes", total-s.freeBytes())
	}
}

func regionInfoBuf(caps ...[]byte) []byte {
	b := make([]byte, 32)
	binary.LittleEndian.PutUint32(b[4:], regionFlagRead|regionFlagWrite|regionFlagMmap)
	binary.LittleEndian.PutUint32(b[8:], 2)
	binary.LittleEndian.PutUint64(b[16:], 0x4000000)
	binary.LittleEndian.PutUint64(b[24:], 0x20000000000)
	if len(caps) > 0 {
		binary.LittleEndian.PutUint32(b[4:], regionFlagRead|regionFlagWrite|regionFlagMmap|regionFlagCaps)
		binary.LittleEndian.PutUint32(b[12:], 32)
		for i, c := range caps {
			next := uint32(0)
			if i+1 < len(caps) {
				next = uint32(len(b) + len(c))
			}
			binary.LittleEndian.PutUint32(c[4:], next)
			b = append(b, c...)
		}
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	return b
}

func TestParseRegionInfo(t *testing.T) {
	r, _, ok := parseRegionInfo(regionInfoBuf())
	if !ok || r.Index != 2 || r.Size != 0x4000000 || r.Offset != 0x20000000000 || !r.Mappable() || r.Sparse != nil {
		t.Fatalf("%+v", r)
	}
	sparse := make([]byte, 16+2*16)
	binary.LittleEndian.PutUint16(sparse[0:], regionCapSparseMmap)
	binary.LittleEndian.PutUint32(sparse[8:], 2)
	binary.LittleEndian.PutUint64(sparse[16:], 0)
	binary.LittleEndian.PutUint64(sparse[24:], 0x2000)
	binary.LittleEndian.PutUint64(sparse[32:], 0x3000)
	binary.LittleEndian.PutUint64(sparse[40:], 0x1000)
	msix := make([]byte, 8)
	binary.LittleEndian.PutUint16(msix[0:], regionCapMSIXMappable)
	r, _, ok = parseRegionInfo(regionInfoBuf(sparse, msix))
	if !ok || !r.MSIXMappable || len(r.Sparse) != 2 || r.Sparse[1] != [2]uint64{0x3000, 0x1000} {
		t.Fatalf("%+v", r)
	}
	// A buffer too small for the chain asks for more.
	full := regionInfoBuf(sparse)
	if _, need, ok := parseRegionInfo(full[:40]); ok || int(need) != len(full) {
		t.Fatalf("short buffer: ok=%v need=%d", ok, need)
	}
}

func FuzzParseRegionInfo(f *testing.F) {
	f.Add(regionInfoBuf())
	msix := make([]byte, 8)
	binary.LittleEndian.PutUint16(msix[0:], regionCapMSIXMappable)
	f.Add(regionInfoBuf(msix))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseRegionInfo(b)
		parseIOMMUInfo(b)
	})
}

func TestParseIOMMUInfo(t *testing.T) {
	b := make([]byte, 24+16+2*16+12)
	le := binary.LittleEndian
	le.PutUint32(b[4:], iommuInfoPgsizes|iommuInfoCaps)
	le.PutUint64(b[8:], 0x40201000)
	le.PutUint32(b[16:], 24)
	le.PutUint16(b[24:], iommuCapIOVARange)
	le.PutUint32(b[28:], 72)
	le.PutUint32(b[32:], 2)
	le.PutUint64(b[40:], 0)
	le.PutUint64(b[48:], 0xfedfffff)
	le.PutUint64(b[56:], 0xfef00000)
	le.PutUint64(b[64:], 0x7fffffffff)
	le.PutUint16(b[72:], iommuCapDMAAvail)
	le.PutUint32(b[80:], 65535)
	info := parseIOMMUInfo(b)
	if info.PageSizes != 0x40201000 || info.DMAAvail != 65535 || len(info.Ranges) != 2 || info.Ranges[1][1] != 0x7fffffffff {
		t.Fatalf("%+v", info)
	}
}

func TestDecodeCMB(t *testing.T) {
	// QEMU: CMBLOC=0x62?? BIR=2 OFST=0; CMBSZ=0x0004021d: 64 units of 1 MiB.
	bar, off, size, err := decodeCMB(0x2, 0x0004021d)
	if err != nil || bar != 2 || off != 0 || size != 64<<20 {
		t.Fatalf("%d %#x %#x %v", bar, off, size, err)
	}
	bar, off, size, err = decodeCMB(0x3|5<<12, 0x10|4<<12) // 4 KiB units
	if err != nil || bar != 3 || off != 5*4096 || size != 4*4096 {
		t.Fatalf("%d %#x %#x %v", bar, off, size, err)
	}
	for _, c := range [][2]uint32{{0x1, 0x1021d}, {0x6, 0x1021d}, {0x2, 0x1071d}, {0x2, 0x21d}} {
		if _, _, _, err := decodeCMB(c[0], c[1]); err == nil {
			t.Errorf("decodeCMB(%#x, %#x) accepted", c[0], c[1])
		}
	}
}

func TestMMIO(t *testing.T) {
	mem := make([]byte, 64)
	m := newMMIO(mem)
	m.write32(4, 0xdeadbeef)
	m.write64(8, 0x0123456789abcdef)
	if binary.LittleEndian.Uint32(mem[4:]) != 0xdeadbeef || binary.LittleEndian.Uint64(mem[8:]) != 0x0123456789abcdef {
		t.Fatalf("stores: % x", mem[:16])
	}
	if m.read32(4) != 0xdeadbeef || m.read64(8) != 0x0123456789abcdef || m.read32(12) != 0x01234567 {
		t.Fatal("loads")
	}
	// Out of range or misaligned: all ones, nothing written.
	before := append([]byte(nil), mem...)
	for _, off := range []uint64{2, 61, 64, 1 << 40, ^uint64(0) - 2} {
		if m.read32(off) != ^uint32(0) {
			t.Errorf("read32(%#x) not all ones", off)
		}
		m.write32(off, 0)
		m.write64(off, 0)
	}
	if m.read64(60) != ^uint64(0) || m.read64(4) != ^uint64(0) {
		t.Error("bad read64 not all ones")
	}
	if !bytes.Equal(before, mem) {
		t.Fatal("bad offsets wrote memory")
	}
	// Copies at every alignment and length.
	for off := 0; off < 9; off++ {
		for n := 0; n < 40; n++ {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i*7 + off + 1)
			}
			clear(mem)
			if got := m.copyIn(uint64(off), src); got != n {
				t.Fatalf("copyIn(%d, %d) = %d", off, n, got)
			}
			if !bytes.Equal(mem[off:off+n], src) || bytes.ContainsFunc(mem[off+n:], func(r rune) bool { return r != 0 }) {
				t.Fatalf("copyIn(%d, %d) wrote % x", off, n, mem)
			}
			dst := make([]byte, n)
			if got := m.copyOut(dst, uint64(off)); got != n || !bytes.Equal(dst, src) {
				t.Fatalf("copyOut(%d, %d) = %d % x", off, n, got, dst)
			}
		}
	}
	if m.copyIn(60, make([]byte, 10)) != 4 || m.copyOut(make([]byte, 10), 64) != 0 {
		t.Fatal("copies past the end")
	}
}

// fakeIOMMU records mappings like the type1 backend and rejects overlaps.
type fakeIOMMU struct {
	mu    sync.Mutex
	space *iovaSpace
	maps  map[uint64]uint64 // iova -> size
}

func (f *fakeIOMMU) allocIOVA(size, align uint64) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.space.alloc(size, align)
}
func (f *fakeIOMMU) freeIOVA(iova, size uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.space.release(iova, size)
}
func (f *fakeIOMMU) mapDMA(vaddr unsafe.Pointer, iova, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, n := range f.maps {
		if iova < a+n && a < iova+size {
			return fmt.Errorf("overlapping map")
		}
	}
	f.maps[iova] = size
	return nil
}
func (f *fakeIOMMU) unmapDMA(iova, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maps[iova] != size {
		return fmt.Errorf("unmap of %#x+%#x not mapped", iova, size)
	}
	delete(f.maps, iova)
	return nil
}

func TestDMAPool(t *testing.T) {
	io := &fakeIOMMU{space: newIOVASpace(nil), maps: map[uint64]uint64{}}
	var warnings []string
	p := newDMAPool(io, func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) }, false)
	small, err := p.alloc(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(small.Buf) != 100 || cap(small.Buf) != 4096 || small.IOVA%4096 != 0 || uintptr(unsafe.Pointer(&small.Buf[0]))%4096 != 0 {
		t.Fatalf("small buffer len %d cap %d iova %#x", len(small.Buf), cap(small.Buf), small.IOVA)
	}
	second, err := p.alloc(8192)
	if err != nil {
		t.Fatal(err)
	}
	if second.IOVA != small.IOVA+4096 {
		t.Fatalf("second small buffer at %#x, want %#x (same chunk)", second.IOVA, small.IOVA+4096)
	}
	big, err := p.alloc(3 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if big.IOVA%(2<<20) != 0 || len(io.maps) != 2 {
		t.Fatalf("big buffer iova %#x, %d mappings", big.IOVA, len(io.maps))
	}
	for _, d := range []struct {
		b   []byte
		tag byte
	}{{small.Buf, 1}, {second.Buf, 2}, {big.Buf, 3}} {
		for i := range d.b {
			d.b[i] = d.tag
		}
	}
	if small.Buf[99] != 1 || second.Buf[0] != 2 || big.Buf[len(big.Buf)-1] != 3 {
		t.Fatal("buffers overlap")
	}
	if p.hugeN == 0 && len(warnings) != 1 {
		t.Fatalf("4 KiB fallback warned %d times: %q", len(warnings), warnings)
	}
	if err := p.free(big); err != nil || len(io.maps) != 1 {
		t.Fatalf("free big: %v, %d mappings", err, len(io.maps))
	}
	if err := p.free(big); err == nil || !strings.Contains(err.Error(), "did not allocate") {
		t.Fatalf("double free: %v", err)
	}
	// Freed space is zeroed on reuse.
	if err := p.free(second); err != nil {
		t.Fatal(err)
	}
	again, err := p.alloc(4096)
	if err != nil || again.IOVA != second.IOVA || again.Buf[0] != 0 {
		t.Fatalf("reuse: %#x %v (first byte %d)", again.IOVA, err, again.Buf[0])
	}
	if err := p.close(); err != nil || len(io.maps) != 0 {
		t.Fatalf("close: %v, %d mappings left", err, len(io.maps))
	}
	if _, err := p.alloc(10); err == nil {
		t.Fatal("alloc after close")
	}
	if _, err := newDMAPool(io, t.Logf, true).alloc(0); err == nil {
		t.Fatal("zero-byte alloc")
	}
}

func TestOpenWithoutVFIO(t *testing.T) {
	f := pcitest.New(t)
	f.AddFunction("0000:01:00.0", 0x1b36, 0x0010, pci.ClassNVMe, "nvme", 1, 0)
	f.NoIOMMU()
	_, err := Open("pci:0000:01:00.0", &Options{Root: f.Root})
	if err == nil || !strings.Contains(err.Error(), "no IOMMU") {
		t.Fatalf("got %v", err)
	}
	if _, err := Open("pci:0000:01:00", &Options{Root: f.Root}); err == nil || !strings.Contains(err.Error(), "bad address") {
		t.Fatalf("bad address: %v", err)
	}
}

func TestNotViableNamesOthers(t *testing.T) {
	f := pcitest.New(t)
	a := f.AddFunction("0000:01:00.0", 0x1b36, 0x0010, pci.ClassNVMe, "vfio-pci", 5, 0)
	f.AddFunction("0000:01:00.1", 0x8086, 0x1533, 0x020000, "igb", 5, 0)
	f.AddFunction("0000:01:00.2", 0x8086, 0x1533, 0x020000, "", 5, 0)
	c := &Container{host: f.Host()}
	err := c.notViable(5, a)
	want := "IOMMU group 5 of 0000:01:00.0 is not viable: every device in the group must be bound to vfio-pci or to no driver, but 0000:01:00.1 (driver igb) is"
	if err == nil || err.Error() != "vfio: "+want {
		t.Fatalf("got  %v\nwant vfio: %s", err, want)
	}
}

// The register accessors are the per-I/O path (doorbells): no allocation.
func benchDevice(b *testing.B) *Device {
	mem := make([]byte, 0x2000)
	d := &Device{}
	d.bar0.Store(newMMIO(mem))
	return d
}

func BenchmarkWrite32(b *testing.B) {
	d := benchDevice(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Write32(0x1000, uint32(i))
	}
}

func BenchmarkRead32(b *testing.B) {
	d := benchDevice(b)
	b.ReportAllocs()
	var s uint32
	for b.Loop() {
		s += d.Read32(0x1c)
	}
	_ = s
}

func BenchmarkRead64(b *testing.B) {
	d := benchDevice(b)
	b.ReportAllocs()
	var s uint64
	for b.Loop() {
		s += d.Read64(0)
	}
	_ = s
}

func TestRegisterAccessorsDoNotAllocate(t *testing.T) {
	d := &Device{}
	d.bar0.Store(newMMIO(make([]byte, 0x2000)))
	if n := testing.AllocsPerRun(100, func() { d.Write32(0x1000, d.Read32(0x1000)+1+uint32(d.Read64(0))) }); n != 0 {
		t.Fatalf("%v allocations per doorbell", n)
	}
	if d.Read32(0x1000) != 101 { // AllocsPerRun runs once more to warm up
		t.Fatalf("doorbell register holds %d after 101 increments", d.Read32(0x1000))
	}
}
