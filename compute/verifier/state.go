package verifier

import "math"

// kind is the abstract type of a register or spilled stack slot.
type kind uint8

const (
	kUninit kind = iota
	kScalar
	kCtx
	kData
	kDataEnd
	kStack
	kMapVal
	kMapValOrNull
	kMapPtr
	kMixed // initialised, but with different types on different paths
)

var kindNames = [...]string{"uninitialised", "scalar", "context pointer", "data pointer",
	"data_end", "stack pointer", "map value pointer", "map value pointer or NULL",
	"map pointer", "value of different types on different paths"}

func (k kind) String() string { return kindNames[k] }

const unbounded = math.MaxUint64

// frozen in the idx of a data pointer means its variable part is no longer
// known to be shared with any other pointer's: see freezeID.
const frozen = 1

// value is an abstract register value.
//
// Scalars: [min, max] unsigned range. Pointers: base + var + off with var in
// [min, max] (unbounded max means unknown). Data pointers also carry id (all
// pointers derived from the same variable part share it) and rng: the program
// proved base+var+rng <= data_end. A data pointer's idx is 0, or frozen.
type value struct {
	k   kind
	min uint64
	max uint64
	off int64
	rng int64
	id  int32
	idx int32 // map index, or stack frame
}

func scalar(min, max uint64) value { return value{k: kScalar, min: min, max: max} }
func constant(v uint64) value      { return scalar(v, v) }
func unknown() value               { return scalar(0, unbounded) }

func (v value) isConst() bool { return v.k == kScalar && v.min == v.max }
func (v value) isPtr() bool   { return v.k >= kCtx && v.k <= kMapPtr }

const stackSlots = 64

// frameState is the abstract stack of one call frame.
type frameState struct {
	init    [8]uint64 // one bit per byte: initialised
	spilled uint64    // one bit per 8-byte slot: slots[i] holds a spilled register
	slots   [stackSlots]value
	fn      int       // function entry slot
	ret     int       // return slot in the caller (frames above 0)
	saved   [11]value // caller's registers at the call
}

func (f *frameState) isInit(o int) bool { return f.init[o>>6]&(1<<(o&63)) != 0 }
func (f *frameState) setInit(o int)     { f.init[o>>6] |= 1 << (o & 63) }

// state is the abstract machine state at one instruction in one call context.
type state struct {
	regs   [11]value
	frames []*frameState
}

func (s *state) clone() *state {
	c := &state{regs: s.regs, frames: make([]*frameState, len(s.frames))}
	for i, f := range s.frames {
		cf := *f
		c.frames[i] = &cf
	}
	return c
}

// joinValue is the least upper bound of a and b (approximately). jid is the
// id given to data pointers that had to be merged.
func joinValue(a, b value, jid int32) value {
	if a == b {
		return a
	}
	if a.k == kUninit || b.k == kUninit {
		return value{}
	}
	if a.k != b.k {
		// NULL-checked lookups: the scalar 0 side joins with the map value side.
		if a.k == kScalar && a.min == 0 && a.max == 0 && (b.k == kMapVal || b.k == kMapValOrNull) {
			b.k = kMapValOrNull
			return b
		}
		if b.k == kScalar && b.min == 0 && b.max == 0 && (a.k == kMapVal || a.k == kMapValOrNull) {
			a.k = kMapValOrNull
			return a
		}
		if (a.k == kMapVal && b.k == kMapValOrNull) || (a.k == kMapValOrNull && b.k == kMapVal) {
			if a.idx == b.idx && a.off == b.off && a.min == b.min && a.max == b.max {
				a.k = kMapValOrNull
				if b.k == kMapValOrNull {
					a.id = b.id
				}
				return a
			}
		}
		return value{k: kMixed}
	}
	switch a.k {
	case kScalar:
		return scalar(min(a.min, b.min), max(a.max, b.max))
	case kCtx, kDataEnd, kMapPtr:
		if a.off == b.off && a.idx == b.idx && a.min == b.min && a.max == b.max {
			return a
		}
		return value{k: kMixed}
	case kData, kStack, kMapVal, kMapValOrNull:
		if a.k == kData && a.idx != b.idx {
			// A frozen pointer (see freezeID) stays frozen.
			a.idx, b.idx = frozen, frozen
			if a == b {
				return a
			}
		}
		if a.idx != b.idx {
			return value{k: kMixed}
		}
		if a.id == b.id && a.off == b.off && a.min == b.min && a.max == b.max {
			a.rng = min(a.rng, b.rng)
			return a
		}
		// Fold both into off + [0, span].
		lo := min(a.off, b.off)
		r := value{k: a.k, idx: a.idx, off: lo, id: jid}
		if a.k == kData {
			// Bytes known readable from the pointer itself survive the fold.
			r.rng = max(0, lo+min(a.rng-a.off, b.rng-b.off))
		}
		if a.k == kMapValOrNull {
			r.id = a.id
		}
		hiA, okA := addSat(a.max, a.off-lo)
		hiB, okB := addSat(b.max, b.off-lo)
		loA, loB := a.min+uint64(a.off-lo), b.min+uint64(b.off-lo)
		r.min = min(loA, loB)
		if okA && okB {
			r.max = max(hiA, hiB)
		} else {
			r.max = unbounded
		}
		return r
	}
	return a
}

