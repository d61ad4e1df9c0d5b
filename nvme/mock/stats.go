package mock

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
)

// Like hardware with independent queues, the emulated controller keeps every
// counter a command increments per queue: each queue (by QID, admin = 0) has
// its own block of counters on cache lines that no other queue writes, and
// readers (Get Log Page, Bus.Stats, FaultHandle.Hits) sum the blocks. The
// shared tables a command reads (IOMMU map, namespaces, fault rules) are
// read-mostly and replaced copy-on-write.

// linePad separates data written by different cores. It is two 64-byte cache
// lines, because the adjacent-line prefetcher of x86 cores fetches lines in
// 128-byte pairs.
const linePad = 128

// counters are what one queue's commands count.
type counters struct {
	// busFaults and bus count the DMA of this queue's commands through the
	// bus: faults, and payload bytes by memory kind and direction ([kind][0]
	// read by the device, [kind][1] written by it).
	busFaults atomic.Uint64
	bus       [numKinds][2]atomic.Uint64
	// SMART / Health Information: commands and bytes.
	reads, writes, unitsRead, unitsWritten, mediaErrors atomic.Uint64
}

// queueCounters puts a queue's counters between pads of linePad bytes, so
// that whatever lies next to them in memory (another queue's counters, other
// heap objects) is never on the same pair of cache lines.
type queueCounters struct {
	_ [linePad]byte
	counters
	// errs is the queue's share of the Error Information log, made on the
	// queue's first error.
	errs atomic.Pointer[errRing]
	_    [linePad]byte
}

// errRing holds a queue's newest error log entries and its error count. Only
// the queue's own commands write it (with mu, which a log reader also takes).
type errRing struct {
	mu    sync.Mutex
	count uint64 // errors of this queue, ever
	next  int    // where the next entry goes
	ents  [errLogEntries]errEntry
}

type errEntry struct {
	at  int64 // monotonic time, to merge the queues' entries
	ent nvme.ErrorLogEntry
}

var epoch = time.Now()

// note records a failed command (on the queue's error path only).
func (q *queueCounters) note(ent nvme.ErrorLogEntry) {
	r := q.errs.Load()
	if r == nil {
		r = new(errRing)
		if !q.errs.CompareAndSwap(nil, r) {
			r = q.errs.Load()
		}
	}
	r.mu.Lock()
	r.count++
	r.ents[r.next] = errEntry{at: int64(time.Since(epoch)), ent: ent}
	r.next = (r.next + 1) % errLogEntries
	r.mu.Unlock()
}

// newQueueCounters returns the counter blocks of a controller, one per QID.
func newQueueCounters(n int) []queueCounters { return make([]queueCounters, n) }

// sum adds up a counter over the queues of c, its peer queues and what
// peers counted on it.
func (c *Controller) sum(f func(*counters) *atomic.Uint64) uint64 {
	var n uint64
	for i := range c.qc {
		n += f(&c.qc[i].counters).Load()
	}
	for _, pq := range c.peerQueues() {
		n += f(&pq.st.counters).Load()
	}
	return n + f(&c.peer.counters).Load()
}

// errorQueues returns the counter blocks whose errors the Error
// Information log shows: the queues' and the peer queues'.
func (c *Controller) errorQueues() []*queueCounters {
	qs := make([]*queueCounters, 0, len(c.qc)+len(c.peerQueues()))
	for i := range c.qc {
		qs = append(qs, &c.qc[i])
	}
	for _, pq := range c.peerQueues() {
		qs = append(qs, &pq.st)
	}
	return qs
}

// errorLog merges the queues' error entries, newest first, at most
// errLogEntries of them, numbering them from the total error count down.
func (c *Controller) errorLog() (ents []nvme.ErrorLogEntry, total uint64) {
	var all []errEntry
	for _, q := range c.errorQueues() {
		r := q.errs.Load()
		if r == nil {
			continue
		}
		r.mu.Lock()
		total += r.count
		n := int(min(r.count, errLogEntries))
		for k := 1; k <= n; k++ {
			all = append(all, r.ents[(r.next-k+errLogEntries)%errLogEntries])
		}
		r.mu.Unlock()
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at > all[j].at })
	if len(all) > errLogEntries {
		all = all[:errLogEntries]
	}
	ents = make([]nvme.ErrorLogEntry, len(all))
	for i, e := range all {
		ents[i] = e.ent
		ents[i].ErrorCount = total - uint64(i)
	}
	return ents, total
}

// ruleHits counts a fault rule's hits by one queue, on its own cache lines.
type ruleHits struct {
	_ [linePad]byte
	n atomic.Int64
	_ [linePad]byte
}
