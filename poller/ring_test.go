package poller

import (
	"runtime"
	"sync"
	"testing"
)

func TestRingCapacityValidation(t *testing.T) {
	for _, c := range []int{0, 1, 3, 6, -4, MaxRingCapacity * 2} {
		if _, err := NewSPSC[int](c); err == nil {
			t.Errorf("NewSPSC(%d) succeeded", c)
		}
		if _, err := NewMPSC[int](c); err == nil {
			t.Errorf("NewMPSC(%d) succeeded", c)
		}
	}
}

func TestSPSCFillDrainWrap(t *testing.T) {
	r, err := NewSPSC[int](8)
	if err != nil {
		t.Fatal(err)
	}
	next, want := 0, 0
	for round := 0; round < 5; round++ {
		for r.Push(next) {
			next++
		}
		if r.Len() != 8 {
			t.Fatalf("round %d: full ring holds %d, want 8", round, r.Len())
		}
		// Pop a few, leaving the ring part full so indices wrap unevenly.
		for i := 0; i < 5; i++ {
			v, ok := r.Pop()
			if !ok || v != want {
				t.Fatalf("round %d: Pop = %d,%v want %d", round, v, ok, want)
			}
			want++
		}
	}
	buf := make([]int, 16)
	n := r.PopBatch(buf)
	if n != 3 {
		t.Fatalf("PopBatch = %d, want 3", n)
	}
	for i := 0; i < n; i++ {
		if buf[i] != want {
			t.Fatalf("PopBatch[%d] = %d want %d", i, buf[i], want)
		}
		want++
	}
	if _, ok := r.Pop(); ok {
		t.Fatal("Pop on empty ring succeeded")
	}
}

func TestSPSCPushBatch(t *testing.T) {
	r, _ := NewSPSC[int](8)
	if n := r.PushBatch([]int{0, 1, 2, 3, 4}); n != 5 {
		t.Fatalf("PushBatch into an empty ring of 8 = %d, want 5", n)
	}
	if n := r.PushBatch([]int{5, 6, 7, 8, 9}); n != 3 {
		t.Fatalf("PushBatch with room for 3 = %d", n)
	}
	if n := r.PushBatch([]int{8}); n != 0 {
		t.Fatalf("PushBatch into a full ring = %d", n)
	}
	buf := make([]int, 6)
	if n := r.PopBatch(buf); n != 6 || buf[0] != 0 || buf[5] != 5 {
		t.Fatalf("PopBatch = %d %v", n, buf)
	}
	if n := r.PushBatch([]int{8, 9, 10, 11, 12, 13, 14}); n != 6 {
		t.Fatalf("PushBatch across the wrap = %d, want 6", n)
	}
	for want := 6; want <= 13; want++ {
		if v, ok := r.Pop(); !ok || v != want {
			t.Fatalf("Pop = %d,%v want %d", v, ok, want)
		}
	}
	if _, ok := r.Pop(); ok {
		t.Fatal("ring not empty")
	}
}

func TestSPSCReleasesReferences(t *testing.T) {
	r, _ := NewSPSC[*int](4)
	v := 7
	r.Push(&v)
	r.Pop()
	for i, p := range r.buf {
		if p != nil {
			t.Fatalf("slot %d still references a popped element", i)
		}
	}
}

// TestSPSCConcurrent streams a sequence through a small ring between two
// goroutines; every value must arrive once, in order.
func TestSPSCConcurrent(t *testing.T) {
	const n = 200_000
	r, _ := NewSPSC[uint64](64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Single pushes and batches of varying size, interleaved.
		var batch [13]uint64
		for i := uint64(1); i <= n; {
			if i%3 == 0 {
				k := min(uint64(1+i%13), n-i+1)
				for j := range k {
					batch[j] = i + j
				}
				m := uint64(r.PushBatch(batch[:k]))
				if m == 0 {
					runtime.Gosched()
				}
				i += m
				continue
			}
			if r.Push(i) {
				i++
			} else {
				runtime.Gosched()
			}
		}
	}()
	var sum, want uint64
	buf := make([]uint64, 7)
	for want < n {
		k := r.PopBatch(buf)
		if k == 0 {
			runtime.Gosched()
			continue
		}
		for _, v := range buf[:k] {
			want++
			if v != want {
				t.Fatalf("got %d, want %d", v, want)
			}
			sum += v
		}
	}
	<-done
	if sum != n*(n+1)/2 {
		t.Fatalf("checksum %d, want %d", sum, n*(n+1)/2)
	}
	if _, ok := r.Pop(); ok {
		t.Fatal("extra element after the stream")
	}
}

