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
