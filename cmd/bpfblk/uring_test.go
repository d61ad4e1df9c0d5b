package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// logFile writes n 512-byte blocks, every seventh of which holds ERROR.
func logFile(t *testing.T, n int) string {
	t.Helper()
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		blk := bytes.Repeat([]byte("."), 512)
		if i%7 == 3 {
			copy(blk[100:], "ERROR")
		}
		b.Write(blk)
	}
	p := filepath.Join(t.TempDir(), "log.img")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUringScanPerfCopy runs the three data commands on uring: devices: a
// scan finds what a scan of the same file through file: finds, perf moves
// data without errors, and copy lands the blocks.
func TestUringScanPerfCopy(t *testing.T) {
	p := logFile(t, 4096)
	var lines [2]string
	for i, dev := range []string{"file:" + p, "uring:" + p} {
		code, out, errOut := runCLI("scan", "--dev", dev, "--engine", "host")
		if code != exitOK {
			t.Fatalf("scan %s: exit %d: %s", dev, code, errOut)
		}
		// The names differ (mock0n1, uring0): compare the LBAs.
		var lbas []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			lbas = append(lbas, f[len(f)-1])
		}
		lines[i] = strings.Join(lbas, ",")
		if len(lbas) != (4096+3)/7 {
			t.Fatalf("scan %s: %d matches, want %d", dev, len(lbas), (4096+3)/7)
		}
	}
	if lines[0] != lines[1] {
		t.Fatal("file: and uring: scans of one file differ")
	}

	code, out, errOut := runCLI("perf", "-w", "randrw", "-q", "8", "-o", "4096", "-t", "0.2", "--dev", "uring:"+p, "--json", "--no-pin")
	if code != exitOK {
		t.Fatalf("perf: exit %d: %s", code, errOut)
	}
	var rep struct {
		Total struct {
			IOs    uint64 `json:"ios"`
			Errors uint64 `json:"errors"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Total.IOs == 0 || rep.Total.Errors != 0 {
		t.Fatalf("perf report %+v, %v\n%s", rep, err, out)
	}

	src := logFile(t, 256)
	want, _ := os.ReadFile(src)
	dst := smallFile(t, 1<<20)
	code, out, errOut = runCLI("copy", "--from", "uring:"+src+":1:0:256", "--to", "uring:"+dst+":1:100", "--verify")
	if code != exitOK || !strings.Contains(out, "verified") {
		t.Fatalf("copy: exit %d: %s %s", code, out, errOut)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got[100*512:356*512], want) {
		t.Fatal("copy did not land")
	}

	// list shows the device; identify has nothing to ask a file.
	code, out, errOut = runCLI("list", "--dev", "uring:"+p, "--json")
	var list []struct {
		Name       string
		Namespaces []struct {
			CommandSet string `json:"command_set"`
			Blocks     uint64
		}
	}
	if err := json.Unmarshal([]byte(out), &list); code != exitOK || err != nil || len(list) != 1 || list[0].Name != "uring0" ||
		len(list[0].Namespaces) != 1 || list[0].Namespaces[0].Blocks != 4096 || list[0].Namespaces[0].CommandSet != "block" {
		t.Fatalf("list: exit %d, %v: %s %s", code, err, out, errOut)
	}
	code, out, errOut = runCLI("identify", "--dev", "uring:"+p)
	if code != exitOK || out != "" || !strings.Contains(errOut, "not an NVMe namespace") {
		t.Fatalf("identify of a file: exit %d: %q %q", code, out, errOut)
	}

	// One file as file: and uring: is one device given twice.
	args := []string{"scan", "--dev", "file:" + p, "--dev", "uring:" + p}
	code, out, errOut = runCLI(args...)
	checkUsageError(t, "scan", args, code, out, errOut)
	args = []string{"scan", "--dev", "uring:" + p + ",turbo"}
	code, out, errOut = runCLI(args...)
	checkUsageError(t, "scan", args, code, out, errOut)
}
