package main

import (
	"strings"
	"testing"
)

const bigMapsObj = "testdata/bigmaps.o"

// TestProgVerifyMapMemory: programs whose maps exceed the limit are refused
// by `prog verify` (exit 1, one line naming the maps, their sizes and the
// limit) and accepted once --map-memory is large enough. Verifying allocates
// no map.
func TestProgVerifyMapMemory(t *testing.T) {
	code, _, errOut := runCLI("prog", "verify", bigMapsObj+":huge_hash")
	if code != exitFail || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"hash map huge (268435456 entries, key 256 B, value 1 B) 67.8 GiB", "over the map memory limit of 1 GiB", "--map-memory"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not say %q", errOut, want)
		}
	}
	code, _, errOut = runCLI("prog", "verify", bigMapsObj+":eight_arrays")
	if code != exitFail || !strings.Contains(errOut, "maps need 2 GiB for 1 instance, over the map memory limit of 1 GiB: array map a0 (65536 entries, key 4 B, value 4096 B) 256 MiB each") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// 2 GiB is just short (each map has a few bytes of bookkeeping).
	if code, _, errOut = runCLI("prog", "verify", bigMapsObj+":eight_arrays", "--map-memory", "2G"); code != exitFail {
		t.Fatalf("2G: exit %d, stderr %q", code, errOut)
	}
	code, out, errOut := runCLI("prog", "verify", "--map-memory", "3G", bigMapsObj+":eight_arrays")
	if code != exitOK || !strings.Contains(out, "eight_arrays: ok (bpfblk/scan") {
		t.Fatalf("3G: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, bad := range []string{"0", "-1", "12x", "G", "99999999999T"} {
		if code, _, errOut := runCLI("prog", "verify", bigMapsObj+":eight_arrays", "--map-memory", bad); code != exitUsage {
			t.Errorf("--map-memory %s: exit %d, stderr %q", bad, code, errOut)
		}
	}
}

// TestProgRunMapMemory: `prog run` refuses before allocating, and applies
// the flag to small programs too.
func TestProgRunMapMemory(t *testing.T) {
	if code, _, errOut := runCLI("prog", "run", bigMapsObj+":eight_arrays"); code != exitFail || !strings.Contains(errOut, "map memory limit of 1 GiB") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	small := bigMapsObj + ":small"
	if code, _, errOut := runCLI("prog", "run", small, "--map-memory", "16k"); code != exitFail ||
		!strings.Contains(errOut, "array map counts (1024 entries, key 4 B, value 16 B) 16.2 KiB each") || !strings.Contains(errOut, "limit of 16 KiB") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut := runCLI("prog", "run", small, "--map-memory", "17k"); code != exitOK || !strings.Contains(out, "r0 = 0") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestScanMapMemory: scan refuses a program whose maps do not fit, at load
// for one instance and when it creates one instance per host job.
func TestScanMapMemory(t *testing.T) {
	if code, _, errOut := runCLI("scan", "--filter", bigMapsObj+":eight_arrays", "--count"); code != exitFail || !strings.Contains(errOut, "maps need 2 GiB for 1 instance") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// One instance takes 16.25 KiB: 20 KiB holds one, not one per core.
	code, _, errOut := runCLI("scan", "--filter", bigMapsObj+":small", "--engine", "host", "-c", "0-1", "--map-memory", "20k", "--count")
	if code != exitFail || !strings.Contains(errOut, "instances, over the map memory limit of 20 KiB") || !strings.Contains(errOut, "--map-memory") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut := runCLI("scan", "--filter", bigMapsObj+":small", "--engine", "host", "-c", "0-1", "--map-memory", "1M", "--count"); code != exitOK {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "4096": 4096, "40k": 40 << 10, "40K": 40 << 10, "512M": 512 << 20,
		"512MiB": 512 << 20, "2G": 2 << 30, "2GB": 2 << 30, "1T": 1 << 40} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-5", "k", "1.5G", "1P", "9223372036854775807G"} {
		if _, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) accepted", in)
		}
	}
}
