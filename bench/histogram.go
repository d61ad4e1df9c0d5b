package bench

import (
	"math"
	"math/bits"
	"time"

	"github.com/pkg/errors"
)

// Histogram is a log-linear latency histogram in the manner of HdrHistogram and
// SPDK's histogram_data: values below 256 ns have a bucket each; above that,
// every power of two is split into 128 equal buckets, so a recorded value is
// known to within 1/128 (0.8%) of itself. Memory is fixed (about 36 KiB, up to
// 2^42 ns ≈ 73 minutes; larger values land in the last bucket), and Record
// never allocates. A Histogram is owned by one goroutine; merge per-core
// histograms at the end.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64
	min    uint64
	max    uint64
}

const (
	linearBits  = 8              // values < 1<<linearBits have exact buckets
	subBits     = linearBits - 1 // buckets per octave = 1<<subBits
	maxOctave   = 42             // values >= 1<<maxOctave are clamped
	numBuckets  = 1<<linearBits + (maxOctave-linearBits)<<subBits
	maxTrackedV = 1<<maxOctave - 1
)

// bucketOf returns the bucket index of v (nanoseconds).
func bucketOf(v uint64) int {
	if v < 1<<linearBits {
		return int(v)
	}
	if v > maxTrackedV {
		v = maxTrackedV
	}
	msb := bits.Len64(v) - 1 // >= linearBits
	shift := msb - subBits
	sub := int(v>>shift) - 1<<subBits // in [0, 1<<subBits)
	return 1<<linearBits + (msb-linearBits)<<subBits + sub
}

// bucketRange returns the smallest value of bucket i and the bucket's width.
func bucketRange(i int) (lo, width uint64) {
	if i < 1<<linearBits {
		return uint64(i), 1
	}
	j := i - 1<<linearBits
	msb := j>>subBits + linearBits
	sub := uint64(j & (1<<subBits - 1))
	shift := msb - subBits
	return (1<<subBits + sub) << shift, 1 << shift
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Reset empties the histogram.
func (h *Histogram) Reset() { *h = Histogram{} }

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest recorded value (exact).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest recorded value (exact).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the average of the recorded values (exact).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Percentile returns the value below or at which pct percent of the recorded
// values lie, as the upper bound of the bucket that holds it (never above the
// largest recorded value). pct must be in [0, 100].
func (h *Histogram) Percentile(pct float64) (time.Duration, error) {
	if pct < 0 || pct > 100 || math.IsNaN(pct) {
		return 0, errors.Errorf("bench: percentile %v is outside [0, 100]", pct)
	}
	if h.n == 0 {
		return 0, nil
	}
	rank := uint64(math.Ceil(pct / 100 * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bucketRange(i)
			return time.Duration(min(lo+w-1, h.max)), nil
		}
	}
	return time.Duration(h.max), nil
}

// Bucket is one non-empty histogram bucket: Count values in [Low, High].
type Bucket struct {
	Low   time.Duration `json:"low_ns"`
	High  time.Duration `json:"high_ns"`
	Count uint64        `json:"count"`
}

// Buckets returns the non-empty buckets in increasing order.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, w := bucketRange(i)
		out = append(out, Bucket{Low: time.Duration(lo), High: time.Duration(lo + w - 1), Count: c})
	}
	return out
}
