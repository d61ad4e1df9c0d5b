package device

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]Spec{
		"mock":                 {Kind: Mock},
		"mock:null":            {Kind: MockNull},
		"file:/tmp/x":          {Kind: File, Path: "/tmp/x", LBASize: 512},
		"file:/tmp/x,lba=4096": {Kind: File, Path: "/tmp/x", LBASize: 4096},
		"pci:0000:01:00.0":     {Kind: PCI, Addr: "0000:01:00.0"},
		"pci:01:00.0":          {Kind: PCI, Addr: "0000:01:00.0"},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "mock:", "mock:nul", "file:", "file:/x,lba=1024", "file:/x,blk=512", "pci:zz", "nvme0n1", "/dev/nvme0n1"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

func TestOpenMockAndFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	os.WriteFile(a, make([]byte, 1<<20), 0o644)
	os.WriteFile(b, make([]byte, 2<<20), 0o644)
	set, err := Open([]string{"mock:null", "file:" + a, "file:" + b + ",lba=4096"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.Controllers) != 2 || len(set.Bdevs) != 3 {
		t.Fatalf("%d controllers, %d bdevs; want 2 and 3", len(set.Controllers), len(set.Bdevs))
	}
	if bd := set.Bdevs[1]; bd.BlockSize() != 512 || bd.NumBlocks() != 2048 {
		t.Fatalf("file a: %d blocks of %d", bd.NumBlocks(), bd.BlockSize())
	}
	if bd := set.Bdevs[2]; bd.BlockSize() != 4096 || bd.NumBlocks() != 512 {
		t.Fatalf("file b: %d blocks of %d", bd.NumBlocks(), bd.BlockSize())
	}
	if _, err := Open([]string{"file:" + filepath.Join(dir, "missing")}, Options{}); err == nil {
		t.Fatal("missing file accepted")
	}
	if _, err := Open([]string{"file:" + dir}, Options{}); err == nil {
		t.Fatal("directory accepted")
	}
}

func TestOpenDefault(t *testing.T) {
	set, err := Open(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Bdevs) < 2 {
		t.Fatalf("demo subsystem has %d bdevs", len(set.Bdevs))
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
}