func addSat(a uint64, b int64) (uint64, bool) {
	if a == unbounded {
		return unbounded, false
	}
	s := a + uint64(b)
	if s < a || s > 1<<40 {
		return unbounded, false
	}
	return s, true
}

// widen pushes the bounds that moved between old and new to infinity so that
// loops reach a fixpoint.
func widen(old, nv value) value {
	if old.k != nv.k || nv.k == kUninit || nv.k == kMixed {
		return nv
	}
	if nv.max > old.max {
		nv.max = unbounded
	}
	if nv.min < old.min {
		nv.min = 0
	}
	return nv
}

type pair struct {
	a   *value
	b   value
	pos int32
}

// joinScratch is reused across joins to avoid allocating.
type joinScratch struct {
	pairs  []pair
	groups map[groupKey]int32
}

// groupKey identifies data pointers that shared their variable part in both
// joined states and fold the same way, so they may share the joined id.
type groupKey struct {
	ida, idb               int32
	delta                  int64
	amin, amax, bmin, bmax uint64
}

// join merges other into s. It reports whether s changed. Joined data
// pointers get the id jid*128-position of the first member of their group.
func (s *state) join(o *state, jid int32, widening bool, sc *joinScratch) bool {
	pairs := sc.pairs[:0]
	for i := range s.regs {
		pairs = append(pairs, pair{&s.regs[i], o.regs[i], int32(i)})
	}
	changed := false
	for fi, f := range s.frames {
		of := o.frames[fi]
		for w := range f.init {
			if n := f.init[w] & of.init[w]; n != f.init[w] {
				f.init[w] = n
				changed = true
			}
		}
		for i := 0; i < stackSlots; i++ {
			bit := uint64(1) << i
			if f.spilled&bit == 0 {
				continue
			}
			if of.spilled&bit == 0 {
				f.spilled &^= bit
				changed = true
				continue
			}
			pairs = append(pairs, pair{&f.slots[i], of.slots[i], int32(16 + fi*stackSlots + i)})
		}
		for i := range f.saved {
			pairs = append(pairs, pair{&f.saved[i], of.saved[i], int32(600 + fi*11 + i)})
		}
	}
	if sc.groups == nil {
		sc.groups = map[groupKey]int32{}
	}
	groups := sc.groups
	clear(groups)
	sc.pairs = pairs
	for _, p := range pairs {
		a, b := *p.a, p.b
		id := jid*1024 - p.pos
		if a.k == kData && b.k == kData {
			k := groupKey{a.id, b.id, a.off - b.off, a.min, a.max, b.min, b.max}
			if g, ok := groups[k]; ok {
				id = g
			} else {
				groups[k] = id
			}
		}
		nv := joinValue(a, b, id)
		if widening {
			nv = widen(a, nv)
		}
		if nv != a {
			*p.a = nv
			changed = true
		}
	}
	return changed
}
