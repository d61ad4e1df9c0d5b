package engine_test

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// TestClangIdioms compiles testdata/idioms.c with clang (skipped when clang
// is missing) and runs what clang made of a bpf-to-bpf call, globals in
// .data/.bss/.rodata, a loop over blocks with emit and a memcmp helper.
func TestClangIdioms(t *testing.T) {
	cc, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed")
	}
	obj := filepath.Join(t.TempDir(), "idioms.o")
	out, err := exec.Command(cc, "-O2", "-g", "-target", "bpf", "-Wall", "-c", "testdata/idioms.c", "-o", obj).CombinedOutput()
	if err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	p, err := engine.LoadFile(obj, &engine.LoadOptions{Program: "magic_blocks"})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := engine.Compile(p, nil)
	inst := x.NewInstance()
	const bs = 512
	data := make([]byte, 10*bs)
	for _, b := range []int{2, 7, 9} {
		binary.LittleEndian.PutUint32(data[b*bs:], 0x4b4c4250)
	}
	emit := make([]uint64, 8)
	res, err := inst.Run(&engine.Context{Data: data, LBA: 50, BlockSize: bs}, emit)
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 3 || !equal(emit[:res.Emitted], []uint64{52, 57, 59}) {
		t.Fatalf("r0 %d, emitted %v", res.R0, emit[:res.Emitted])
	}
	vals := map[string][]byte{}
	for _, m := range inst.Maps() {
		vals[m.Name] = m.Entries[0].Value
	}
	if got := binary.LittleEndian.Uint64(vals[".bss"]); got != 10 {
		t.Fatalf("blocks_seen = %d, want 10", got)
	}
	if got := binary.LittleEndian.Uint64(vals[".data"]); got != 11 {
		t.Fatalf("calls = %d, want 11", got)
	}
	// Parameters: another magic number.
	p, err = engine.LoadFile(obj, &engine.LoadOptions{Program: "magic_blocks", Vars: map[string]any{"magic": uint32(7)}})
	if err != nil {
		t.Fatal(err)
	}
	x, _ = engine.Compile(p, nil)
	binary.LittleEndian.PutUint32(data[4*bs:], 7)
	if res, err := x.NewInstance().Run(&engine.Context{Data: data, BlockSize: bs}, emit); err != nil || res.R0 != 1 {
		t.Fatalf("magic=7: %+v %v", res, err)
	}

	p, err = engine.LoadFile(obj, &engine.LoadOptions{Program: "starts_with_hello"})
	if err != nil {
		t.Fatal(err)
	}
	x, _ = engine.Compile(p, nil)
	blocks := make([]byte, 4*bs)
	copy(blocks[1*bs:], "hello, world")
	copy(blocks[3*bs:], "hellO")
	res, err = x.NewInstance().Run(&engine.Context{Data: blocks, LBA: 0, BlockSize: bs}, emit)
	if err != nil || res.R0 != 1 || emit[0] != 1 {
		t.Fatalf("starts_with_hello: %+v %v %v", res, err, emit[:res.Emitted])
	}
}
