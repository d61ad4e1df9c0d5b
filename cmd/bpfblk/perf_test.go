package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
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
