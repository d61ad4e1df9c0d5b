package engine

import (
	"fmt"
	"unsafe"
)

// The engine's address space. A program sees 64-bit addresses whose upper 32
// bits select a region and whose lower 32 bits are an offset into it. Every
// load and store is checked against the region's readable or writable size,
// except those the verifier proved inside their region, which the JIT runs
// unchecked (RATIONALE.md, "Proven accesses"); region 0 is empty, so NULL
// and any small integer fault.
const (
	regionNull  = 0
	regionData  = 1
	regionCtx   = 2
	regionStack = 3
	regionMap0  = 4 // map i's value memory is region regionMap0+i
	maxRegions  = 64
	maxMaps     = maxRegions - regionMap0

	mapHandleBase = 0xffff_ffff_0000_0000 // map pointers: never dereferenceable
)

func regionAddr(r int, off uint64) uint64 { return uint64(r)<<32 | off }

func mapHandle(i int) uint64 { return mapHandleBase | uint64(i) }

// region is one window of the address space.
type region struct {
	ptr   unsafe.Pointer
	rsize uint64 // readable bytes
	wsize uint64 // writable bytes: 0 for read-only regions
	// bias is ptr - index<<32: the JIT's unchecked access to a proven
	// engine address a is at host address a + bias (see RATIONALE.md).
	bias uintptr
}

func (r *region) set(index int, b []byte, writable bool) {
	r.ptr = unsafe.Pointer(unsafe.SliceData(b))
	r.bias = uintptr(r.ptr) - uintptr(index)<<32
	r.rsize = uint64(len(b))
	r.wsize = 0
	if writable {
		r.wsize = r.rsize
	}
}

// rp returns a pointer to n readable bytes at addr, or nil. It is the check
// of the loads and stores, whose n is at most 8: the offset is below 2^32, so
// o+n cannot wrap. Lengths a program computes go through bytesAt.
func (m *Instance) rp(addr, n uint64) unsafe.Pointer {
	rg := &m.regions[(addr>>32)&(maxRegions-1)]
	o := addr & 0xffff_ffff
	if addr>>32 >= maxRegions || o+n > rg.rsize {
		return nil
	}
	return unsafe.Add(rg.ptr, o)
}

// wp returns a pointer to n writable bytes at addr, or nil (n <= 8, see rp).
func (m *Instance) wp(addr, n uint64) unsafe.Pointer {
	rg := &m.regions[(addr>>32)&(maxRegions-1)]
	o := addr & 0xffff_ffff
	if addr>>32 >= maxRegions || o+n > rg.wsize {
		return nil
	}
	return unsafe.Add(rg.ptr, o)
}

// bytesAt returns the n readable bytes at addr as a slice, or nil. n is any
// value a program computed, so the check cannot wrap: n <= size and
// o <= size-n.
func (m *Instance) bytesAt(addr, n uint64) []byte {
	rg := &m.regions[(addr>>32)&(maxRegions-1)]
	o := addr & 0xffff_ffff
	if addr>>32 >= maxRegions || n > rg.rsize || o > rg.rsize-n {
		return nil
	}
	if rg.ptr == nil {
		return nil
	}
	if n == 0 { // o may be the region's end, where no pointer may point
		return unsafe.Slice((*byte)(rg.ptr), 0)
	}
	return unsafe.Slice((*byte)(unsafe.Add(rg.ptr, o)), n)
}

// Fault is a memory access outside the program's regions, stopping the run.
type Fault struct {
	PC    int    // instruction slot
	Addr  uint64 // engine address
	Size  int    // bytes
	Write bool
	What  string // what was accessed, e.g. "load", "helper bpfblk_memcmp"
}

// Error describes the access and what the address points at.
func (f *Fault) Error() string {
	return fmt.Sprintf("engine: instruction %d: %s of %d bytes at %#x outside the program's memory (%s)",
		f.PC, f.What, f.Size, f.Addr, describeAddr(f.Addr))
}

func describeAddr(a uint64) string {
	if a&mapHandleBase == mapHandleBase {
		return "map pointer"
	}
	switch a >> 32 {
	case regionNull:
		return "null region"
	case regionData:
		return fmt.Sprintf("data offset %d", a&0xffff_ffff)
	case regionCtx:
		return fmt.Sprintf("context offset %d", a&0xffff_ffff)
	case regionStack:
		return fmt.Sprintf("stack offset %d", a&0xffff_ffff)
	}
	if a>>32 < maxRegions {
		return fmt.Sprintf("map %d offset %d", a>>32-regionMap0, a&0xffff_ffff)
	}
	return "unmapped"
}
