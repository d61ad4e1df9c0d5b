package vfio

import (
	"math/bits"
	"sort"

	"github.com/pkg/errors"
)

// iovaSpace hands out bus addresses (IOVAs) from the ranges the IOMMU
// accepts. It is used at setup time only; the container's mutex guards it.
type iovaSpace struct {
	free []span // sorted, disjoint, never adjacent
}

// span is an inclusive address range.
type span struct{ first, last uint64 }

// iovaFloor keeps IOVA 0 (a null PRP) and the first 2 MiB unused, so a
// zeroed pointer in a command can never reach host memory.
const iovaFloor = 2 << 20

// defaultIOVARanges is what a type1 IOMMU accepts when the kernel does not
// report ranges: 39 address bits minus the x86 MSI window.
var defaultIOVARanges = [][2]uint64{{0, 0xfedfffff}, {0xfef00000, 1<<39 - 1}}

func newIOVASpace(ranges [][2]uint64) *iovaSpace {
	if len(ranges) == 0 {
		ranges = defaultIOVARanges
	}
	s := &iovaSpace{}
	for _, r := range ranges {
		first, last := r[0], r[1]
		if last < iovaFloor || first > last {
			continue
		}
		first = max(first, iovaFloor)
		s.free = append(s.free, span{first, last})
	}
	sort.Slice(s.free, func(i, j int) bool { return s.free[i].first < s.free[j].first })
	// Merge overlaps a confused kernel might report.
	out := s.free[:0]
	for _, sp := range s.free {
		if n := len(out); n > 0 && sp.first <= out[n-1].last+1 {
			out[n-1].last = max(out[n-1].last, sp.last)
			continue
		}
		out = append(out, sp)
	}
	s.free = out
	return s
}

// alloc returns the lowest free address aligned to align (a power of two)
// with size bytes free after it.
func (s *iovaSpace) alloc(size, align uint64) (uint64, error) {
	if size == 0 || align == 0 || bits.OnesCount64(align) != 1 {
		return 0, errors.Errorf("vfio: bad IOVA request size %#x align %#x", size, align)
	}
	for _, sp := range s.free {
		a := (sp.first + align - 1) &^ (align - 1)
		if a < sp.first { // wrapped
			continue
		}
		end := a + size - 1
		if end < a || end > sp.last {
			continue
		}
		s.take(a, size)
		return a, nil
	}
	return 0, errors.Errorf("vfio: IOVA space exhausted (no %#x bytes aligned to %#x free)", size, align)
}

// reserve takes exactly [addr, addr+size) if it is free.
func (s *iovaSpace) reserve(addr, size uint64) bool {
	end := addr + size - 1
	if size == 0 || end < addr {
		return false
	}
	for _, sp := range s.free {
		if addr >= sp.first && end <= sp.last {
			s.take(addr, size)
			return true
		}
	}
	return false
}

func (s *iovaSpace) take(addr, size uint64) {
	end := addr + size - 1
	for i, sp := range s.free {
		if addr < sp.first || end > sp.last {
			continue
		}
		var repl []span
		if sp.first < addr {
			repl = append(repl, span{sp.first, addr - 1})
		}
		if end < sp.last {
			repl = append(repl, span{end + 1, sp.last})
		}
		s.free = append(s.free[:i], append(repl, s.free[i+1:]...)...)
		return
	}
}

// release returns [addr, addr+size) to the free list.
func (s *iovaSpace) release(addr, size uint64) {
	if size == 0 {
		return
	}
	n := span{addr, addr + size - 1}
	i := sort.Search(len(s.free), func(i int) bool { return s.free[i].first > addr })
	s.free = append(s.free, span{})
	copy(s.free[i+1:], s.free[i:])
	s.free[i] = n
	// Merge with neighbours.
	if i+1 < len(s.free) && s.free[i].last+1 == s.free[i+1].first {
		s.free[i].last = s.free[i+1].last
		s.free = append(s.free[:i+1], s.free[i+2:]...)
	}
	if i > 0 && s.free[i-1].last+1 == s.free[i].first {
		s.free[i-1].last = s.free[i].last
		s.free = append(s.free[:i], s.free[i+1:]...)
	}
}

// freeBytes is the total free space (for tests and diagnostics).
func (s *iovaSpace) freeBytes() uint64 {
	var n uint64
	for _, sp := range s.free {
		n += sp.last - sp.first + 1
	}
	return n
}
