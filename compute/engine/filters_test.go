package engine_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
)

func loadPattern(t testing.TB, prog string, pat string) *engine.Instance {
	t.Helper()
	return loadPatternWith(t, nil, prog, pat)
}

// loadPatternWith compiles a program of pattern.c with engine e (nil: the
// default).
func loadPatternWith(t testing.TB, e engine.Engine, prog string, pat string) *engine.Instance {
	t.Helper()
	cs, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	var p8 [8]byte
	copy(p8[:], pat)
	p, err := engine.LoadSpec(cs, &engine.LoadOptions{Program: prog, Vars: map[string]any{
		"pattern":     binary.LittleEndian.Uint64(p8[:]),
		"pattern_len": uint32(len(pat)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := engine.Compile(p, e)
	if err != nil {
		t.Fatal(err)
	}
	return x.NewInstance()
}

func TestPatternFilter(t *testing.T) {
	const bs = 4096
	data := make([]byte, 8*bs)
	for i := range data {
		data[i] = byte(i*7 + i/13)
	}
	// Plant the pattern in blocks 1 (middle), 4 (last bytes), 6 (first bytes).
	pat := "bpfblk!"
	copy(data[1*bs+1000:], pat)
	copy(data[5*bs-len(pat):], pat)
	copy(data[6*bs:], pat)
	for _, prog := range []string{"pattern_filter", "pattern_memmem"} {
		t.Run(prog, func(t *testing.T) {
			inst := loadPattern(t, prog, pat)
			emit := make([]uint64, 16)
			res, err := inst.Run(&engine.Context{Data: data, LBA: 100, NSID: 1, BlockSize: bs}, emit)
			if err != nil {
				t.Fatal(err)
			}
			want := []uint64{101, 104, 106}
			if res.R0 != 3 || res.Emitted != 3 || !equal(emit[:res.Emitted], want) {
				t.Fatalf("r0 = %d, emitted %v; want 3 matches %v", res.R0, emit[:res.Emitted], want)
			}
			// Plain Go gives the same answer.
			for b := 0; b < 8; b++ {
				got := bytes.Contains(data[b*bs:(b+1)*bs], []byte(pat))
				if got != contains(emit[:res.Emitted], uint64(100+b)) {
					t.Fatalf("block %d: engine and bytes.Contains disagree", b)
				}
			}
		})
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains(a []uint64, v uint64) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}
