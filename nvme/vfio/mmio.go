package vfio

import "unsafe"

// mmio is a mapped device memory window (a BAR or part of one). Accesses
// outside the window or misaligned for their width read as all ones and
// write nothing, like a master abort on the bus: bad offsets from a caller
// never crash the process.
type mmio struct {
	mem  []byte // the mapping, kept for munmap
	base unsafe.Pointer
	size uintptr
}

func newMMIO(mem []byte) *mmio {
	return &mmio{mem: mem, base: unsafe.Pointer(unsafe.SliceData(mem)), size: uintptr(len(mem))}
}

func (m *mmio) ok(off uint64, w uintptr) bool {
	return off%uint64(w) == 0 && off < uint64(m.size) && uintptr(off)+w <= m.size
}

func (m *mmio) read32(off uint64) uint32 {
	if !m.ok(off, 4) {
		return ^uint32(0)
	}
	return load32(unsafe.Add(m.base, off))
}

func (m *mmio) write32(off uint64, v uint32) {
	if m.ok(off, 4) {
		store32(unsafe.Add(m.base, off), v)
	}
}

func (m *mmio) read64(off uint64) uint64 {
	if !m.ok(off, 8) {
		return ^uint64(0)
	}
	return load64(unsafe.Add(m.base, off))
}

func (m *mmio) write64(off uint64, v uint64) {
	if m.ok(off, 8) {
		store64(unsafe.Add(m.base, off), v)
	}
}

// copyIn copies src to device memory at off with naturally aligned 8-byte
// stores where possible, 4-byte stores otherwise, bytes at unaligned edges.
func (m *mmio) copyIn(off uint64, src []byte) int {
	if off >= uint64(m.size) {
		return 0
	}
	n := min(uint64(len(src)), uint64(m.size)-off)
	p := unsafe.Add(m.base, off)
	i := uint64(0)
	for ; i < n && (uintptr(p)+uintptr(i))%4 != 0; i++ {
		*(*byte)(unsafe.Add(p, i)) = src[i]
	}
	for ; i+8 <= n; i += 8 {
		a := unsafe.Add(p, i)
		v := le64(src[i:])
		if uintptr(a)%8 == 0 {
			store64(a, v)
		} else {
			store32(a, uint32(v))
			store32(unsafe.Add(a, 4), uint32(v>>32))
		}
	}
	for ; i+4 <= n; i += 4 {
		store32(unsafe.Add(p, i), le32(src[i:]))
	}
	for ; i < n; i++ {
		*(*byte)(unsafe.Add(p, i)) = src[i]
	}
	return int(n)
}

// copyOut copies device memory at off to dst with the same access widths as
// copyIn.
func (m *mmio) copyOut(dst []byte, off uint64) int {
	if off >= uint64(m.size) {
		return 0
	}
	n := min(uint64(len(dst)), uint64(m.size)-off)
	p := unsafe.Add(m.base, off)
	i := uint64(0)
	for ; i < n && (uintptr(p)+uintptr(i))%4 != 0; i++ {
		dst[i] = *(*byte)(unsafe.Add(p, i))
	}
	for ; i+8 <= n; i += 8 {
		a := unsafe.Add(p, i)
		var v uint64
		if uintptr(a)%8 == 0 {
			v = load64(a)
		} else {
			v = uint64(load32(a)) | uint64(load32(unsafe.Add(a, 4)))<<32
		}
		put64(dst[i:], v)
	}
	for ; i+4 <= n; i += 4 {
		put32(dst[i:], load32(unsafe.Add(p, i)))
	}
	for ; i < n; i++ {
		dst[i] = *(*byte)(unsafe.Add(p, i))
	}
	return int(n)
}

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

func put32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func put64(b []byte, v uint64) { put32(b, uint32(v)); put32(b[4:], uint32(v>>32)) }
