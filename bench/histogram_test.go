package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsTileTheRange(t *testing.T) {
	// Every bucket starts where the previous one ended, and every value maps
	// to the bucket whose range holds it.
	next := uint64(0)
	for i := 0; i < numBuckets; i++ {
		lo, w := bucketRange(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		for _, v := range []uint64{lo, lo + w/2, lo + w - 1} {
			if b := bucketOf(v); b != i {
				t.Fatalf("value %d maps to bucket %d, want %d", v, b, i)
			}
		}
		// Relative width stays within 1/128 above the linear range.
		if lo >= 1<<linearBits && float64(w)/float64(lo) > 1.0/128+1e-12 {
			t.Fatalf("bucket %d [%d,+%d) is wider than 1/128 of its value", i, lo, w)
		}
		next = lo + w
	}
	if next != maxTrackedV+1 {
		t.Fatalf("buckets end at %d, want %d", next, maxTrackedV+1)
	}
	if b := bucketOf(1 << 60); b != numBuckets-1 {
		t.Fatalf("huge value in bucket %d", b)
	}
}

func TestPercentilesAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]uint64, 100_000)
	for i := range vals {
		// Log-uniform from 100 ns to ~10 ms, like real latencies.
		v := uint64(100 * float64(uint64(1)<<uint(rng.IntN(17))) * (1 + rng.Float64()))
		vals[i] = v
		h.Record(time.Duration(v))
	}
	slices.Sort(vals)
	for _, p := range []float64{0, 1, 50, 90, 99, 99.9, 99.99, 100} {
		got, err := h.Percentile(p)
		if err != nil {
			t.Fatal(err)
		}
		rank := int(float64(len(vals))*p/100+0.999999) - 1
		want := vals[max(rank, 0)]
		if g := uint64(got); g < want || float64(g-want) > float64(want)/128+1 {
			t.Errorf("p%v = %d, exact %d (more than 1/128 off, or below)", p, g, want)
		}
	}
	if h.Min() != time.Duration(vals[0]) || h.Max() != time.Duration(vals[len(vals)-1]) {
		t.Errorf("min/max %v/%v, want %d/%d", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	if _, err := h.Percentile(101); err == nil {
		t.Error("percentile 101 accepted")
	}
}

func TestMergeAndBuckets(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i * 37)
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged %d %v %v %v, want %d %v %v %v", a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	var total uint64
	for _, bk := range a.Buckets() {
		total += bk.Count
		if bk.High < bk.Low {
			t.Fatalf("bucket %+v", bk)
		}
	}
	if total != 1000 {
		t.Fatalf("buckets hold %d values", total)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Record(12345) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h.Record(time.Duration(i & 0xfffff))
	}
}
