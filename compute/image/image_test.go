package image_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/image"
	"github.com/bpfblk/bpfblk/filters"
)

func loadPattern(t testing.TB) *engine.Program {
	spec, err := filters.LoadPattern()
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem",
		Vars: map[string]any{"pattern": binary.LittleEndian.Uint64([]byte("ERROR\x00\x00\x00")), "pattern_len": uint32(5)}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRoundTrip: a decoded image runs exactly like the original, parameters
// (.rodata) included.
func TestRoundTrip(t *testing.T) {
	p := loadPattern(t)
	img, err := image.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	q, err := image.Decode(img)
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != p.Name || q.Type != p.Type || len(q.Insns) != len(p.Insns) || len(q.Maps) != len(p.Maps) {
		t.Fatalf("decoded %s/%v with %d insns %d maps", q.Name, q.Type, len(q.Insns), len(q.Maps))
	}
	data := bytes.Repeat([]byte("INFO ok\n"), 256)
	copy(data[1024+17:], "ERROR")
	for _, prog := range []*engine.Program{p, q} {
		x, err := engine.Compile(prog, nil)
		if err != nil {
			t.Fatal(err)
		}
		emit := make([]uint64, 8)
		res, err := x.NewInstance().Run(&engine.Context{Data: data, LBA: 100, BlockSize: 512}, emit)
		if err != nil || res.Emitted != 1 || emit[0] != 102 {
			t.Fatalf("%v: emitted %v (%v)", prog.Name, emit[:res.Emitted], err)
		}
	}
	// Truncations and trailing bytes are errors, never panics.
	for n := 0; n < len(img); n += 7 {
		if _, err := image.Decode(img[:n]); err == nil {
			t.Fatalf("image truncated to %d bytes decoded", n)
		}
	}
	if _, err := image.Decode(append(img, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func TestMapsRoundTrip(t *testing.T) {
	in := []engine.MapData{{Name: "totals", Kind: 1, KeySize: 4, ValueSize: 8, Entries: []engine.MapEntry{
		{Key: []byte{0, 0, 0, 0}, Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, {Key: []byte{1, 0, 0, 0}, Value: make([]byte, 8)}}}}
	out, err := image.DecodeMaps(image.EncodeMaps(in))
	if err != nil || len(out) != 1 || out[0].Name != "totals" || len(out[0].Entries) != 2 || out[0].Entries[0].Value[7] != 8 {
		t.Fatalf("%+v, %v", out, err)
	}
	if _, err := image.DecodeMaps([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Fatal("bad map state decoded")
	}
}

// FuzzDecode: arbitrary images fail cleanly or verify.
func FuzzDecode(f *testing.F) {
	img, err := image.Encode(loadPattern(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add([]byte("BPFBLKP1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := image.Decode(b); err == nil {
			if _, err := engine.Compile(p, nil); err != nil {
				t.Fatalf("verified program does not compile: %v", err)
			}
		}
		image.DecodeMaps(b)
	})
}
