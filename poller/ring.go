package poller

import (
	"sync/atomic"

	"github.com/pkg/errors"
	"golang.org/x/sys/cpu"
)

// MaxRingCapacity bounds ring sizes so that a typo in a configuration cannot
// reserve gigabytes at startup.
const MaxRingCapacity = 1 << 24

func checkCapacity(capacity int) error {
	if capacity < 2 || capacity > MaxRingCapacity || capacity&(capacity-1) != 0 {
		return errors.Errorf("poller: ring capacity %d: must be a power of two in [2, %d]", capacity, MaxRingCapacity)
	}
	return nil
}

// SPSC is a bounded lock-free ring for exactly one producer goroutine and one
// consumer goroutine. Push and Pop never allocate and never block: a full ring
// makes Push return false, an empty ring makes Pop return false.
//
// The producer and consumer indices live on separate cache lines, and each side
// keeps a private copy of the other side's index so that it reads the shared one
// only when the ring looks full (producer) or empty (consumer).
type SPSC[T any] struct {
	_    cpu.CacheLinePad
	tail atomic.Uint64 // next slot to write; written by the producer only
	// headCache is the producer's last view of head.
	headCache uint64
	_         cpu.CacheLinePad
	head      atomic.Uint64 // next slot to read; written by the consumer only
	// tailCache is the consumer's last view of tail.
	tailCache uint64
	_         cpu.CacheLinePad
	mask      uint64
	buf       []T
	_         cpu.CacheLinePad
}

// NewSPSC returns an empty SPSC ring holding up to capacity elements; capacity
// must be a power of two.
func NewSPSC[T any](capacity int) (*SPSC[T], error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	return &SPSC[T]{mask: uint64(capacity - 1), buf: make([]T, capacity)}, nil
}

// Cap returns the ring's capacity.
func (r *SPSC[T]) Cap() int { return len(r.buf) }

// Len returns the number of queued elements. It is exact only when neither side
// is running concurrently.
func (r *SPSC[T]) Len() int { return int(r.tail.Load() - r.head.Load()) }

// Push appends v. It returns false, leaving the ring unchanged, when the ring is
// full. Only the producer goroutine may call Push.
func (r *SPSC[T]) Push(v T) bool {
	t := r.tail.Load()
	if t-r.headCache >= uint64(len(r.buf)) {
		r.headCache = r.head.Load()
		if t-r.headCache >= uint64(len(r.buf)) {
			return false
		}
	}
	r.buf[t&r.mask] = v
	r.tail.Store(t + 1)
	return true
}

// PushBatch appends as many elements of vs as fit, oldest first, publishing
// them with one index update, and returns how many it appended. Only the
// producer goroutine may call PushBatch.
func (r *SPSC[T]) PushBatch(vs []T) int {
	t := r.tail.Load()
	room := uint64(len(r.buf)) - (t - r.headCache)
	if room < uint64(len(vs)) {
		r.headCache = r.head.Load()
		room = uint64(len(r.buf)) - (t - r.headCache)
	}
	n := min(room, uint64(len(vs)))
	for i := uint64(0); i < n; i++ {
		r.buf[(t+i)&r.mask] = vs[i]
	}
	r.tail.Store(t + n)
	return int(n)
}

// Pop removes and returns the oldest element; ok is false when the ring is empty.
// Only the consumer goroutine may call Pop.
func (r *SPSC[T]) Pop() (v T, ok bool) {
	h := r.head.Load()
	if h == r.tailCache {
		r.tailCache = r.tail.Load()
		if h == r.tailCache {
			return v, false
		}
	}
	slot := &r.buf[h&r.mask]
	v = *slot
	var zero T
	*slot = zero // drop the reference so the ring never keeps garbage alive
	r.head.Store(h + 1)
	return v, true
}

// PopBatch moves up to len(dst) elements into dst, oldest first, and returns how
// many it moved. Only the consumer goroutine may call PopBatch.
func (r *SPSC[T]) PopBatch(dst []T) int {
	h := r.head.Load()
	avail := r.tailCache - h
	if avail < uint64(len(dst)) {
		r.tailCache = r.tail.Load()
		avail = r.tailCache - h
	}
	n := min(avail, uint64(len(dst)))
	var zero T
	for i := uint64(0); i < n; i++ {
		slot := &r.buf[(h+i)&r.mask]
		dst[i] = *slot
		*slot = zero
	}
	r.head.Store(h + n)
	return int(n)
}

