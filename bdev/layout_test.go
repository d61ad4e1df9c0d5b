package bdev

import (
	"testing"
	"unsafe"
)

// TestIOLayout checks what the fast path relies on: an IO's fields up to ch
// fill one cache line, IO is a whole number of lines, and every IO of a
// channel's pool starts on a line boundary, so that a read or write of the
// fast path touches one line of its IO.
func TestIOLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	var io IO
	if off := unsafe.Offsetof(io.parent); off != 64 {
		t.Errorf("the fast-path fields end at byte %d, want 64", off)
	}
	if n := unsafe.Sizeof(io); n%64 != 0 {
		t.Errorf("IO is %d bytes, not a whole number of cache lines", n)
	}
	b, err := NewNull("null0", 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, b, false)
	for _, depth := range []int{1, 2, 3, 8, 32, 128, 1000} {
		ch, err := d.NewChannel(depth)
		if err != nil {
			t.Fatal(err)
		}
		for i, io := range ch.free {
			if a := uintptr(unsafe.Pointer(io)) % 64; a != 0 {
				t.Fatalf("depth %d: IO %d starts %d bytes into a cache line", depth, i, a)
			}
		}
		ch.Close()
	}
}
