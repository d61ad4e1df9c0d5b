package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/bdev/device"
)

// demoReference computes the default scan's output in plain Go.
func demoReference(t *testing.T, pattern string) (lines []string) {
	t.Helper()
	set, err := device.Open([]string{"mock"}, device.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for i, b := range set.Bdevs {
		data := device.DemoData(i, b.BlockSize(), b.NumBlocks())
		for blk := uint64(0); blk < b.NumBlocks(); blk++ {
			if bytes.Contains(data[blk*uint64(b.BlockSize()):(blk+1)*uint64(b.BlockSize())], []byte(pattern)) {
				lines = append(lines, fmt.Sprintf("%s %d", b.Name(), blk))
			}
		}
	}
	return lines
}

func TestScanDefault(t *testing.T) {
	code, out, errOut := runCLI("scan")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := demoReference(t, device.DemoPattern)
	got := strings.Split(strings.TrimSpace(out), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("scan printed %d lines, the reference has %d", len(got), len(want))
	}
	// With no flags the compute controller of the demo takes every target.
	for _, s := range []string{"scanned", "bytes to host", "selectivity", "mock0n1", "engine mock2", "through host memory 0 B"} {
		if !strings.Contains(errOut, s) {
			t.Fatalf("summary lacks %q:\n%s", s, errOut)
		}
	}
}

func TestScanSetAndJSON(t *testing.T) {
	code, out, errOut := runCLI("scan", "--set", "pattern=WARN", "--engine", "host", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep scanReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := demoReference(t, "WARN")
	if rep.Matches != uint64(len(want)) || rep.BytesScanned == 0 || rep.BytesToHost != rep.BytesScanned || len(rep.Engines) == 0 || rep.Seconds <= 0 {
		t.Fatalf("report %+v, want %d matches", rep, len(want))
	}
	code, out, _ = runCLI("scan", "--count", "--set", "pattern=WARN")
	if code != exitOK || strings.TrimSpace(out) != fmt.Sprint(len(want)) {
		t.Fatalf("--count printed %q (exit %d), want %d", out, code, len(want))
	}
}

// TestScanEngines: --engine host prints the same matches as the reference
// (TestScanDefault checks the offloaded default), and --engine device moves
// only match lists to the host.
func TestScanEngines(t *testing.T) {
	want := demoReference(t, device.DemoPattern)
	code, out, errOut := runCLI("scan", "--engine", "host")
	if code != exitOK {
		t.Fatalf("--engine host: exit %d: %s", code, errOut)
	}
	if got := strings.TrimSpace(out); got != strings.Join(want, "\n") {
		t.Fatalf("--engine host: %d lines, the reference has %d", strings.Count(got, "\n")+1, len(want))
	}
	if !strings.Contains(errOut, "engine host") {
		t.Fatalf("summary lacks the host engine line:\n%s", errOut)
	}
	code, out, errOut = runCLI("scan", "--engine", "device", "--json")
	var rep scanReport
	if err := json.Unmarshal([]byte(out), &rep); code != exitOK || err != nil {
		t.Fatalf("--engine device --json: exit %d, %v: %s", code, err, errOut)
	}
	if rep.Matches != uint64(len(want)) || len(rep.Engines) != 2 || rep.Engines[1].Name != "mock2" || rep.Engines[1].Targets != len(rep.Targets) {
		t.Fatalf("--engine device: %d matches (want %d), engines %+v", rep.Matches, len(want), rep.Engines)
	}
	for _, tg := range rep.Targets {
		if tg.Engine != "mock2" {
			t.Fatalf("target %+v not offloaded", tg)
		}
	}
	if rep.BytesThroughHost != 0 || rep.BytesToHost == 0 || rep.BytesToHost*100 > rep.BytesScanned {
		t.Fatalf("--engine device: %d of %d bytes reached the host, %d through host memory", rep.BytesToHost, rep.BytesScanned, rep.BytesThroughHost)
	}
	// A device without compute capability cannot take --engine device.
	path := filepath.Join(t.TempDir(), "data")
	os.WriteFile(path, bytes.Repeat([]byte("ERROR "), 1000), 0o644)
	code, _, errOut = runCLI("scan", "--engine", "device", "--dev", "file:"+path)
	if code != exitFail || !strings.Contains(errOut, "no compute-capable controller") {
		t.Fatalf("--engine device on a file: exit %d: %s", code, errOut)
	}
}

func TestScanBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--engine", "gpu"}, exitUsage},
		{[]string{"--stage", "ssd"}, exitUsage},
		{[]string{"--set", "novalue"}, exitUsage},
		{[]string{"--dev", "tape:0"}, exitUsage},
		{[]string{"--set", "nosuchvar=1"}, exitUsage},
		{[]string{"--set", "pattern_len=99999999999"}, exitUsage},
		{[]string{"--filter", patternObj + ":nosuchprog"}, exitUsage},
		{[]string{"--filter", patternObj}, exitUsage}, // several programs: name one
		{[]string{"--dev", "file:/no/such/file"}, exitFail},
		{[]string{"--filter", "/no/such/filter.o"}, exitFail},
	} {
		args := append([]string{"scan"}, tc.args...)
		code, out, errOut := runCLI(args...)
		if tc.code == exitUsage {
			checkUsageError(t, "scan", args, code, out, errOut)
		} else if checkFailure(t, "scan", args, code, errOut); out != "" {
			t.Errorf("%v: stdout %q", args, out)
		}
	}
}

func TestScanRejectedFilter(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed (apt-get install clang); .ci/run installs it")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "oob.c")
	// Reads the data without comparing against data_end first.
	os.WriteFile(src, []byte(`#include "bpfblk.h"
SEC("bpfblk/filter")
int oob(struct bpfblk_ctx *ctx)
{
	const unsigned char *data = BPFBLK_DATA(ctx);
	return data[100] == 'E';
}
char LICENSE[] SEC("license") = "GPL";
`), 0o644)
	obj := filepath.Join(dir, "oob.o")
	abs, _ := filepath.Abs("../../filters")
	if out, err := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-I", abs, "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	code, out, errOut := runCLI("scan", "--filter", obj)
	if code != exitFail || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	if !strings.Contains(errOut, "instruction") || !strings.Contains(errOut, "data_end") {
		t.Fatalf("rejection does not name the instruction and reason: %s", errOut)
	}
}

func TestScanStagedInCMB(t *testing.T) {
	code, out, errOut := runCLI("scan", "--engine", "host", "--stage", "cmb", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep scanReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := len(demoReference(t, device.DemoPattern)); rep.Matches != uint64(want) {
		t.Fatalf("staged scan found %d matches, reference %d", rep.Matches, want)
	}
	if rep.BytesThroughHost != 0 || rep.BytesScanned == 0 {
		t.Fatalf("staged scan: %d bytes scanned, %d through host memory; want 0 through host", rep.BytesScanned, rep.BytesThroughHost)
	}
	code, _, errOut = runCLI("scan", "--stage", "cmb", "--dev", "mock:null")
	if code != exitFail || !strings.Contains(errOut, "no controller memory buffer") {
		t.Fatalf("staging without a CMB: exit %d, %s", code, errOut)
	}
}
