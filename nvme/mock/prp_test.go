package mock

import (
	"testing"
)

// prpList writes the PRP entries of pages into a list page of DMA memory
// and returns PRP1 and PRP2 for a transfer over them.
func prpList(t *testing.T, c *Controller, pages []uint64) (uint64, uint64) {
	t.Helper()
	list, err := c.AllocDMA(pageSize)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pages[1:] {
		le.PutUint64(list.Buf[8*i:], p)
	}
	return pages[0], list.IOVA
}

type seg struct{ off, n int }

func walk(t *testing.T, c *Controller, prp1, prp2 uint64, n int) []seg {
	t.Helper()
	var segs []seg
	if st := c.walkPRP(&c.qc[1].counters, prp1, prp2, n, true, func(b []byte, off int) uint16 {
		segs = append(segs, seg{off, len(b)})
		return stOK
	}); st != stOK {
		t.Fatalf("walk: status %#x", st)
	}
	return segs
}

// TestWalkPRPCoalesces checks that pages at consecutive bus addresses reach
// the handler as one segment, and that everything else still goes page by
// page: pages that are not adjacent, and adjacent ones of two mappings.
func TestWalkPRPCoalesces(t *testing.T) {
	c, err := NewController(NewBus(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 64 * pageSize
	buf, err := c.AllocDMA(n)
	if err != nil {
		t.Fatal(err)
	}
	var pages []uint64
	for i := range 64 {
		pages = append(pages, buf.IOVA+uint64(i)*pageSize)
	}
	p1, p2 := prpList(t, c, pages)
	if got := walk(t, c, p1, p2, n); len(got) != 1 || got[0] != (seg{0, n}) {
		t.Fatalf("contiguous buffer: segments %v, want one of %d bytes", got, n)
	}
	// Two pages: PRP1 and PRP2, adjacent.
	if got := walk(t, c, pages[0]+512, pages[1], 2*pageSize-512); len(got) != 1 || got[0] != (seg{0, 2*pageSize - 512}) {
		t.Fatalf("two adjacent pages: segments %v", got)
	}
	// Every other page, then the pages in reverse: no two adjacent.
	var odd []uint64
	for i := 0; i < 64; i += 2 {
		odd = append(odd, pages[i])
	}
	p1, p2 = prpList(t, c, odd)
	if got := walk(t, c, p1, p2, len(odd)*pageSize); len(got) != len(odd) {
		t.Fatalf("scattered pages: %d segments, want %d", len(got), len(odd))
	}
	// Two mappings back to back: adjacent addresses, two pieces of memory.
	a, b := alignedAlloc(2*pageSize), alignedAlloc(2*pageSize)
	base := uint64(0x7000_0000_0000)
	if err := c.bus.MapAt(base, a, HostMemory); err != nil {
		t.Fatal(err)
	}
	if err := c.bus.MapAt(base+2*pageSize, b, HostMemory); err != nil {
		t.Fatal(err)
	}
	p1, p2 = prpList(t, c, []uint64{base, base + pageSize, base + 2*pageSize, base + 3*pageSize})
	got := walk(t, c, p1, p2, 4*pageSize)
	total := 0
	for _, s := range got {
		if s.off != total {
			t.Fatalf("segments %v out of order", got)
		}
		total += s.n
	}
	if total != 4*pageSize || len(got) < 2 {
		t.Fatalf("across two mappings: segments %v", got)
	}
	if f := c.bus.Stats().Faults; f != 0 {
		t.Fatalf("%d bus faults", f)
	}
}