// TestMPSCContention has several producers push tagged sequences into a small
// ring: no loss, no duplicate, FIFO per producer, matching checksums.
func TestMPSCContention(t *testing.T) {
	const producers, perProducer = 6, 40_000
	r, _ := NewMPSC[uint64](128)
	var wg sync.WaitGroup
	var sent [producers]uint64
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(0); i < perProducer; {
				v := uint64(p)<<32 | i
				if r.Push(v) {
					sent[p] += v
					i++
				} else {
					runtime.Gosched()
				}
			}
		}()
	}
	var next [producers]uint64
	var got [producers]uint64
	total := 0
	for total < producers*perProducer {
		v, ok := r.Pop()
		if !ok {
			runtime.Gosched()
			continue
		}
		p, seq := v>>32, v&0xffffffff
		if p >= producers {
			t.Fatalf("value %#x from unknown producer", v)
		}
		if seq != next[p] {
			t.Fatalf("producer %d: got seq %d, want %d (lost, duplicated or reordered)", p, seq, next[p])
		}
		next[p]++
		got[p] += v
		total++
	}
	wg.Wait()
	if v, ok := r.Pop(); ok {
		t.Fatalf("extra element %#x", v)
	}
	for p := range sent {
		if sent[p] != got[p] {
			t.Errorf("producer %d: checksum sent %d, received %d", p, sent[p], got[p])
		}
	}
}

func TestMPSCFullAndClose(t *testing.T) {
	r, _ := NewMPSC[int](4)
	for i := 0; i < 4; i++ {
		if !r.Push(i) {
			t.Fatalf("Push %d failed on a ring with room", i)
		}
	}
	if r.Push(99) {
		t.Fatal("Push on a full ring succeeded")
	}
	if v, _ := r.Pop(); v != 0 {
		t.Fatalf("Pop = %d, want 0", v)
	}
	if !r.Push(4) {
		t.Fatal("Push after Pop failed")
	}
	r.Close()
	r.Close()
	if !r.Closed() || r.Push(5) {
		t.Fatal("Push on a closed ring succeeded")
	}
	if r.Drained() {
		t.Fatal("Drained with elements left")
	}
	buf := make([]int, 8)
	if n := r.PopBatch(buf); n != 4 || buf[0] != 1 || buf[3] != 4 {
		t.Fatalf("PopBatch = %d %v", n, buf[:n])
	}
	if !r.Drained() || !r.Empty() {
		t.Fatal("closed empty ring not drained")
	}
}

// TestMPSCCloseRace closes a ring while producers push: every push that
// reported success must be popped, and nothing else.
func TestMPSCCloseRace(t *testing.T) {
	for round := 0; round < 20; round++ {
		r, _ := NewMPSC[int](1024)
		var wg sync.WaitGroup
		var accepted [4]int
		for p := 0; p < 4; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if r.Push(p) {
						accepted[p]++
					}
				}
			}()
		}
		runtime.Gosched()
		r.Close()
		wg.Wait()
		var popped [4]int
		for {
			v, ok := r.Pop()
			if !ok {
				break
			}
			popped[v]++
		}
		if !r.Drained() {
			t.Fatal("ring not drained after popping everything")
		}
		if popped != accepted {
			t.Fatalf("round %d: accepted %v, popped %v", round, accepted, popped)
		}
	}
}