// MPSC is a bounded lock-free ring for any number of producer goroutines and one
// consumer goroutine. Elements pushed by one producer are popped in the order
// that producer pushed them. Push and Pop never allocate and never block.
//
// Each slot carries a sequence number (D. Vyukov's bounded queue): a producer
// claims a slot by advancing tail with a compare-and-swap, writes the element and
// then publishes it by storing the slot's sequence; the consumer takes a slot
// only once it is published. A producer that has claimed a slot but not yet
// published it delays the consumer at that slot; nothing is lost.
//
// A ring can be closed: after Close, Push fails, and the consumer can tell when
// every element pushed before Close has been popped (Drained). Closing costs the
// producers nothing extra, because the closed flag is a bit of the tail index
// they already compare-and-swap.
type MPSC[T any] struct {
	_     cpu.CacheLinePad
	tail  atomic.Uint64 // next slot to claim, plus closedBit; shared by producers
	_     cpu.CacheLinePad
	head  uint64 // next slot to read; consumer only
	_     cpu.CacheLinePad
	mask  uint64
	slots []mpscSlot[T]
	_     cpu.CacheLinePad
}

type mpscSlot[T any] struct {
	seq atomic.Uint64
	val T
}

// NewMPSC returns an empty MPSC ring holding up to capacity elements; capacity
// must be a power of two.
func NewMPSC[T any](capacity int) (*MPSC[T], error) {
	if err := checkCapacity(capacity); err != nil {
		return nil, err
	}
	r := &MPSC[T]{mask: uint64(capacity - 1), slots: make([]mpscSlot[T], capacity)}
	for i := range r.slots {
		r.slots[i].seq.Store(uint64(i))
	}
	return r, nil
}

// Cap returns the ring's capacity.
func (r *MPSC[T]) Cap() int { return len(r.slots) }

// closedBit marks a closed MPSC ring in its tail index. Indices never reach it:
// at a billion pushes a second that takes three centuries.
const closedBit = 1 << 63

// Push appends v. It returns false, leaving the ring unchanged, when the ring is
// full or closed. Any goroutine may call Push.
func (r *MPSC[T]) Push(v T) bool {
	for {
		t := r.tail.Load()
		if t&closedBit != 0 {
			return false
		}
		slot := &r.slots[t&r.mask]
		seq := slot.seq.Load()
		switch d := int64(seq - t); {
		case d == 0:
			if r.tail.CompareAndSwap(t, t+1) {
				slot.val = v
				slot.seq.Store(t + 1)
				return true
			}
		case d < 0:
			// The slot still holds the element from one lap ago: full.
			return false
		}
		// Another producer claimed this slot first; try the next one.
	}
}

// Pop removes and returns the oldest published element; ok is false when there
// is none. Only the consumer goroutine may call Pop.
func (r *MPSC[T]) Pop() (v T, ok bool) {
	h := r.head
	slot := &r.slots[h&r.mask]
	if slot.seq.Load() != h+1 {
		return v, false
	}
	v = slot.val
	var zero T
	slot.val = zero
	slot.seq.Store(h + r.mask + 1)
	r.head = h + 1
	return v, true
}

// PopBatch moves up to len(dst) published elements into dst and returns how many
// it moved. Only the consumer goroutine may call PopBatch.
func (r *MPSC[T]) PopBatch(dst []T) int {
	n := 0
	for n < len(dst) {
		v, ok := r.Pop()
		if !ok {
			break
		}
		dst[n] = v
		n++
	}
	return n
}

// Empty reports whether no element is queued, published or not. Only the
// consumer goroutine may call it.
func (r *MPSC[T]) Empty() bool { return r.tail.Load()&^closedBit == r.head }

// Close makes every later Push fail. Elements already pushed stay in the ring
// for the consumer. Any goroutine may call Close, more than once.
func (r *MPSC[T]) Close() { r.tail.Or(closedBit) }

// Closed reports whether Close has been called.
func (r *MPSC[T]) Closed() bool { return r.tail.Load()&closedBit != 0 }

// Drained reports whether the ring is closed and every element pushed before
// Close has been popped. Only the consumer goroutine may call it.
func (r *MPSC[T]) Drained() bool { return r.tail.Load() == closedBit|r.head }
