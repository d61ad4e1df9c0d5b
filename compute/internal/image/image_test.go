package image_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/internal/image"
	"github.com/bpfblk/bpfblk/compute/verifier"
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

// FuzzDecode: arbitrary images fail cleanly or verify, with maps within
// the limit.
func FuzzDecode(f *testing.F) {
	img, err := image.Encode(loadPattern(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add([]byte("BPFBLKP1"))
	const limit = 16 << 20 // what a decoded program may make Compile allocate
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := image.DecodeWithLimit(b, limit); err == nil {
			if shared, per := p.MapMemory(); shared+per > limit {
				t.Fatalf("program with %d+%d bytes of maps accepted under a %d-byte limit", shared, per, limit)
			}
			if _, err := engine.Compile(p, nil); err != nil {
				t.Fatalf("verified program does not compile: %v", err)
			}
		}
		image.DecodeMaps(b)
	})
}

// hostileReply is a 25-byte map state: one hash map "m" with key and value
// size 0 and 2^32-1 entries.
var hostileReply = []byte{1, 0, 0, 0, 1, 0, 0, 0, 'm', 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}

// allocated returns the bytes a second call of f allocates (the first may
// initialise packages; the test must not run in parallel with others for the
// number to mean anything).
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	f()
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestDecodeMapsHostile: replies whose counts and sizes promise more than
// they hold fail at once, saying where, and allocate (almost) nothing.
func TestDecodeMapsHostile(t *testing.T) {
	// The same followed by 4 more bytes (29 in all): an entry of size 0
	// would consume none of them.
	reply29 := append(bytes.Clone(hostileReply), 0, 0, 0, 0)
	cases := []struct {
		b    []byte
		want string
	}{
		{reply29, `map 0 ("m") at byte 4: key size 0, value size 0`},
		{hostileReply, `map 0 ("m") at byte 4: key size 0, value size 0`},
		// Sizes of 1 byte each: 2^32-1 entries need 8 GiB, 4 bytes are left.
		{[]byte{1, 0, 0, 0, 1, 0, 0, 0, 'm', 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
			"4294967295 entries of 1+1 bytes need 8589934590 bytes, 4 are left at byte 25"},
		{[]byte{1, 0, 0, 0, 1, 0, 0, 0, 'm', 2, 0, 0, 0, 0, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, "key size 1024, value size 1 (want 1-512 and 1-4194304)"},
		{[]byte{1, 0, 0, 0, 1, 0, 0, 0, 'm', 9, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, "unknown kind 9"},
		{[]byte{0xff, 0, 0, 0}, "255 maps (limit 64) at byte 0"},
		{[]byte{2, 0, 0, 0, 1, 0, 0, 0, 'm', 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, "map 1 at byte 25"},
		// Keys out of order.
		{[]byte{1, 0, 0, 0, 1, 0, 0, 0, 'm', 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 5, 0, 3, 0}, "entry 1 at byte 27: key 03 is not after the previous key"},
		{append(image.EncodeMaps(nil), 0), "1 trailing bytes at byte 4"},
	}
	for _, tc := range cases {
		var err error
		n := allocated(func() { _, err = image.DecodeMaps(tc.b) })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%x: got %v, want %q", tc.b, err, tc.want)
		}
		if n > 16<<10 {
			t.Errorf("%x: allocated %d bytes", tc.b, n)
		}
	}
}

// TestDecodeMapsAllocationBound: a valid reply of the worst shape (1-byte
// keys and values, 256 of them) decodes into at most 25 bytes per input
// byte and a constant.
func TestDecodeMapsAllocationBound(t *testing.T) {
	in := engine.MapData{Name: "h", Kind: verifier.MapHash, KeySize: 1, ValueSize: 1}
	for k := 0; k < 256; k++ {
		in.Entries = append(in.Entries, engine.MapEntry{Key: []byte{byte(k)}, Value: []byte{1}})
	}
	b := image.EncodeMaps([]engine.MapData{in})
	var out []engine.MapData
	var err error
	n := allocated(func() { out, err = image.DecodeMaps(b) })
	if err != nil || len(out) != 1 || len(out[0].Entries) != 256 || out[0].Entries[255].Key[0] != 255 {
		t.Fatalf("%v", err)
	}
	if n > uint64(25*len(b)+4096) {
		t.Fatalf("%d input bytes, %d allocated", len(b), n)
	}
	// Keys and values are capped: appending to one leaves the next alone.
	_ = append(out[0].Entries[0].Value, 9)
	if out[0].Entries[1].Key[0] != 1 {
		t.Fatal("append to a value overwrote the next key")
	}
}

// TestDecodeMapsFor: state must match the program's declared maps.
func TestDecodeMapsFor(t *testing.T) {
	p := oneMapProgram(t, &ebpf.MapSpec{Name: "totals", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	entry := func(k uint32) engine.MapEntry {
		return engine.MapEntry{Key: binary.LittleEndian.AppendUint32(nil, k), Value: make([]byte, 8)}
	}
	good := engine.MapData{Name: "totals", Kind: verifier.MapArray, KeySize: 4, ValueSize: 8, Entries: []engine.MapEntry{entry(0), entry(1)}}
	if _, err := image.DecodeMapsFor(image.EncodeMaps([]engine.MapData{good}), p); err != nil {
		t.Fatal(err)
	}
	bad := func(f func(m *engine.MapData)) []engine.MapData {
		m := good
		m.Entries = slices.Clone(good.Entries)
		f(&m)
		return []engine.MapData{m}
	}
	for _, tc := range []struct {
		maps []engine.MapData
		want string
	}{
		{bad(func(m *engine.MapData) { m.Name = "other" }), "no writable map of that name"},
		{bad(func(m *engine.MapData) { m.ValueSize, m.Entries = 4, nil }), "value 4 B, 0 entries; the program declares kind 1, key 4 B, value 8 B"},
		{bad(func(m *engine.MapData) { m.Entries = append(m.Entries, entry(2)) }), "3 entries; the program declares"},
		{bad(func(m *engine.MapData) { m.Entries = []engine.MapEntry{entry(7)} }), "entry 0 at byte 30: array index 7 is not below 2"},
		{append(bad(func(*engine.MapData) {}), good), "map 1 (\"totals\") at byte 54: map sent twice"},
	} {
		if _, err := image.DecodeMapsFor(image.EncodeMaps(tc.maps), p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// FuzzDecodeMaps: any reply fails cleanly or decodes into entries that each
// took at least two bytes of it, and re-encodes to the same bytes.
func FuzzDecodeMaps(f *testing.F) {
	f.Add(hostileReply)
	f.Add(append(bytes.Clone(hostileReply), 0, 0, 0, 0))
	f.Add(image.EncodeMaps([]engine.MapData{{Name: "totals", Kind: verifier.MapArray, KeySize: 4, ValueSize: 8, Entries: []engine.MapEntry{
		{Key: []byte{0, 0, 0, 0}, Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, {Key: []byte{1, 0, 0, 0}, Value: make([]byte, 8)}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		maps, err := image.DecodeMaps(b)
		if err != nil {
			return
		}
		entries := 0
		for _, m := range maps {
			entries += len(m.Entries)
			for _, e := range m.Entries {
				if len(e.Key) != m.KeySize || len(e.Value) != m.ValueSize || m.KeySize == 0 || m.ValueSize == 0 {
					t.Fatalf("entry of %d+%d bytes in a map of %d+%d", len(e.Key), len(e.Value), m.KeySize, m.ValueSize)
				}
			}
		}
		if 2*entries > len(b) {
			t.Fatalf("%d entries from %d bytes", entries, len(b))
		}
		if !bytes.Equal(image.EncodeMaps(maps), b) {
			t.Fatal("decoded state does not re-encode to the reply")
		}
	})
}

// TestDecodeMapsForMergedHash: a device merges the hash maps of all its
// compute cores' instances, so their state may hold more keys than one
// map's max entries (each instance up to that many); it decodes.
func TestDecodeMapsForMergedHash(t *testing.T) {
	p := oneMapProgram(t, &ebpf.MapSpec{Name: "seen", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	var m = engine.MapData{Name: "seen", Kind: verifier.MapHash, KeySize: 4, ValueSize: 8}
	for k := uint32(0); k < 3; k++ {
		m.Entries = append(m.Entries, engine.MapEntry{Key: binary.LittleEndian.AppendUint32(nil, k<<24), Value: make([]byte, 8)})
	}
	got, err := image.DecodeMapsFor(image.EncodeMaps([]engine.MapData{m}), p)
	if err != nil || len(got) != 1 || len(got[0].Entries) != 3 {
		t.Fatalf("got %v, %v", got, err)
	}
}

// oneMapProgram loads a scanner that looks up key 0 of its one map, m.
func oneMapProgram(t *testing.T, m *ebpf.MapSpec) *engine.Program {
	t.Helper()
	p, err := engine.LoadSpec(&ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{m.Name: m},
		Programs: map[string]*ebpf.ProgramSpec{"p": {Name: "p", SectionName: "bpfblk/scan", Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference(m.Name),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R0, 0), asm.Return()}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
