package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/compute/csd"
)

// demoReference computes the default scan's output in plain Go.
func demoReference(t *testing.T, pattern string) (lines []string) {
	t.Helper()
	set, err := device.Open([]string{"mock"}, device.Options{Programs: csd.Runner{}})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for i, b := range set.Bdevs {
		data := demo.Data(i, b.BlockSize(), b.NumBlocks())
		for blk := uint64(0); blk < b.NumBlocks(); blk++ {
			if bytes.Contains(data[blk*uint64(b.BlockSize()):(blk+1)*uint64(b.BlockSize())], []byte(pattern)) {
				lines = append(lines, fmt.Sprintf("%s %d", b.Name(), blk))
			}
		}
	}
	return lines
}

// scanJSONLines parses the output of scan --json: match lines, sorted as
// "NAME LBA" (or "NAME LBA OFFSET"), and the report on the last line.
func scanJSONLines(t *testing.T, out string) (scanReport, []string) {
	t.Helper()
	var rep scanReport
	all := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if err := json.Unmarshal([]byte(all[len(all)-1]), &rep); err != nil {
		t.Fatalf("report line: %v\n%s", err, all[len(all)-1])
	}
	var lines []string
	for _, l := range all[:len(all)-1] {
		var m struct {
			Name   *string `json:"name"`
			LBA    *uint64 `json:"lba"`
			Offset *uint32 `json:"offset"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.Name == nil || m.LBA == nil {
			t.Fatalf("match line %q: %v", l, err)
		}
		s := fmt.Sprintf("%s %d", *m.Name, *m.LBA)
		if m.Offset != nil {
			s += fmt.Sprintf(" %d", *m.Offset)
		}
		lines = append(lines, s)
	}
	sortLines(lines)
	return rep, lines
}

// sortLines sorts "NAME N..." lines by name, then numerically.
func sortLines(lines []string) {
	key := func(s string) (string, []uint64) {
		f := strings.Fields(s)
		var n []uint64
		for _, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			n = append(n, v)
		}
		return f[0], n
	}
	slices.SortFunc(lines, func(a, b string) int {
		na, xa := key(a)
		nb, xb := key(b)
		if c := strings.Compare(na, nb); c != 0 {
			return c
		}
		return slices.Compare(xa, xb)
	})
}

func TestScanDefault(t *testing.T) {
	code, out, errOut := runCLI("scan")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := demoReference(t, demo.Pattern)
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
	rep, lines := scanJSONLines(t, out)
	want := demoReference(t, "WARN")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") || rep.MatchingBlocks != uint64(len(want)) || rep.Records != 0 {
		t.Fatalf("--json: %d match lines, %d matching blocks, %d records; the reference has %d", len(lines), rep.MatchingBlocks, rep.Records, len(want))
	}
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
	want := demoReference(t, demo.Pattern)
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
	if code != exitOK {
		t.Fatalf("--engine device --json: exit %d: %s", code, errOut)
	}
	rep, _ := scanJSONLines(t, out)
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
	rep, _ := scanJSONLines(t, out)
	if want := len(demoReference(t, demo.Pattern)); rep.Matches != uint64(want) {
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

// TestScanPartialLastBlock: a file whose size is not a multiple of its LBA
// size ends in a short block that is scanned with its real length; offload,
// which runs whole blocks, says why it cannot take it.
func TestScanPartialLastBlock(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, at int) string {
		data := bytes.Repeat([]byte{'.'}, 1224)
		copy(data[at:], "ERROR")
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// The pattern inside the tail, and ending at the file's last byte.
	for _, at := range []int{1200, 1219} {
		path := write(fmt.Sprint("at", at), at)
		code, out, errOut := runCLI("scan", "--dev", "file:"+path)
		if code != exitOK || out != "mock0n1 2\n" {
			t.Fatalf("ERROR at byte %d: exit %d, %q: %s", at, code, out, errOut)
		}
		// With the demo's compute device: the file (mock3n1) stays on
		// the host, and the summary says why.
		code, out, errOut = runCLI("scan", "--dev", "mock", "--dev", "file:"+path, "--ns", "mock3n1")
		if code != exitOK || out != "mock3n1 2\n" || !strings.Contains(errOut, "on host (its last block is partial (200 of 512 bytes)") {
			t.Fatalf("ERROR at byte %d, with a compute device: exit %d, %q:\n%s", at, code, out, errOut)
		}
		code, _, errOut = runCLI("scan", "--dev", "mock", "--dev", "file:"+path, "--ns", "mock3n1", "--engine", "device")
		if code != exitFail || !strings.Contains(errOut, "its last block is partial (200 of 512 bytes); offload runs whole blocks") {
			t.Fatalf("--engine device: exit %d: %s", code, errOut)
		}
	}
	// The JSON counts the file's bytes, not the padded block's.
	code, out, errOut := runCLI("scan", "--dev", "file:"+write("json", 1200), "--json")
	rep, lines := scanJSONLines(t, out)
	if code != exitOK || len(lines) != 1 || rep.BytesScanned != 1224 || rep.Targets[0].Bytes != 1224 || rep.Targets[0].Blocks != 3 {
		t.Fatalf("exit %d, %v, %+v: %s", code, lines, rep, errOut)
	}
}

// TestScanRecordsReachTheHost: every record a scanner emits is a line
// "NAME LBA OFFSET" (the demo's 16-byte records all match by default), at
// the default chunk size whose runs emit 16 times more values than blocks.
func TestScanRecordsReachTheHost(t *testing.T) {
	recs := filepath.Join("..", "..", "filters", "records_bpfel.o")
	var want uint64
	set, err := device.Open([]string{"mock"}, device.Options{Programs: csd.Runner{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range set.Bdevs {
		want += b.NumBlocks() * uint64(b.BlockSize()) / 16
	}
	set.Close()
	for _, eng := range []string{"host", "auto"} {
		code, out, errOut := runCLI("scan", "--filter", recs, "--engine", eng, "--count")
		if code != exitOK || strings.TrimSpace(out) != fmt.Sprint(want) {
			t.Fatalf("--engine %s --count: exit %d, %q, want %d: %s", eng, code, out, want, errOut)
		}
	}
	// A selective range, over one namespace: the lines name it and the
	// record's offset in its block.
	code, out, errOut := runCLI("scan", "--filter", recs, "--set", "lo=0x30000000", "--set", "hi=0x39ffffff", "--ns", "mock0n2:10-19")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	blocks := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		lba, _ := strconv.Atoi(f[1])
		off, _ := strconv.Atoi(f[2])
		if len(f) != 3 || f[0] != "mock0n2" || lba < 10 || lba > 19 || off%16 != 0 || off >= 4096 {
			t.Fatalf("line %q", l)
		}
		blocks[f[1]] = true
	}
	if len(lines) < 10 || !strings.Contains(errOut, fmt.Sprintf("%d records emitted in %d matching blocks", len(lines), len(blocks))) ||
		!strings.Contains(errOut, "4096 B blocks 10-19") {
		t.Fatalf("%d lines in %d blocks; summary:\n%s", len(lines), len(blocks), errOut)
	}
}

// TestScanNamespaceRanges: --ns picks namespaces and LBA ranges.
func TestScanNamespaceRanges(t *testing.T) {
	all := demoReference(t, demo.Pattern)
	var want []string
	for _, l := range all {
		f := strings.Fields(l)
		lba, _ := strconv.Atoi(f[1])
		if f[0] == "mock0n1" && lba <= 4095 || f[0] == "mock1n1" && lba >= 6000 {
			want = append(want, l)
		}
	}
	code, out, errOut := runCLI("scan", "--ns", "mock0n1:0-4095", "--ns", "mock1n1:6000-")
	if code != exitOK || strings.TrimSpace(out) != strings.Join(want, "\n") {
		t.Fatalf("exit %d: %d lines, want %d: %s", code, strings.Count(out, "\n"), len(want), errOut)
	}
	for _, bad := range [][]string{{"--ns", "nosuch0n1"}, {"--ns", "mock0n1:5-4"}, {"--ns", "mock0n1:0-32768"}, {"--ns", "mock0n1:x"},
		{"--ns", "mock0n1:0-10", "--ns", "mock0n1:10-20"}, {"--overlap", "-1"}, {"--overlap", "2000000"}} {
		args := append([]string{"scan"}, bad...)
		code, out, errOut := runCLI(args...)
		checkUsageError(t, "scan", args, code, out, errOut)
	}
}

// TestScanOverlap: a pattern across a block boundary is found with
// --overlap, at the block where it starts, by a per-block filter.
func TestScanOverlap(t *testing.T) {
	data := bytes.Repeat([]byte{'.'}, 2048)
	copy(data[510:], "ERROR")  // blocks 0 and 1
	copy(data[1536:], "ERROR") // block 3 only
	path := filepath.Join(t.TempDir(), "straddle")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "mock0n1 3"},
		{[]string{"--overlap", "3"}, "mock0n1 0\nmock0n1 3"}, // 3 bytes of the pattern are in block 1
		{[]string{"--overlap", "2"}, "mock0n1 3"},
		// Block 2 sees all of block 3's pattern in its overlap, which
		// starts in block 3: only block 3 matches.
		{[]string{"--overlap", "8"}, "mock0n1 0\nmock0n1 3"},
		{[]string{"--overlap", "512"}, "mock0n1 0\nmock0n1 3"},
		{[]string{"--overlap", "4", "--filter", patternObj + ":pattern_filter", "--set", "pattern=0x524f525245", "--set", "pattern_len=5", "--chunk", "1024"}, "mock0n1 0\nmock0n1 3"},
		{[]string{"--overlap", "8", "--filter", patternObj + ":pattern_filter", "--set", "pattern=0x524f525245", "--set", "pattern_len=5", "--chunk", "1024"}, "mock0n1 0\nmock0n1 3"},
	} {
		args := append([]string{"scan", "--dev", "file:" + path}, tc.args...)
		code, out, errOut := runCLI(args...)
		if code != exitOK || strings.TrimSpace(out) != tc.want {
			t.Fatalf("%v: exit %d, %q, want %q: %s", tc.args, code, out, tc.want, errOut)
		}
	}
}

// TestScanEngineEnv: BPFBLK_ENGINE picks the host engine, which the summary
// and the JSON name; an unknown value is a usage error.
func TestScanEngineEnv(t *testing.T) {
	for _, e := range []string{"interpreter", "jit"} {
		t.Setenv("BPFBLK_ENGINE", e)
		code, out, errOut := runCLI("scan", "--engine", "host", "--json", "--count")
		rep, _ := scanJSONLines(t, out)
		if code != exitOK || rep.Engine != e {
			t.Fatalf("BPFBLK_ENGINE=%s: exit %d, engine %q: %s", e, code, rep.Engine, errOut)
		}
		code, _, errOut = runCLI("scan", "--engine", "host")
		if code != exitOK || !strings.Contains(errOut, "host cores run the "+e+" engine") {
			t.Fatalf("BPFBLK_ENGINE=%s: summary:\n%s", e, errOut)
		}
	}
	t.Setenv("BPFBLK_ENGINE", "bogus")
	for cmd, args := range map[string][]string{"scan": {"scan"}, "prog run": {"prog", "run", patternObj + ":pattern_filter"}} {
		code, out, errOut := runCLI(args...)
		checkUsageError(t, cmd, args, code, out, errOut)
		if !strings.Contains(errOut, `BPFBLK_ENGINE="bogus"`) {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
}

// TestScanLossExits1: a program that emits more than a run may (one value
// per 4 bytes of its chunk, at least 4096) loses the rest: the scan says
// how many and where, in the summary and the JSON, and exits 1.
func TestScanLossExits1(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed (apt-get install clang); .ci/run installs it")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "many.c")
	os.WriteFile(src, []byte(`#include "bpfblk.h"
SEC("bpfblk/scan")
int many(struct bpfblk_ctx *ctx)
{
	for (int i = 0; i < 5000; i++)
		bpfblk_emit(ctx, 0);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
`), 0o644)
	obj := filepath.Join(dir, "many.o")
	abs, _ := filepath.Abs("../../filters")
	if out, err := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-I", abs, "-c", src, "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	img := filepath.Join(dir, "data")
	os.WriteFile(img, make([]byte, 1024), 0o644)
	code, out, errOut := runCLI("scan", "--filter", obj, "--dev", "file:"+img, "--chunk", "512", "--count")
	if code != exitFail || strings.TrimSpace(out) != "8192" ||
		!strings.Contains(errOut, "bpfblk scan: lost: mock0n1 blocks 0-0 on host: 904 emitted values lost") ||
		!strings.Contains(errOut, "bpfblk scan: lost: mock0n1 blocks 1-1 on host: 904 emitted values lost") ||
		!strings.Contains(errOut, "1808 emitted values did not reach the host") {
		t.Fatalf("exit %d, %q:\n%s", code, out, errOut)
	}
	code, out, _ = runCLI("scan", "--filter", obj, "--dev", "file:"+img, "--chunk", "512", "--json", "--count")
	rep, _ := scanJSONLines(t, out)
	if code != exitFail || rep.Lost != 1808 || len(rep.Losses) != 2 || rep.Losses[1] != (scanLossJSON{Name: "mock0n1", LBA: 1, Blocks: 1, Values: 904, Where: "host"}) || rep.Targets[0].Lost != 1808 {
		t.Fatalf("exit %d: %+v", code, rep)
	}
}
