package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/bdev/device/demo"
)

// TestScanFilesWithCSD: --dev csd joins the subsystem of the user's file
// namespaces, so --engine device scans them: the same lines as the host
// engine and a plain-Go reference, no data through host memory, the device
// time labelled emulated; list shows one subsystem of both controllers.
func TestScanFilesWithCSD(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	var want []string
	var devs []string
	for i, f := range []struct {
		size int
		lba  int
	}{{1 << 20, 512}, {3 << 20, 4096}} {
		data := make([]byte, f.size)
		for k := range data {
			data[k] = byte('a' + rng.IntN(26)) // lower case never spells ERROR
		}
		for blk := 0; blk < f.size/f.lba; blk++ {
			if rng.IntN(40) == 0 {
				copy(data[blk*f.lba+rng.IntN(f.lba-8):], demo.Pattern)
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("f%d.bin", i))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, "--dev", fmt.Sprintf("file:%s,lba=%d", path, f.lba))
		for blk := 0; blk < f.size/f.lba; blk++ {
			if bytes.Contains(data[blk*f.lba:(blk+1)*f.lba], []byte(demo.Pattern)) {
				want = append(want, fmt.Sprintf("mock0n%d %d", i+1, blk))
			}
		}
	}
	devs = append(devs, "--dev", "csd")
	code, devOut, devErr := runCLI(append([]string{"scan", "--engine", "device"}, devs...)...)
	if code != exitOK {
		t.Fatalf("device engine: exit %d: %s", code, devErr)
	}
	code, hostOut, hostErr := runCLI(append([]string{"scan", "--engine", "host"}, devs...)...)
	if code != exitOK {
		t.Fatalf("host engine: exit %d: %s", code, hostErr)
	}
	if got := strings.TrimSpace(devOut); got != strings.Join(want, "\n") || devOut != hostOut {
		t.Fatalf("device engine printed %d lines, host engine %d, reference %d", strings.Count(devOut, "\n"), strings.Count(hostOut, "\n"), len(want))
	}
	for _, s := range []string{"engine mock1", "emulated device", "through host memory 0 B"} {
		if !strings.Contains(devErr, s) {
			t.Fatalf("device summary lacks %q:\n%s", s, devErr)
		}
	}
	// --json: one line per result, then the report.
	code, out, errOut := runCLI(append([]string{"scan", "--engine", "device", "--json"}, devs...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rep scanReport
	if code != exitOK || len(lines) != len(want)+1 || json.Unmarshal([]byte(lines[len(lines)-1]), &rep) != nil {
		t.Fatalf("--json: exit %d: %s\n%s", code, errOut, out)
	}
	if rep.Matches != uint64(len(want)) || rep.BytesThroughHost != 0 || rep.BytesScanned != 4<<20 || len(rep.Targets) != 2 ||
		rep.Targets[0].Engine != "mock1" || !rep.Engines[len(rep.Engines)-1].Emulated {
		t.Fatalf("report %+v", rep)
	}
	code, out, errOut = runCLI(append([]string{"list", "--json"}, devs...)...)
	var ctrls []ctrlJSON
	if code != exitOK || json.Unmarshal([]byte(out), &ctrls) != nil {
		t.Fatalf("list: exit %d: %s\n%s", code, errOut, out)
	}
	if len(ctrls) != 2 || !ctrls[1].Compute || ctrls[0].SubNQN == "" || ctrls[0].SubNQN != ctrls[1].SubNQN ||
		!ctrls[0].MultiController || !ctrls[1].MultiController || ctrls[0].CNTLID == ctrls[1].CNTLID {
		t.Fatalf("list: %+v", ctrls)
	}
	code, out, _ = runCLI(append([]string{"list"}, devs...)...)
	if code != exitOK || !strings.HasPrefix(out, "subsystem nqn.2026-01.io.bpfblk:subsystem.") || !strings.Contains(out, ": mock0 (cntlid 1), mock1 (cntlid 2)\n") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	// csd twice is a device given twice; csd:1 is a second device.
	args := []string{"list", "--dev", "csd", "--dev", "csd:0"}
	code, out, errOut = runCLI(args...)
	checkUsageError(t, "list", args, code, out, errOut)
	code, out, errOut = runCLI("list", "--dev", "csd", "--dev", "csd:1", "--json")
	if code != exitOK || json.Unmarshal([]byte(out), &ctrls) != nil || len(ctrls) != 2 || !ctrls[0].Compute || !ctrls[1].Compute {
		t.Fatalf("two compute devices: exit %d: %s\n%s", code, errOut, out)
	}
}
