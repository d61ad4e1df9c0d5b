package bench

import (
	"testing"
	"time"
)

func TestWorkloadValidate(t *testing.T) {
	ok := Workload{Pattern: RandRead, BlockSize: 4096, QueueDepth: 128, Duration: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Workload{
		{Pattern: "randomread", BlockSize: 4096, QueueDepth: 1, Duration: time.Second},
		{Pattern: Read, BlockSize: 4096, QueueDepth: 0, Duration: time.Second},
		{Pattern: Read, BlockSize: 4096, QueueDepth: 1 << 20, Duration: time.Second},
		{Pattern: Read, BlockSize: 0, QueueDepth: 1, Duration: time.Second},
		{Pattern: Read, BlockSize: 4096, QueueDepth: 1},
		{Pattern: RW, ReadPercent: 101, BlockSize: 4096, QueueDepth: 1, Duration: time.Second},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := ok.CheckTarget("ns1", 512, 1<<20); err != nil {
		t.Fatal(err)
	}
	w := ok
	w.BlockSize = 1000
	if err := w.CheckTarget("ns1", 512, 1<<20); err == nil {
		t.Fatal("1000-byte blocks on a 512-byte LBA accepted")
	}
	if err := ok.CheckTarget("tiny", 4096, 0); err == nil {
		t.Fatal("empty target accepted")
	}
}

func TestOffsets(t *testing.T) {
	w := Workload{Pattern: Read, BlockSize: 4096, QueueDepth: 1, Duration: time.Second}
	o := NewOffsets(w, 512, 100, 8*3, 1)
	for i, want := range []uint64{100, 108, 116, 100} {
		lba, n, read := o.Next()
		if lba != want || n != 8 || !read {
			t.Fatalf("I/O %d = %d+%d read=%v, want %d+8 read", i, lba, n, read, want)
		}
	}
	w.Pattern, w.ReadPercent = RandRW, 70
	o = NewOffsets(w, 4096, 0, 1000, 7)
	reads, seen := 0, map[uint64]bool{}
	for i := 0; i < 10000; i++ {
		lba, n, read := o.Next()
		if lba >= 1000 || n != 1 {
			t.Fatalf("random I/O %d+%d outside 1000 LBAs", lba, n)
		}
		seen[lba] = true
		if read {
			reads++
		}
	}
	if reads < 6500 || reads > 7500 || len(seen) < 990 {
		t.Fatalf("70%% mix gave %d reads of 10000 over %d distinct LBAs", reads, len(seen))
	}
	if n := testing.AllocsPerRun(1000, func() { o.Next() }); n != 0 {
		t.Fatalf("Next allocates %v times", n)
	}
}
