package engine

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sort"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// mapInst is one core's instance of a map (or, for a read-only map, the one
// instance every core shares). Values live in one contiguous buffer that is
// the map's region of the address space, so a value pointer returned by
// lookup is an ordinary checked address. Nothing allocates after creation: a
// hash map has a fixed open-addressing table of slots, keys stored by value
// index next to the values, and a free list of value indexes.
type mapInst struct {
	spec   *MapSpec
	index  int
	values []byte
	shared bool // a read-only map shared by every instance: never reset

	// hash maps only
	keys    []byte  // value index -> key
	state   []uint8 // slot -> slotEmpty/slotUsed/slotDeleted
	slotVal []int32 // slot -> value index
	free    []int32 // free value indexes (a stack)
	mask    uint32
	count   int
}

const (
	slotEmpty   = 0
	slotUsed    = 1
	slotDeleted = 2
)

// hashSlots is the size of a hash map's slot table: a power of two, at
// least twice max_entries (so probes stay short) and at least 8.
func hashSlots(maxEntries uint32) uint64 {
	n := uint64(8)
	for n < 2*uint64(maxEntries) {
		n <<= 1
	}
	return n
}

// newMapInst allocates a map. The loader has checked the sizes
// (checkMapSize) and the program's total (Program.CheckInstances).
func newMapInst(s *MapSpec, index int) *mapInst {
	m := &mapInst{spec: s, index: index, values: make([]byte, int(s.ValueSize)*int(s.MaxEntries))}
	if s.Kind == verifier.MapHash {
		n := hashSlots(s.MaxEntries)
		m.mask = uint32(n - 1)
		m.keys = make([]byte, int(s.KeySize)*int(s.MaxEntries))
		m.state = make([]uint8, n)
		m.slotVal = make([]int32, n)
		m.free = make([]int32, 0, s.MaxEntries)
	}
	m.reset()
	return m
}

// reset restores the initial contents (zero, or the section's data).
func (m *mapInst) reset() {
	clear(m.values)
	copy(m.values, m.spec.Init)
	if m.spec.Kind == verifier.MapHash {
		clear(m.state)
		m.free = m.free[:0]
		for i := int32(m.spec.MaxEntries) - 1; i >= 0; i-- {
			m.free = append(m.free, i)
		}
		m.count = 0
	}
}

func hashKey(k []byte) uint32 {
	h := uint32(2166136261)
	for _, b := range k {
		h ^= uint32(b)
		h *= 16777619
	}
	return h
}

// find returns the slot holding key, or -1.
func (m *mapInst) find(key []byte) int {
	ks := int(m.spec.KeySize)
	for i, h := uint32(0), hashKey(key); i <= m.mask; i++ {
		s := (h + i) & m.mask
		switch m.state[s] {
		case slotEmpty:
			return -1
		case slotUsed:
			v := int(m.slotVal[s])
			if bytes.Equal(m.keys[v*ks:(v+1)*ks], key) {
				return int(s)
			}
		}
	}
	return -1
}

// lookup returns the value index for key, or -1.
func (m *mapInst) lookup(key []byte) int {
	if m.spec.Kind == verifier.MapArray {
		i := binary.LittleEndian.Uint32(key)
		if i >= m.spec.MaxEntries {
			return -1
		}
		return int(i)
	}
	s := m.find(key)
	if s < 0 {
		return -1
	}
	return int(m.slotVal[s])
}

// update stores value under key and returns 0 or a negative errno.
func (m *mapInst) update(key, value []byte, flags uint64) int64 {
	vs := int(m.spec.ValueSize)
	if flags > abi.UpdateExist || m.spec.ReadOnly {
		return -abi.EINVAL
	}
	if m.spec.Kind == verifier.MapArray {
		i := binary.LittleEndian.Uint32(key)
		if i >= m.spec.MaxEntries {
			return -abi.E2BIG
		}
		if flags == abi.UpdateNoExist {
			return -abi.EEXIST
		}
		copy(m.values[int(i)*vs:], value[:vs])
		return 0
	}
	if s := m.find(key); s >= 0 {
		if flags == abi.UpdateNoExist {
			return -abi.EEXIST
		}
		copy(m.values[int(m.slotVal[s])*vs:], value[:vs])
		return 0
	}
	if flags == abi.UpdateExist {
		return -abi.ENOENT
	}
	if len(m.free) == 0 {
		return -abi.E2BIG
	}
	ks := int(m.spec.KeySize)
	for i, h := uint32(0), hashKey(key); i <= m.mask; i++ {
		s := (h + i) & m.mask
		if m.state[s] != slotUsed {
			v := m.free[len(m.free)-1]
			m.free = m.free[:len(m.free)-1]
			m.state[s] = slotUsed
			m.slotVal[s] = v
			copy(m.keys[int(v)*ks:], key)
			copy(m.values[int(v)*vs:], value[:vs])
			m.count++
			return 0
		}
	}
	return -abi.E2BIG
}

// delete removes key and returns 0 or a negative errno.
func (m *mapInst) delete(key []byte) int64 {
	if m.spec.Kind == verifier.MapArray || m.spec.ReadOnly {
		return -abi.EINVAL
	}
	s := m.find(key)
	if s < 0 {
		return -abi.ENOENT
	}
	v := m.slotVal[s]
	vs := int(m.spec.ValueSize)
	clear(m.values[int(v)*vs : int(v+1)*vs])
	m.state[s] = slotDeleted
	m.free = append(m.free, v)
	m.count--
	return 0
}

