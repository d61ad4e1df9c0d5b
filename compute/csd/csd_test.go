package csd

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

func patternImage(t *testing.T, pat string) []byte {
	t.Helper()
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_filter",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64([]byte(pat + "\x00\x00\x00\x00\x00\x00\x00\x00")[:8]), "pattern_len": uint32(len(pat))}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image(p)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRunnerRunsAndAllocatesNothing: a loaded program finds the blocks that
// hold its pattern, and a run allocates nothing (the emulator calls it once
// per Execute Program).
func TestRunnerRunsAndAllocatesNothing(t *testing.T) {
	prog, err := Runner{}.Load(patternImage(t, "ERROR"), 0)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := prog.NewInstance(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	const bs = 512
	data := bytes.Repeat([]byte{'.'}, 8*bs)
	copy(data[3*bs+100:], "ERROR")
	copy(data[6*bs+7:], "ERROR")
	ctx := &mock.ExecContext{Data: data, LBA: 1000, NSID: 1, BlockSize: bs, BlockCount: 8}
	emit := make([]uint64, 16)
	out, err := inst.Run(ctx, emit)
	if err != nil {
		t.Fatal(err)
	}
	if out.R0 != 2 || out.Emitted != 2 || emit[0] != 1003 || emit[1] != 1006 || out.Overflow {
		t.Fatalf("run = %+v, emitted %v; want 2 matches at LBA 1003 and 1006", out, emit[:out.Emitted])
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := inst.Run(ctx, emit); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("a run allocates %v times", n)
	}
}

// TestRunnerRefusesBadImages: an image that does not decode is refused
// with an error, not a panic.
func TestRunnerRefusesBadImages(t *testing.T) {
	img := patternImage(t, "ERROR")
	for _, bad := range [][]byte{nil, img[:len(img)/2], append([]byte{0xff}, img[1:]...)} {
		if _, err := (Runner{}).Load(bad, 0); err == nil {
			t.Errorf("image of %d bytes accepted", len(bad))
		}
	}
}
