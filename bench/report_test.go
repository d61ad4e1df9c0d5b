package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	a := &Result{Name: "mock0n1", Elapsed: 2 * time.Second}
	b := &Result{Name: "mock0n2", Elapsed: 2 * time.Second}
	for i := 0; i < 1000; i++ {
		a.Latency.Record(time.Duration(10_000 + i))
		a.IOs++
		a.Bytes += 4096
		b.Latency.Record(time.Duration(20_000 + 10*i))
		b.IOs++
		b.Bytes += 4096
	}
	b.IOs++
	b.Errors++
	return NewReport([]*Result{a, b})
}

func TestReportJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().JSON(&buf, false); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Total struct {
			IOPS      float64            `json:"iops"`
			MiBPerSec float64            `json:"mib_per_s"`
			LatencyUS map[string]float64 `json:"latency_us"`
		} `json:"total"`
		Targets []struct {
			Name string  `json:"name"`
			IOPS float64 `json:"iops"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if got.Total.IOPS != 1000 || len(got.Targets) != 2 || got.Targets[1].Name != "mock0n2" || got.Targets[1].IOPS != 500 {
		t.Fatalf("unexpected report %+v", got)
	}
	if mib := 2000.0 * 4096 / 2 / (1 << 20); got.Total.MiBPerSec != mib {
		t.Fatalf("MiB/s %v, want %v", got.Total.MiBPerSec, mib)
	}
	for _, k := range []string{"avg", "min", "max", "p50", "p99", "p999"} {
		if _, ok := got.Total.LatencyUS[k]; !ok {
			t.Fatalf("latency_us lacks %q", k)
		}
	}
	if l := got.Total.LatencyUS; l["min"] != 10 || l["max"] < 29.98 || l["max"] > 29.99 || l["p50"] < 10.9 || l["p50"] > 20.1 {
		t.Fatalf("latencies %v", l)
	}
}

func TestReportTableAndPlot(t *testing.T) {
	rep := sampleReport()
	var tab bytes.Buffer
	if err := rep.Table(&tab); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mock0n1", "mock0n2", "total", "p99.999", "1000"} {
		if !strings.Contains(tab.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, tab.String())
		}
	}
	var svg bytes.Buffer
	if err := rep.SVG(&svg, "randread <4k> & QD 128"); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil {
		t.Fatalf("plot is not well-formed XML: %v", err)
	}
	if n := strings.Count(svg.String(), "<polyline"); n != 3 {
		t.Fatalf("plot has %d lines, want 3", n)
	}
	var hist bytes.Buffer
	if err := rep.Histograms(&hist); err != nil || !strings.Contains(hist.String(), "100.000%") {
		t.Fatalf("histogram output: %v\n%s", err, hist.String())
	}
}

// TestReportFioFields: with reads and writes counted apart, the JSON has
// fio's per-direction fields next to bpfblk's, and the table a line for
// each direction.
func TestReportFioFields(t *testing.T) {
	r := &Result{Name: "x", Elapsed: time.Second, Read: &Result{Name: "read", Elapsed: time.Second}, Write: &Result{Name: "write", Elapsed: time.Second}}
	for i := 0; i < 300; i++ {
		d, lat := r.Read, time.Duration(1000+i)
		if i%3 == 0 {
			d, lat = r.Write, time.Duration(5000+i)
		}
		for _, x := range []*Result{r, d} {
			x.IOs++
			x.Bytes += 4096
			x.Latency.Record(lat)
		}
	}
	rep := NewReport([]*Result{r})
	var buf bytes.Buffer
	if err := rep.JSON(&buf, false); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Total struct {
			IOPS  float64 `json:"iops"`
			Read  FioDir  `json:"read"`
			Write FioDir  `json:"write"`
		} `json:"total"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	rd, wr := got.Total.Read, got.Total.Write
	if got.Total.IOPS != 300 || rd.IOPS != 200 || wr.IOPS != 100 || rd.BWBytes != 200*4096 || wr.IOBytes != 100*4096 ||
		rd.TotalIOs != 200 || rd.Runtime != 1000 {
		t.Fatalf("fio fields %+v / %+v", rd, wr)
	}
	if p50 := rd.LatNS.Percentile["50.000000"]; p50 < 1130 || p50 > 1170 || wr.LatNS.Min != 5000 || rd.LatNS.N != 200 {
		t.Fatalf("read p50 %d ns, write min %d ns, read N %d", p50, wr.LatNS.Min, rd.LatNS.N)
	}
	buf.Reset()
	rep.Table(&buf)
	if !strings.Contains(buf.String(), "total read") || !strings.Contains(buf.String(), "x write") {
		t.Fatalf("table without direction lines:\n%s", buf.String())
	}
}