// MapData is a host-readable snapshot of a map: its entries sorted by key.
// Array maps list every index with a little-endian uint32 key.
type MapData struct {
	Name      string
	Kind      verifier.MapKind
	KeySize   int
	ValueSize int
	Entries   []MapEntry
}

// MapEntry is one key and its value.
type MapEntry struct {
	Key, Value []byte
}

func (m *mapInst) snapshot() MapData {
	s := m.spec
	d := MapData{Name: s.Name, Kind: s.Kind, KeySize: int(s.KeySize), ValueSize: int(s.ValueSize)}
	vs := int(s.ValueSize)
	if s.Kind == verifier.MapArray {
		for i := 0; i < int(s.MaxEntries); i++ {
			k := binary.LittleEndian.AppendUint32(nil, uint32(i))
			d.Entries = append(d.Entries, MapEntry{Key: k, Value: bytes.Clone(m.values[i*vs : (i+1)*vs])})
		}
		return d
	}
	ks := int(s.KeySize)
	for slot, st := range m.state {
		if st != slotUsed {
			continue
		}
		v := int(m.slotVal[slot])
		d.Entries = append(d.Entries, MapEntry{
			Key:   bytes.Clone(m.keys[v*ks : (v+1)*ks]),
			Value: bytes.Clone(m.values[v*vs : (v+1)*vs]),
		})
	}
	sort.Slice(d.Entries, func(i, j int) bool { return bytes.Compare(d.Entries[i].Key, d.Entries[j].Key) < 0 })
	return d
}

// MergeMaps combines the per-core instances of every writable map of the
// instances' program into one host-readable view. Values with the same key are
// added word by word: as little-endian uint64 words when the value size is a
// multiple of 8, uint32 words when it is a multiple of 4, bytes otherwise. This
// is the natural merge for counters and sums; programs that need another
// merge read Instance.Maps per core. Read-only maps (.rodata) are left out.
func MergeMaps(insts ...*Instance) []MapData {
	if len(insts) == 0 {
		return nil
	}
	var out []MapData
	for mi := range insts[0].maps {
		if insts[0].maps[mi].spec.ReadOnly {
			continue
		}
		merged := insts[0].maps[mi].snapshot()
		others := make([][]MapEntry, 0, len(insts)-1)
		for _, inst := range insts[1:] {
			others = append(others, inst.maps[mi].snapshot().Entries)
		}
		mergeEntries(&merged, others...)
		out = append(out, merged)
	}
	return out
}

// MergeMapData adds the map snapshots of more into a, by map name, with the
// rule of MergeMaps (values of the same key added word by word, over the
// shorter value if their sizes differ), and returns a. A map a does not have
// is appended. Entries come out sorted by key; what is added is copied, so a
// shares no memory with more. It merges the maps of several devices, or of a
// device and the host, that ran the same program.
func MergeMapData(a []MapData, more ...[]MapData) []MapData {
	for _, b := range more {
		for _, mb := range b {
			i := slices.IndexFunc(a, func(m MapData) bool { return m.Name == mb.Name })
			if i < 0 {
				a = append(a, MapData{Name: mb.Name, Kind: mb.Kind, KeySize: mb.KeySize, ValueSize: mb.ValueSize})
				i = len(a) - 1
			}
			mergeEntries(&a[i], cloneEntries(mb.Entries))
		}
	}
	return a
}

// mergeEntries adds the entries of lists into m (keeping them, not copies)
// and leaves m's entries sorted by key: the one merge of MergeMaps and
// MergeMapData.
func mergeEntries(m *MapData, lists ...[]MapEntry) {
	index := make(map[string]int, len(m.Entries))
	for i, e := range m.Entries {
		index[string(e.Key)] = i
	}
	for _, entries := range lists {
		for _, e := range entries {
			if i, ok := index[string(e.Key)]; ok {
				addWords(m.Entries[i].Value, e.Value)
				continue
			}
			index[string(e.Key)] = len(m.Entries)
			m.Entries = append(m.Entries, e)
		}
	}
	sort.Slice(m.Entries, func(i, j int) bool {
		return bytes.Compare(m.Entries[i].Key, m.Entries[j].Key) < 0
	})
}

func cloneEntries(es []MapEntry) []MapEntry {
	out := make([]MapEntry, len(es))
	for i, e := range es {
		out[i] = MapEntry{Key: bytes.Clone(e.Key), Value: bytes.Clone(e.Value)}
	}
	return out
}

// addWords adds src into dst word by word (see MergeMaps), over the shorter
// of the two.
func addWords(dst, src []byte) {
	n := min(len(dst), len(src))
	switch {
	case n%8 == 0:
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(dst[i:])+binary.LittleEndian.Uint64(src[i:]))
		}
	case n%4 == 0:
		for i := 0; i < n; i += 4 {
			binary.LittleEndian.PutUint32(dst[i:], binary.LittleEndian.Uint32(dst[i:])+binary.LittleEndian.Uint32(src[i:]))
		}
	default:
		for i := 0; i < n; i++ {
			dst[i] += src[i]
		}
	}
}
