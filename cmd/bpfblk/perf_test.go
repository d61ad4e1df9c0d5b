package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/poller"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestPerfJSON(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "lat.svg")
	code, out, errOut := runCLI("perf", "-w", "randrw", "-M", "50", "-q", "8", "-o", "4096", "-t", "0.2", "--dev", "mock:null", "--dev", "mock", "--json", "--no-pin", "--plot", plot)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep struct {
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
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Total.IOPS <= 0 || rep.Total.MiBPerSec <= 0 || len(rep.Targets) < 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, k := range []string{"avg", "min", "max", "p50", "p99", "p999"} {
		if _, ok := rep.Total.LatencyUS[k]; !ok {
			t.Fatalf("latency_us lacks %s", k)
		}
	}
	if svg, err := os.ReadFile(plot); err != nil || !bytes.Contains(svg, []byte("<polyline")) {
		t.Fatalf("plot: %v", err)
	}
}

func TestPerfBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"-w", "sideways"},
		{"-q", "0"},
		{"-q", "1000000"},
		{"-o", "1000", "--dev", "mock:null"},
		{"-o", "4096", "--dev", "file:" + smallFile(t, 2048)}, // larger than the device
		{"--dev", "floppy"},
		{"-c", "0-"},
		{"-t", "-1"},
		{"stray"},
	} {
		args = append([]string{"perf"}, args...)
		code, out, errOut := runCLI(args...)
		checkUsageError(t, "perf", args, code, out, errOut)
	}
	args := []string{"perf", "--dev", "file:/does/not/exist"}
	code, _, errOut := runCLI(args...)
	checkFailure(t, "perf", args, code, errOut, "no such file")
}

func smallFile(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPerfSPDKFlags: perf takes spdk_nvme_perf's and fio's ways of saying
// things: long names, size suffixes, SPDK core masks, and reports each
// direction of a mixed workload in fio's fields.
func TestPerfSPDKFlags(t *testing.T) {
	code, out, errOut := runCLI("perf", "--io-pattern", "randrw", "--rwmixread", "50", "--io-depth", "4", "--io-size", "8k",
		"--time", "0.2", "--core-mask", "1", "--dev", "mock:null", "--json", "--no-pin")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	type dir struct {
		IOPS     float64 `json:"iops"`
		BWBytes  uint64  `json:"bw_bytes"`
		IOBytes  uint64  `json:"io_bytes"`
		TotalIOs uint64  `json:"total_ios"`
		LatNS    struct {
			Percentile map[string]uint64 `json:"percentile"`
		} `json:"lat_ns"`
	}
	var rep struct {
		Total struct {
			IOs   uint64 `json:"ios"`
			Read  dir    `json:"read"`
			Write dir    `json:"write"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r, w := rep.Total.Read, rep.Total.Write
	if r.TotalIOs == 0 || w.TotalIOs == 0 || r.TotalIOs+w.TotalIOs != rep.Total.IOs || r.BWBytes == 0 || r.IOPS <= 0 {
		t.Fatalf("directions %+v / %+v of %d I/Os", r, w, rep.Total.IOs)
	}
	if r.IOBytes != r.TotalIOs*8192 || w.IOBytes != w.TotalIOs*8192 {
		t.Fatalf("--io-size 8k: %d bytes in %d reads", r.IOBytes, r.TotalIOs)
	}
	if _, ok := r.LatNS.Percentile["99.900000"]; !ok {
		t.Fatalf("lat_ns has no 99.9th percentile: %v", r.LatNS.Percentile)
	}
	// The table splits a mixed workload, and -o takes 1M.
	code, out, errOut = runCLI("perf", "-w", "rw", "-o", "1M", "-q", "2", "-t", "0.1", "--dev", "mock:null", "--no-pin")
	if code != exitOK || !strings.Contains(out, "mock0n1 read") || !strings.Contains(out, "total write") || !strings.Contains(out, "1048576-byte") {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
}

// TestSPDKCoreMask: -c reads a bare number as SPDK does, a hex mask.
func TestSPDKCoreMask(t *testing.T) {
	old := availableCores
	availableCores = func() ([]int, error) { return []int{0, 1, 2, 3}, nil }
	t.Cleanup(func() { availableCores = old })
	for in, want := range map[string]string{"3": "0-1", "0x3": "0-1", "c": "2-3", "[0-3]": "0-3", "0-1": "0-1", "0,2": "0,2", "1": "0", "[1]": "1"} {
		var mask string
		f := &coresFlag{mask: &mask, avail: availableCores}
		if err := f.Set(in); err != nil {
			t.Errorf("-c %s: %v", in, err)
			continue
		}
		cores, err := poller.ParseCoreMask(mask)
		if err != nil || poller.FormatCores(cores) != want {
			t.Errorf("-c %s: cores %v (%v), want %s", in, cores, err, want)
		}
	}
}

func TestParseSuffixed(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4k": 4096, "4K": 4096, "4KiB": 4096, "1M": 1 << 20, "2g": 2 << 30, "0x1000": 4096, "512B": 512} {
		if got, err := parseSuffixed(in); err != nil || got != want {
			t.Errorf("parseSuffixed(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "4x", "1.5k", "-4k", "99999999999G"} {
		if got, err := parseSuffixed(in); err == nil {
			t.Errorf("parseSuffixed(%q) = %d", in, got)
		}
	}
}
