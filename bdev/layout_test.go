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

// TestChannelLayout checks that what a channel's I/O path writes lies in
// cache lines that nothing of another core shares: the Channel, its
// backend channel, the queue pair's sharing state and the arrays of its
// pools are each a whole number of lines, in a size class whose objects
// start on a line (a multiple of 64 bytes), and the pools' arrays start on
// one. The malloc module's region locks are a line each.
func TestChannelLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is tuned for 64-bit platforms")
	}
	for name, n := range map[string]uintptr{
		"Channel":     unsafe.Sizeof(Channel{}),
		"sharedQP":    unsafe.Sizeof(sharedQP{}),
		"nvmeChannel": unsafe.Sizeof(nvmeChannel{}),
		"memChannel":  unsafe.Sizeof(memChannel{}),
		"stripe":      unsafe.Sizeof(stripe{}),
	} {
		if n%64 != 0 || (n > 256 && n&(n-1) != 0) {
			t.Errorf("%s is %d bytes: not whole cache lines in a size class of its own", name, n)
		}
	}
	var m memBackend
	if off := unsafe.Offsetof(m.stripes); off != 0 {
		t.Errorf("memBackend's locks start at byte %d, want 0", off)
	}
	b, err := NewNull("null0", 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, b, false)
	for _, depth := range []int{1, 2, 7, 8, 100} {
		ch, err := d.NewChannel(depth)
		if err != nil {
			t.Fatal(err)
		}
		for name, s := range map[string][]*IO{"free": ch.free, "freeChild": ch.freeChild} {
			if cap(s) == 0 {
				continue
			}
			// Above 512 bytes the array starts behind the allocator's
			// 8-byte header, in a size class of whole lines.
			a := uintptr(unsafe.Pointer(&s[:1][0]))
			if cap(s) <= 64 && (a%64 != 0 || cap(s)*8%64 != 0) || cap(s) > 64 && a%64 != 8 {
				t.Errorf("depth %d: %s's array at %#x, %d bytes: not whole cache lines", depth, name, a, cap(s)*8)
			}
		}
		if a := uintptr(unsafe.Pointer(ch)); a%64 != 0 {
			t.Errorf("depth %d: Channel at %#x, not on a cache line", depth, a)
		}
		ch.Close()
	}
}
