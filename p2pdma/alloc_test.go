package p2pdma

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pkg/errors"
)

func TestAllocatorBasics(t *testing.T) {
	a, err := NewAllocator(24 << 20) // not a power of two
	if err != nil {
		t.Fatal(err)
	}
	if a.Size() != 24<<20 {
		t.Fatalf("size %d", a.Size())
	}
	// The largest block of a 24 MiB region is 16 MiB, and then 8 MiB.
	big, err := a.Alloc(16 << 20)
	if err != nil || big != 0 {
		t.Fatalf("16 MiB at %#x: %v", big, err)
	}
	eight, err := a.Alloc(5 << 20) // rounds up to 8 MiB
	if err != nil || eight != 16<<20 {
		t.Fatalf("8 MiB block at %#x: %v", eight, err)
	}
	if _, err := a.Alloc(1); !errors.Is(err, ErrFull) {
		t.Fatalf("alloc in a full region: %v", err)
	}
	// The tail past 24 MiB is never handed out.
	if err := a.Free(big); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(big); err == nil {
		t.Fatal("double free accepted")
	}
	if err := a.Free(12345); err == nil {
		t.Fatal("free of a bogus offset accepted")
	}
	small, err := a.Alloc(100)
	if err != nil || small != 0 {
		t.Fatalf("small at %#x: %v", small, err)
	}
	st := a.Stats()
	if st.InUse != 8<<20+MinBlock || st.Blocks != 2 || st.Largest != 8<<20 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := a.Alloc(0); err == nil {
		t.Fatal("zero-byte allocation accepted")
	}
	if _, err := a.Alloc(32 << 20); err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("allocation larger than the region: %v (want a size error, not ErrFull)", err)
	}
	a.Free(small)
	a.Free(eight)
	if st := a.Stats(); st.InUse != 0 || st.Largest != 16<<20 || st.Blocks != 0 {
		t.Fatalf("after freeing everything: %+v", st)
	}
	if _, err := NewAllocator(100); err == nil {
		t.Fatal("region smaller than a block accepted")
	}
}

func TestAllocatorAlignmentAndNoOverlap(t *testing.T) {
	const size = 16 << 20
	a, _ := NewAllocator(size)
	rng := rand.New(rand.NewPCG(1, 2))
	type blk struct{ off, n uint64 }
	var live []blk
	used := make([]bool, size/MinBlock)
	for i := 0; i < 20000; i++ {
		if len(live) > 0 && (rng.IntN(2) == 0 || len(live) > 200) {
			k := rng.IntN(len(live))
			b := live[k]
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
			for p := b.off / MinBlock; p < (b.off+b.n)/MinBlock; p++ {
				used[p] = false
			}
			if err := a.Free(b.off); err != nil {
				t.Fatal(err)
			}
			continue
		}
		n := 1 + rng.IntN(1<<20)
		off, err := a.Alloc(n)
		if errors.Is(err, ErrFull) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		bs := BlockSize(n)
		if off%bs != 0 || off+bs > size {
			t.Fatalf("block of %d bytes at %#x: misaligned or out of range", bs, off)
		}
		for p := off / MinBlock; p < (off+bs)/MinBlock; p++ {
			if used[p] {
				t.Fatalf("block at %#x+%d overlaps a live block", off, bs)
			}
			used[p] = true
		}
		live = append(live, blk{off, bs})
	}
	for _, b := range live {
		a.Free(b.off)
	}
	// Everything merged back: no fragmentation left behind.
	if st := a.Stats(); st.Largest != size || st.InUse != 0 {
		t.Fatalf("after churn: %+v", st)
	}
}

// TestAllocatorConcurrent hammers one allocator from several goroutines
// (run with -race): blocks never overlap and everything merges back.
func TestAllocatorConcurrent(t *testing.T) {
	const size = 8 << 20
	a, _ := NewAllocator(size)
	var owner [size / MinBlock]int32
	var mu sync.Mutex // guards owner (the check, not the allocator)
	var wg sync.WaitGroup
	for g := 1; g <= 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			type blk struct{ off, n uint64 }
			var mine []blk
			for i := 0; i < 2000; i++ {
				if len(mine) > 0 && rng.IntN(3) == 0 {
					b := mine[len(mine)-1]
					mine = mine[:len(mine)-1]
					mu.Lock()
					for p := b.off / MinBlock; p < (b.off+b.n)/MinBlock; p++ {
						owner[p] = 0
					}
					mu.Unlock()
					if err := a.Free(b.off); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				n := MinBlock << rng.IntN(6)
				off, err := a.Alloc(n)
				if errors.Is(err, ErrFull) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for p := off / MinBlock; p < (off+uint64(n))/MinBlock; p++ {
					if owner[p] != 0 {
						t.Errorf("page %d handed to %d while %d holds it", p, g, owner[p])
					}
					owner[p] = int32(g)
				}
				mu.Unlock()
				mine = append(mine, blk{off, uint64(n)})
			}
			for _, b := range mine {
				mu.Lock()
				for p := b.off / MinBlock; p < (b.off+b.n)/MinBlock; p++ {
					owner[p] = 0
				}
				mu.Unlock()
				a.Free(b.off)
			}
		}()
	}
	wg.Wait()
	if st := a.Stats(); st.InUse != 0 || st.Largest != size || st.Blocks != 0 {
		t.Fatalf("after concurrent churn: %+v", st)
	}
}

// TestAllocWaitBackPressure: a full allocator delays AllocWait until a
// block is freed, and gives up only when the context ends.
func TestAllocWaitBackPressure(t *testing.T) {
	a, _ := NewAllocator(64 << 10)
	all, err := a.Alloc(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := a.AllocWait(context.Background(), MinBlock)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("AllocWait returned %v from a full allocator", err)
	case <-time.After(20 * time.Millisecond):
	}
	a.Free(all)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AllocWait did not wake up after a free")
	}
	if a.Stats().Waits != 1 {
		t.Fatalf("waits %d", a.Stats().Waits)
	}
	a.Alloc(32 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := a.AllocWait(ctx, 64<<10); !errors.Is(err, ErrFull) {
		t.Fatalf("AllocWait past its deadline: %v", err)
	}
}
