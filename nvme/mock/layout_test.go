package mock

import (
	"testing"
	"unsafe"
)

// lines returns the first and last 64-byte cache line of [p, p+n).
func lines(p unsafe.Pointer, n uintptr) (uintptr, uintptr) {
	return uintptr(p) / 64, (uintptr(p) + n - 1) / 64
}

// TestCounterLayout pins each queue's counters to cache lines of their own:
// the pads around them are at least linePad bytes, whatever the alignment
// of the allocation, and in a real controller no two queues' counters, nor
// the counters and the controller's other fields, share a line (or the
// 128-byte pair an x86 core prefetches).
func TestCounterLayout(t *testing.T) {
	var q queueCounters
	start := unsafe.Offsetof(q.counters)
	end := unsafe.Offsetof(q.errs) + unsafe.Sizeof(q.errs) // written part: counters, errs
	if start < linePad {
		t.Errorf("counters start at offset %d, want at least %d bytes of pad before", start, linePad)
	}
	if tail := unsafe.Sizeof(q) - end; tail < linePad {
		t.Errorf("%d bytes of pad after the counters, want at least %d", tail, linePad)
	}
	if unsafe.Offsetof(q.errs) != start+unsafe.Sizeof(q.counters) {
		t.Errorf("errs at %d is not right after the counters (%d + %d)", unsafe.Offsetof(q.errs), start, unsafe.Sizeof(q.counters))
	}
	var h ruleHits
	if unsafe.Offsetof(h.n) < linePad || unsafe.Sizeof(h)-unsafe.Offsetof(h.n)-8 < linePad {
		t.Errorf("fault hit counter at %d of %d bytes: want %d bytes of pad on each side", unsafe.Offsetof(h.n), unsafe.Sizeof(h), linePad)
	}
	var s sq
	if unsafe.Offsetof(s.id) < linePad || unsafe.Sizeof(s)-(unsafe.Offsetof(s.cur)+unsafe.Sizeof(s.cur)) < linePad {
		t.Errorf("sq: fields at [%d, %d) of %d bytes: want %d bytes of pad on each side",
			unsafe.Offsetof(s.id), unsafe.Offsetof(s.cur)+unsafe.Sizeof(s.cur), unsafe.Sizeof(s), linePad)
	}
	var c cq
	if unsafe.Offsetof(c.mu) < linePad || unsafe.Sizeof(c)-(unsafe.Offsetof(c.deleted)+unsafe.Sizeof(c.deleted)) < linePad {
		t.Errorf("cq: fields at [%d, %d) of %d bytes: want %d bytes of pad on each side",
			unsafe.Offsetof(c.mu), unsafe.Offsetof(c.deleted)+1, unsafe.Sizeof(c), linePad)
	}

	ctrl, err := NewController(NewBus(), Config{MaxQueues: 8, Namespaces: []NamespaceConfig{{Kind: Null, Size: 1 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	type span struct {
		name     string
		lo, hi   uintptr
		lo2, hi2 uintptr // 128-byte pairs
	}
	var spans []span
	add := func(name string, p unsafe.Pointer, n uintptr) {
		lo, hi := lines(p, n)
		spans = append(spans, span{name, lo, hi, lo / 2, hi / 2})
	}
	for i := range ctrl.qc {
		add("queue counters", unsafe.Pointer(&ctrl.qc[i].counters), end-start)
	}
	add("peer counters", unsafe.Pointer(&ctrl.peer.counters), end-start)
	add("controller fields", unsafe.Pointer(&ctrl.bus), unsafe.Offsetof(ctrl.qc)+unsafe.Sizeof(ctrl.qc))
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			a, b := spans[i], spans[j]
			if a.lo2 <= b.hi2 && b.lo2 <= a.hi2 {
				t.Errorf("%s %d (lines %d-%d) and %s %d (lines %d-%d) share a 128-byte line pair",
					a.name, i, a.lo, a.hi, b.name, j, b.lo, b.hi)
			}
		}
	}
}
