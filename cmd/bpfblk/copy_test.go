package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	for _, c := range []struct {
		in, flag string
		count    bool
		want     endpoint
	}{
		{"pci:0000:01:00.0:1:0:8", "from", true, endpoint{dev: "pci:0000:01:00.0", ns: "1", lba: 0, count: 8}},
		{"pci:0000:01:00.0:2:0x10", "to", false, endpoint{dev: "pci:0000:01:00.0", ns: "2", lba: 16}},
		{"mock:null:1:5:6", "from", true, endpoint{dev: "mock:null", ns: "1", lba: 5, count: 6}},
		{"mock:mock1n1:7", "to", false, endpoint{dev: "mock", ns: "mock1n1", lba: 7}},
		{"file:/tmp/a:b,lba=4096:1:0:8", "from", true, endpoint{dev: "file:/tmp/a:b,lba=4096", ns: "1", lba: 0, count: 8}},
	} {
		got, err := parseEndpoint(c.flag, c.in, c.count)
		if err != nil || got != c.want {
			t.Errorf("parseEndpoint(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"mock:1:0", "mock:1:x:8", "mock:1:0:0", "mock:1:0:-1", ":1:0:8", "mock::0:8", "disk:1:0:8", "pci:0000:01:00:1:0:8"} {
		if _, err := parseEndpoint("from", in, true); err == nil {
			t.Errorf("parseEndpoint(%q) accepted", in)
		}
	}
}

// TestCopyDemoPeerToPeer copies between the demo subsystem's controllers:
// the data goes through the second controller's CMB, none through host
// memory, and reads back equal.
func TestCopyDemoPeerToPeer(t *testing.T) {
	code, out, errOut := runCLI("copy", "--from", "mock:2:0:4096", "--to", "mock:3:100", "--json", "--verify")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep["bytes"] != float64(4096*4096) || rep["bytes_through_host"] != float64(0) || rep["via"] != "cmb" ||
		rep["path"] != "cmb of mock1" || rep["verified"] != true {
		t.Fatalf("report %v", rep)
	}
	if s, ok := rep["seconds"].(float64); !ok || s <= 0 {
		t.Fatalf("seconds %v", rep["seconds"])
	}
}

func writeRandomFile(t *testing.T, path string, n int, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCopyFiles copies between file-backed namespaces, which share a
// controller without a CMB: auto falls back to host memory and says so;
// --via cmb refuses with the way out.
func TestCopyFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	da := writeRandomFile(t, a, 1<<20, 1)
	writeRandomFile(t, b, 1<<20, 2)
	code, out, errOut := runCLI("copy", "--from", "file:"+a+":1:0:1024", "--to", "file:"+b+":1:1024", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "no controller memory buffer") || !strings.Contains(errOut, "through host memory") {
		t.Fatalf("no fallback message: %q", errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if m["bytes"] != float64(512<<10) || m["bytes_through_host"] != float64(512<<10) || m["via"] != "host" {
		t.Fatalf("report %v", m)
	}
	db, _ := os.ReadFile(b)
	if !bytes.Equal(db[512<<10:], da[:512<<10]) {
		t.Fatal("destination file does not hold the copied blocks")
	}
	code, _, errOut = runCLI("copy", "--from", "file:"+a+":1:0:1024", "--to", "file:"+b+":1:0", "--via", "cmb")
	if code != exitFail || !strings.Contains(errOut, "has no controller memory buffer") || !strings.Contains(errOut, "--via host") ||
		strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("--via cmb without a CMB: exit %d, %q", code, errOut)
	}
	// Within one file: NVM Copy.
	code, out, errOut = runCLI("copy", "--from", "file:"+a+":1:0:8", "--to", "file:"+a+":1:100")
	if code != exitOK || !strings.Contains(out, "via copy") {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	da2, _ := os.ReadFile(a)
	if !bytes.Equal(da2[100*512:108*512], da[:8*512]) {
		t.Fatal("copy within the file did not land")
	}
}

func TestCopyUsageErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.img")
	big := filepath.Join(dir, "4k.img")
	writeRandomFile(t, big, 64<<10, 3)
	for _, args := range [][]string{
		{},
		{"--from", "mock:1:0:8"},
		{"--from", "mock:1:0", "--to", "mock:1:100"},
		{"--from", "mock:1:0:8", "--to", "mock:1"},
		{"--from", "disk0:1:0:8", "--to", "mock:1:100"},
		{"--from", "mock:1:0:8", "--to", "mock:1:100", "--via", "dma"},
		{"--from", "mock:1:0:8", "--to", "mock:1:100", "extra"},
		{"--from", "mock:null:9:0:8", "--to", "mock:null:1:100"},
		{"--from", "mock:null:1:0:8", "--to", "mock:null:mock7n1:100"},
		{"--from", "mock:null:1:0:8", "--to", "file:" + big + ",lba=4096:1:0"}, // 512 vs 4096-byte blocks
		{"--from", "file:" + big + ",lba=4096:2:0:8", "--to", "mock:null:1:0"},
		{"--from", "mock:null:1:0:8", "--to", "mock:null:1:4"},             // overlap
		{"--from", "mock:null:1:0:8", "--to", "mock:null:1:1099511627775"}, // past the end
		{"--from", "mock:1:0:8", "--to", "mock:1:100", "-q", "0"},
		{"--from", "mock:1:0:8", "--to", "mock:1:100", "--chunk", "0"},
	} {
		args = append([]string{"copy"}, args...)
		code, out, errOut := runCLI(args...)
		checkUsageError(t, "copy", args, code, out, errOut)
	}
	args := []string{"copy", "--from", "file:" + missing + ":1:0:8", "--to", "mock:null:1:0"}
	code, _, errOut := runCLI(args...)
	checkFailure(t, "copy", args, code, errOut, "no such file")
}

// FuzzParseEndpoint: any input parses or fails cleanly, and what parses
// joins back to the input.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"pci:0000:01:00.0:1:0:8", "mock:null:1:5:6", "mock:mock1n1:7:1", "file:/a:b,lba=4096:1:0:8", "::::", "mock:1:0x10:0b11"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseEndpoint("from", s, true)
		if err != nil {
			return
		}
		if e.count == 0 || e.dev == "" || e.ns == "" || strings.Contains(e.ns, ":") {
			t.Fatalf("%q parsed as %+v", s, e)
		}
		if !strings.HasPrefix(s, e.dev+":"+e.ns+":") {
			t.Fatalf("%q parsed as %+v", s, e)
		}
	})
}
