package engine

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// callHelper runs helper id with r1..r5 and returns r0; the interpreter and
// the JIT's exit to Go both call it. Every pointer argument is checked
// against the regions like a load or store. It has one case for every helper
// of abi's table, holding the helper's implementation
// (TestEveryHelperImplemented checks that none is missing): adding a helper
// is a row in that table and a case here. The implementations stay inside
// one switch: map-heavy programs call helpers once per record, and a method
// per helper (an extra call) cost BenchmarkAggregateHashMap 2-5%.
func (m *Instance) callHelper(pc int, id uint32) (uint64, error) {
	r := &m.regs
	switch id {
	case abi.HelperMapLookup:
		mi, err := m.mapArg(pc, r[1])
		if err != nil {
			return 0, err
		}
		key := m.bytesAt(r[2], uint64(mi.spec.KeySize))
		if key == nil {
			return 0, m.helperFault(pc, r[2], uint64(mi.spec.KeySize), "bpf_map_lookup_elem key")
		}
		m.charge(uint64(mi.spec.KeySize))
		v := mi.lookup(key)
		if v < 0 {
			return 0, nil
		}
		return regionAddr(regionMap0+mi.index, uint64(v)*uint64(mi.spec.ValueSize)), nil
	case abi.HelperMapUpdate:
		mi, err := m.mapArg(pc, r[1])
		if err != nil {
			return 0, err
		}
		if mi.spec.ReadOnly {
			return negErrno(abi.EINVAL), nil
		}
		key := m.bytesAt(r[2], uint64(mi.spec.KeySize))
		if key == nil {
			return 0, m.helperFault(pc, r[2], uint64(mi.spec.KeySize), "bpf_map_update_elem key")
		}
		val := m.bytesAt(r[3], uint64(mi.spec.ValueSize))
		if val == nil {
			return 0, m.helperFault(pc, r[3], uint64(mi.spec.ValueSize), "bpf_map_update_elem value")
		}
		m.charge(uint64(len(key)) + uint64(len(val)))
		return uint64(mi.update(key, val, r[4])), nil
	case abi.HelperMapDelete:
		mi, err := m.mapArg(pc, r[1])
		if err != nil {
			return 0, err
		}
		key := m.bytesAt(r[2], uint64(mi.spec.KeySize))
		if key == nil {
			return 0, m.helperFault(pc, r[2], uint64(mi.spec.KeySize), "bpf_map_delete_elem key")
		}
		m.charge(uint64(len(key)))
		return uint64(mi.delete(key)), nil
	case abi.HelperEmit:
		return uint64(m.emitValue(r[2])), nil
	case abi.HelperMemcmp:
		n := r[3]
		if n > abi.MaxCmpLen {
			return negErrno(abi.EINVAL), nil
		}
		a, b := m.bytesAt(r[1], n), m.bytesAt(r[2], n)
		if a == nil {
			return 0, m.helperFault(pc, r[1], n, "bpfblk_memcmp a")
		}
		if b == nil {
			return 0, m.helperFault(pc, r[2], n, "bpfblk_memcmp b")
		}
		m.charge(2 * n)
		return uint64(int64(bytes.Compare(a, b))), nil
	case abi.HelperMemmem:
		hn, nn := r[2], r[4]
		if hn > 1<<31 || nn > abi.MaxCmpLen {
			return negErrno(abi.EINVAL), nil
		}
		h, n := m.bytesAt(r[1], hn), m.bytesAt(r[3], nn)
		if h == nil {
			return 0, m.helperFault(pc, r[1], hn, "bpfblk_memmem haystack")
		}
		if n == nil {
			return 0, m.helperFault(pc, r[3], nn, "bpfblk_memmem needle")
		}
		m.charge(hn + nn)
		return uint64(int64(bytes.Index(h, n))), nil
	case abi.HelperTrace:
		if r[2] > abi.MaxCmpLen {
			return negErrno(abi.EINVAL), nil
		}
		f := m.bytesAt(r[1], r[2])
		if f == nil {
			return 0, m.helperFault(pc, r[1], r[2], "bpf_trace_printk format")
		}
		m.charge(r[2])
		if m.trace == nil {
			return 0, nil
		}
		s := formatTrace(f, r[3], r[4], r[5])
		n, _ := m.trace.Write(s)
		return uint64(n), nil
	}
	return 0, fmt.Errorf("engine: instruction %d: unknown helper %d", pc, id)
}

func (m *Instance) mapArg(pc int, h uint64) (*mapInst, error) {
	i := h &^ mapHandleBase
	if h&mapHandleBase != mapHandleBase || i >= uint64(len(m.maps)) {
		return nil, fmt.Errorf("engine: instruction %d: %#x is not a map pointer", pc, h)
	}
	return m.maps[i], nil
}

// helperFault reports a helper's access of n bytes at addr. n was checked
// against the largest length the helper accepts, so it fits an int.
func (m *Instance) helperFault(pc int, addr, n uint64, what string) error {
	return &Fault{PC: pc, Addr: addr, Size: int(min(n, 1<<40)), What: "helper " + what}
}

// charge takes the cost of a helper that read n bytes from the budget: one
// unit per 16 bytes, about the time an instruction takes. The run notices a
// negative slice when the helper returns (see refill).
func (m *Instance) charge(n uint64) { m.budget -= int64(n >> 4) }

// formatTrace expands a bpf_trace_printk format with up to three arguments
// (%d %i %u %x %c %%, with l/ll modifiers). It allocates and is only called
// when a trace writer is set.
func formatTrace(f []byte, args ...uint64) []byte {
	if i := bytes.IndexByte(f, 0); i >= 0 {
		f = f[:i]
	}
	var out []byte
	ai := 0
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '%' || i+1 >= len(f) {
			out = append(out, c)
			continue
		}
		i++
		long := 0
		for i < len(f) && f[i] == 'l' {
			long++
			i++
		}
		if i >= len(f) {
			break
		}
		if f[i] == '%' {
			out = append(out, '%')
			continue
		}
		var a uint64
		if ai < len(args) {
			a = args[ai]
		}
		ai++
		if long == 0 {
			a = uint64(uint32(a))
		}
		switch f[i] {
		case 'd', 'i':
			if long == 0 {
				out = strconv.AppendInt(out, int64(int32(a)), 10)
			} else {
				out = strconv.AppendInt(out, int64(a), 10)
			}
		case 'u':
			out = strconv.AppendUint(out, a, 10)
		case 'x':
			out = strconv.AppendUint(out, a, 16)
		case 'c':
			out = append(out, byte(a))
		default:
			out = append(out, '%', f[i])
		}
	}
	return out
}

func negErrno(e int64) uint64 { return uint64(-e) }
