package poller

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// TestLayout: what a reactor writes on every iteration (batch, poller list,
// statistics) is on cache lines apart from what other goroutines read to
// send it messages (ring pointer, parked flag), and both are padded from the
// neighbours of the allocation; a poller's run counters, written on every
// run, are padded from other reactors' pollers allocated next to it.
func TestLayout(t *testing.T) {
	line := unsafe.Sizeof(cpu.CacheLinePad{})
	var r Reactor
	senderLo, senderHi := unsafe.Offsetof(r.core), unsafe.Offsetof(r.done)+unsafe.Sizeof(r.done)
	ownedLo, ownedHi := unsafe.Offsetof(r.batch), unsafe.Offsetof(r.stats)+unsafe.Sizeof(r.stats)
	if senderLo < line || ownedLo-senderHi < line || unsafe.Sizeof(r)-ownedHi < line {
		t.Errorf("Reactor: sender-read fields [%d, %d), owned [%d, %d) of %d bytes: want %d bytes between and around them",
			senderLo, senderHi, ownedLo, ownedHi, unsafe.Sizeof(r), line)
	}
	var p Poller
	lo, hi := unsafe.Offsetof(p.name), unsafe.Offsetof(p.idleRuns)+unsafe.Sizeof(p.idleRuns)
	if lo < line || unsafe.Sizeof(p)-hi < line {
		t.Errorf("Poller fields at [%d, %d) of %d bytes: want %d bytes of pad on each side", lo, hi, unsafe.Sizeof(p), line)
	}
	var m MPSC[Message]
	if unsafe.Sizeof(m)-(unsafe.Offsetof(m.slots)+unsafe.Sizeof(m.slots)) < line {
		t.Errorf("MPSC: no pad after the slots header")
	}
}
