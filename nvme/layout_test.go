package nvme

import (
	"testing"
	"unsafe"
)

// TestQueuePairLayout: a queue pair's fields, written per command by its
// core, have linePad bytes of pad on each side, so another core's data
// allocated next to it never shares their cache lines; so do its slot and
// free-list arrays.
func TestQueuePairLayout(t *testing.T) {
	var q QueuePair
	first := unsafe.Offsetof(q.c)
	last := unsafe.Offsetof(q.failScratch) + unsafe.Sizeof(q.failScratch)
	if first < linePad || unsafe.Sizeof(q)-last < linePad {
		t.Errorf("QueuePair fields at [%d, %d) of %d bytes: want %d bytes of pad on each side", first, last, unsafe.Sizeof(q), linePad)
	}
	check := func(name string, all unsafe.Pointer, allBytes uintptr, s unsafe.Pointer, sBytes uintptr, n, ln, cp int) {
		t.Helper()
		before := uintptr(s) - uintptr(all)
		after := uintptr(all) + allBytes - (uintptr(s) + sBytes)
		if before < linePad || after < linePad || ln != n || cp != n {
			t.Errorf("%s(%d): %d bytes of pad before, %d after, len %d cap %d", name, n, before, after, ln, cp)
		}
	}
	for _, n := range []int{1, 7, 255} {
		all, s := paddedIn[slot](n)
		sz := unsafe.Sizeof(slot{})
		check("slots", unsafe.Pointer(&all[0]), uintptr(len(all))*sz, unsafe.Pointer(&s[0]), uintptr(len(s))*sz, n, len(s), cap(s))
		all16, s16 := paddedIn[uint16](n)
		check("free list", unsafe.Pointer(&all16[0]), uintptr(len(all16))*2, unsafe.Pointer(&s16[0]), uintptr(len(s16))*2, n, len(s16), cap(s16))
	}
}
