package plainscan

import (
	"bytes"
	"os"
	"testing"
)

// TestScan: the loop counts what a block-by-block reading of the files
// counts, on any number of goroutines, and the files hold matches.
func TestScan(t *testing.T) {
	paths, err := WriteLogs(t.TempDir(), 3, 3*Chunk+1000) // a short last piece
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	var files []*os.File
	var sizes []int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(b); i += Block {
			if bytes.Contains(b[i:min(i+Block, len(b))], []byte("ERROR")) {
				want++
			}
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files, sizes = append(files, f), append(sizes, int64(len(b)))
	}
	if want == 0 {
		t.Fatal("no block matches")
	}
	for _, w := range []int{1, 3} {
		got, total, err := Scan(files, sizes, []byte("ERROR"), w)
		if err != nil || got != want || total != uint64(3*(3*Chunk+1000)) {
			t.Fatalf("%d workers: %d matches, %d bytes, %v; want %d", w, got, total, err, want)
		}
	}
	// A file shorter than its size says is an error, not a silent count.
	sizes[1] += Chunk
	if _, _, err := Scan(files, sizes, []byte("ERROR"), 2); err == nil {
		t.Fatal("a short read went unnoticed")
	}
}
