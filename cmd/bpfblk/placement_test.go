package main

import (
	"strings"
	"testing"
)

// TestScanPlacementAlias: --placement picks where a program runs; --engine,
// its old spelling, does the same; the two disagreeing is a usage error, as
// is an unknown placement under either name.
func TestScanPlacementAlias(t *testing.T) {
	code, newOut, errOut := runCLI("scan", "--placement", "host", "--count")
	if code != exitOK {
		t.Fatalf("--placement host: exit %d: %s", code, errOut)
	}
	code, oldOut, errOut := runCLI("scan", "--engine", "host", "--count")
	if code != exitOK {
		t.Fatalf("--engine host: exit %d: %s", code, errOut)
	}
	if newOut != oldOut || strings.TrimSpace(newOut) == "" {
		t.Fatalf("--placement host printed %q, --engine host %q", newOut, oldOut)
	}
	code, _, _ = runCLI("scan", "--placement", "host", "--engine", "host", "--count")
	if code != exitOK {
		t.Fatalf("agreeing --placement and --engine: exit %d", code)
	}
	for _, args := range [][]string{
		{"--placement", "host", "--engine", "device"},
		{"--placement", "gpu"},
		{"--engine", "jit"},
	} {
		code, _, errOut := runCLI(append([]string{"scan", "--count"}, args...)...)
		if code != exitUsage {
			t.Errorf("scan %v: exit %d, want %d (usage): %s", args, code, exitUsage, errOut)
		}
	}
}
