package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is what one target (or the total) did in a run.
type Result struct {
	Name    string
	IOs     uint64 // completed I/Os, errors included
	Errors  uint64 // I/Os that completed with an error
	Bytes   uint64 // payload bytes of the successful I/Os
	Elapsed time.Duration
	Latency Histogram // submission to completion, per I/O

	// Read and Write split the counts above by direction (their own Read
	// and Write are nil). Run fills both; a Result built otherwise may
	// leave them nil.
	Read, Write *Result
}

// Percentiles reported in tables; JSON carries the CLI contract's subset.
var tablePercentiles = []float64{50, 90, 99, 99.9, 99.99, 99.999}

// LatencyUS is the latency summary of the CLI contract, in microseconds.
type LatencyUS struct {
	Avg    float64 `json:"avg"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
	P999   float64 `json:"p999"`
	P9999  float64 `json:"p9999"`
	P99999 float64 `json:"p99999"`
}

// Summary is one line of a report, as JSON.
type Summary struct {
	Name      string    `json:"name,omitempty"`
	IOs       uint64    `json:"ios"`
	Errors    uint64    `json:"errors"`
	IOPS      float64   `json:"iops"`
	MiBPerSec float64   `json:"mib_per_s"`
	Seconds   float64   `json:"seconds"`
	LatencyUS LatencyUS `json:"latency_us"`
	Buckets   []Bucket  `json:"histogram,omitempty"`

	// ReadFio and WriteFio are each direction in the fields of fio's JSON
	// output (jobs[].read and jobs[].write), next to the fields above.
	ReadFio  *FioDir `json:"read,omitempty"`
	WriteFio *FioDir `json:"write,omitempty"`
}

// FioDir is one direction of a result in fio's field names and units:
// bytes, bytes per second, milliseconds of run time, and latencies in
// nanoseconds. The latency is bpfblk's, from the poll that submitted an I/O
// to the poll that completed it: fio's lat_ns (submission plus completion).
type FioDir struct {
	IOBytes  uint64  `json:"io_bytes"`
	BWBytes  uint64  `json:"bw_bytes"`
	IOPS     float64 `json:"iops"`
	Runtime  int64   `json:"runtime"`
	TotalIOs uint64  `json:"total_ios"`
	Errors   uint64  `json:"total_err"`
	LatNS    FioLat  `json:"lat_ns"`
}

// FioLat is fio's latency object: min, max, mean, count and percentiles
// keyed as fio keys them ("99.900000").
type FioLat struct {
	Min        uint64            `json:"min"`
	Max        uint64            `json:"max"`
	Mean       float64           `json:"mean"`
	N          uint64            `json:"N"`
	Percentile map[string]uint64 `json:"percentile"`
}

// fioPercentiles are the percentiles of FioLat: fio's defaults.
var fioPercentiles = []float64{1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}

// fio returns r in fio's terms.
func (r *Result) fio() *FioDir {
	f := &FioDir{IOBytes: r.Bytes, TotalIOs: r.IOs, Errors: r.Errors, Runtime: r.Elapsed.Milliseconds()}
	if secs := r.Elapsed.Seconds(); secs > 0 {
		f.IOPS = float64(r.IOs-r.Errors) / secs
		f.BWBytes = uint64(float64(r.Bytes) / secs)
	}
	h := &r.Latency
	f.LatNS = FioLat{Min: uint64(h.Min()), Max: uint64(h.Max()), Mean: float64(h.Mean()), N: h.Count(), Percentile: map[string]uint64{}}
	if h.Count() > 0 {
		for _, p := range fioPercentiles {
			d, _ := h.Percentile(p)
			f.LatNS.Percentile[fmt.Sprintf("%f", p)] = uint64(d)
		}
	}
	return f
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func pct(h *Histogram, p float64) float64 {
	d, _ := h.Percentile(p) // p is one of ours, always in range
	return us(d)
}

// Summarize computes the report line for r; withBuckets adds the histogram.
func (r *Result) Summarize(withBuckets bool) Summary {
	s := Summary{Name: r.Name, IOs: r.IOs, Errors: r.Errors, Seconds: r.Elapsed.Seconds()}
	if secs := r.Elapsed.Seconds(); secs > 0 {
		s.IOPS = float64(r.IOs-r.Errors) / secs
		s.MiBPerSec = float64(r.Bytes) / secs / (1 << 20)
	}
	h := &r.Latency
	s.LatencyUS = LatencyUS{
		Avg: us(h.Mean()), Min: us(h.Min()), Max: us(h.Max()),
		P50: pct(h, 50), P90: pct(h, 90), P99: pct(h, 99), P999: pct(h, 99.9),
		P9999: pct(h, 99.99), P99999: pct(h, 99.999),
	}
	if withBuckets {
		s.Buckets = h.Buckets()
	}
	if r.Read != nil && r.Write != nil {
		s.ReadFio, s.WriteFio = r.Read.fio(), r.Write.fio()
	}
	return s
}

// Report is a whole run: per-target results and their total.
type Report struct {
	Targets []*Result
	Total   *Result
}

// NewReport builds a report whose total merges the targets' counts and
// histograms; the total's elapsed time is the longest target's.
func NewReport(targets []*Result) *Report {
	t := &Result{Name: "total"}
	split := len(targets) > 0
	for _, r := range targets {
		split = split && r.Read != nil && r.Write != nil
	}
	if split {
		t.Read, t.Write = &Result{Name: "read"}, &Result{Name: "write"}
	}
	for _, r := range targets {
		t.add(r)
		if split {
			t.Read.add(r.Read)
			t.Write.add(r.Write)
		}
	}
	return &Report{Targets: targets, Total: t}
}

// add merges r's counts into t.
func (t *Result) add(r *Result) {
	t.IOs += r.IOs
	t.Errors += r.Errors
	t.Bytes += r.Bytes
	t.Elapsed = max(t.Elapsed, r.Elapsed)
	t.Latency.Merge(&r.Latency)
}

// JSON writes the report in the CLI contract's form (cmd/bpfblk's package
// doc): {"total": {...}, "targets": [{...}, ...]}.
func (rep *Report) JSON(w io.Writer, withBuckets bool) error {
	out := struct {
		Total   Summary   `json:"total"`
		Targets []Summary `json:"targets"`
	}{Total: rep.Total.Summarize(withBuckets), Targets: []Summary{}}
	out.Total.Name = ""
	for _, r := range rep.Targets {
		out.Targets = append(out.Targets, r.Summarize(withBuckets))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Table writes the report as a table for people: one line per target and a
// total, latencies in microseconds. Where a result has both reads and
// writes, a line for each direction follows its line.
func (rep *Report) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "target\tIOPS\tMiB/s\terrors\tavg\tmin\tmax")
	for _, p := range tablePercentiles {
		fmt.Fprintf(tw, "\tp%g", p)
	}
	fmt.Fprintln(tw, "\t")
	line := func(name string, r *Result) {
		s := r.Summarize(false)
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%d\t%.1f\t%.1f\t%.1f", name, s.IOPS, s.MiBPerSec, s.Errors, s.LatencyUS.Avg, s.LatencyUS.Min, s.LatencyUS.Max)
		for _, p := range tablePercentiles {
			fmt.Fprintf(tw, "\t%.1f", pct(&r.Latency, p))
		}
		fmt.Fprintln(tw, "\t")
	}
	for _, r := range append(append([]*Result{}, rep.Targets...), rep.Total) {
		line(r.Name, r)
		if r.Read != nil && r.Write != nil && r.Read.IOs > 0 && r.Write.IOs > 0 {
			line(r.Name+" read", r.Read)
			line(r.Name+" write", r.Write)
		}
	}
	fmt.Fprintln(tw, "latency in microseconds\t")
	return tw.Flush()
}

// Histograms writes every non-empty bucket of every target, for --histogram.
func (rep *Report) Histograms(w io.Writer) error {
	for _, r := range append(append([]*Result{}, rep.Targets...), rep.Total) {
		fmt.Fprintf(w, "latency histogram of %s (%d I/Os)\n", r.Name, r.Latency.Count())
		fmt.Fprintf(w, "%14s %14s %10s %8s\n", "from_us", "to_us", "count", "cum%")
		var cum uint64
		for _, b := range r.Latency.Buckets() {
			cum += b.Count
			fmt.Fprintf(w, "%14.3f %14.3f %10d %7.3f%%\n", us(b.Low), us(b.High), b.Count, 100*float64(cum)/float64(r.Latency.Count()))
		}
	}
	_, err := fmt.Fprintln(w)
	return err
}
