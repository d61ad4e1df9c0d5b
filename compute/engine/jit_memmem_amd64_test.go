//go:build linux && amd64

package engine

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// memmemModes are the search forms this CPU runs: SSE2 always, AVX2 if
// the CPU has it.
func memmemModes() []bool {
	if jitCPU.avx2 {
		return []bool{false, true}
	}
	return []bool{false}
}

// guarded returns a page of read-write memory between two inaccessible
// pages: a load before or after it faults.
func guarded(t testing.TB) []byte {
	page := unix.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 3*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(mem) })
	if err := unix.Mprotect(mem[:page], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mprotect(mem[2*page:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	return mem[page : 2*page : 2*page]
}

// TestMemmemSearch compares the assembly search with bytes.Index on random
// haystacks and needles over small and full alphabets, with the needle
// planted, planted with one byte changed, or absent; the haystack sits at
// the start or the end of a page between inaccessible pages, and the
// needle at the other end, so that a load past either one faults. Over the
// full alphabet candidates are rare and the search must never give up.
func TestMemmemSearch(t *testing.T) {
	rw := guarded(t)
	rng := rand.New(rand.NewPCG(20, 26))
	fell := 0
	n := 40000
	if testing.Short() {
		n = 5000
	}
	for k := 0; k < n; k++ {
		hl := rng.IntN(300)
		if k%50 == 0 {
			hl = rng.IntN(len(rw) - jitMemmemMaxNeedle)
		}
		nl := 1 + rng.IntN(jitMemmemMaxNeedle)
		alpha := []int{1, 2, 3, 256}[rng.IntN(4)]
		fill := func(b []byte) {
			for i := range b {
				b[i] = byte(rng.IntN(alpha))
			}
		}
		var h, nd []byte
		if k%2 == 0 {
			h, nd = rw[:hl], rw[len(rw)-nl:]
		} else {
			h, nd = rw[len(rw)-hl:], rw[:nl]
		}
		fill(h)
		fill(nd)
		if hl >= nl && rng.IntN(3) > 0 {
			at := rng.IntN(hl - nl + 1)
			copy(h[at:], nd)
			if rng.IntN(2) == 0 {
				h[at+rng.IntN(nl)] ^= 1 << rng.IntN(8)
			}
		}
		want := bytes.Index(h, nd)
		for _, avx2 := range memmemModes() {
			got, fellBack := memmemIndex(h, nd, avx2)
			if fellBack {
				if alpha == 256 {
					t.Fatalf("avx2 %v: gave up on a random haystack of %d bytes, needle %d", avx2, hl, nl)
				}
				fell++
				continue
			}
			if got != want {
				t.Fatalf("avx2 %v: haystack %d bytes, needle %d: got %d, want %d\nh %x\nn %x", avx2, hl, nl, got, want, h, nd)
			}
		}
	}
	t.Logf("%d searches of %d gave up to bytes.Index", fell, n*len(memmemModes()))
	if fell > n/4 {
		t.Fatalf("%d of %d searches gave up", fell, n)
	}
}

// TestMemmemSearchGivesUp: a needle whose first and last bytes match
// everywhere but that differs near its end makes every start a candidate
// that fails late; the search gives up to bytes.Index (which is linear
// here) instead of comparing 64 bytes at every start.
func TestMemmemSearchGivesUp(t *testing.T) {
	h := bytes.Repeat([]byte{'a'}, 4096)
	nd := append(bytes.Repeat([]byte{'a'}, jitMemmemMaxNeedle-2), 'b', 'a')
	for _, avx2 := range memmemModes() {
		if _, fellBack := memmemIndex(h, nd, avx2); !fellBack {
			t.Fatalf("avx2 %v: searched on through 4096 failing candidates", avx2)
		}
		copy(h[10:], nd) // found among the first candidates
		if got, fellBack := memmemIndex(h, nd, avx2); fellBack || got != 10 {
			t.Fatalf("avx2 %v: got %d (gave up %v), want 10", avx2, got, fellBack)
		}
		copy(h[10:], bytes.Repeat([]byte{'a'}, len(nd)))
	}
}

// FuzzMemmemSearch compares the assembly search with bytes.Index.
func FuzzMemmemSearch(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789"), []byte("9ab"))
	f.Add(bytes.Repeat([]byte{'x'}, 100), []byte("xx"))
	f.Add([]byte("short"), []byte("longer needle"))
	f.Fuzz(func(t *testing.T, h, nd []byte) {
		if len(nd) == 0 || len(nd) > jitMemmemMaxNeedle {
			return
		}
		want := bytes.Index(h, nd)
		for _, avx2 := range memmemModes() {
			if got, fellBack := memmemIndex(h, nd, avx2); !fellBack && got != want {
				t.Fatalf("avx2 %v: got %d, want %d", avx2, got, want)
			}
		}
	})
}

// TestJITNativeMemmem calls bpfblk_memmem with arguments at and over every
// edge that the assembly checks (lengths, regions, offsets) in programs the
// verifier never sees: the JIT, with the assembly (SSE2 and AVX2) and with
// the helper's Go path, must agree with the interpreter on everything
// observable (r0, the error, all registers, the budget running out in the
// call), and JIT code must leave for Go exactly when the assembly declines.
func TestJITNativeMemmem(t *testing.T) {
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i * 7)
	}
	d := func(off uint64) uint64 { return regionAddr(regionData, off) }
	type call struct {
		hay, hn, ndl, nn uint64
		native           bool // the assembly handles it
	}
	calls := []call{
		{d(0), 256, d(100), 5, true},  // found at 100
		{d(10), 246, d(250), 6, true}, // the needle ends the data: found at 240
		{d(0), 256, d(0), 1, true},    // found at 0
		{d(3), 200, d(100), 64, true}, // the longest native needle
		{d(0), 99, d(100), 5, true},   // not found: the match starts beyond
		{d(256), 0, d(0), 1, true},    // empty haystack at the data's end
		{d(0), 3, d(5), 4, true},      // needle longer than the haystack
		{regionAddr(regionStack, abi.StackSize*abi.MaxFrames-16), 16, d(0), 2, true},
		{d(0), 256, d(0), 0, false},                             // empty needle
		{d(0), 256, d(0), 65, false},                            // long needle
		{d(0), 257, d(0), 1, false},                             // haystack past the end
		{d(1), 256, d(0), 1, false},                             // haystack past the end
		{d(257), 0, d(0), 1, false},                             // offset past the end
		{d(0), 16, d(250), 7, false},                            // needle past the end
		{d(0), 16, d(math.MaxUint32), 1, false},                 // offset 2^32-1
		{regionAddr(regionNull, 0), 0, d(0), 1, false},          // the null region
		{regionAddr(maxRegions-1, 0), 0, d(0), 1, false},        // an unused region
		{regionAddr(maxRegions, 0), 0, d(0), 1, false},          // beyond the region table
		{d(0), 1 << 31, d(0), 1, false},                         // -EINVAL
		{d(0), 1<<32 + 16, d(0), 1, false},                      // -EINVAL
		{d(0), math.MaxUint64, d(0), 1, false},                  // -EINVAL
		{d(0), 16, d(0), 1<<32 + 1, false},                      // -EINVAL
		{d(0), 16, d(0), math.MaxUint64, false},                 // -EINVAL
		{d(0), 16, mapHandle(0), 1, false},                      // a map pointer
		{regionAddr(regionCtx, 0), abi.CtxSize, d(0), 1, true},  // the context
		{regionAddr(regionCtx, 1), abi.CtxSize, d(0), 1, false}, // past the context
		{d(0) | 1<<40, 1, d(0), 1, false},                       // a region index over 255
	}
	var exits int
	jitOnHelperExit = func(id uint32) {
		if id == abi.HelperMemmem {
			exits++
		}
	}
	defer func() { jitOnHelperExit = nil }()
	for i, c := range calls {
		prog := asm.Instructions{
			asm.LoadImm(asm.R1, int64(c.hay), asm.DWord),
			asm.LoadImm(asm.R2, int64(c.hn), asm.DWord),
			asm.LoadImm(asm.R3, int64(c.ndl), asm.DWord),
			asm.LoadImm(asm.R4, int64(c.nn), asm.DWord),
			asm.LoadImm(asm.R5, 0x5555, asm.DWord),
			asm.Mov.Imm(asm.R0, 77),
			asm.BuiltinFunc(abi.HelperMemmem).Call(),
			asm.Return(),
		}
		p := unverified(abi.TypeScan, prog, nil)
		for _, budget := range []int64{1 << 20, 5} {
			want := runMemmemProgram(t, Interpreter, p, data, budget)
			for _, mode := range []struct {
				name         string
				native, avx2 bool
			}{{"go path", false, false}, {"sse2", true, false}, {"avx2", true, true}} {
				if mode.avx2 && !jitCPU.avx2 {
					continue
				}
				restore := SetJITNativeMemmem(mode.native)
				saved := jitCPU
				jitCPU.avx2 = mode.avx2
				exits = 0
				got := runMemmemProgram(t, JIT, p, data, budget)
				jitCPU = saved
				restore()
				if got != want {
					t.Fatalf("call %d (%+v), budget %d, JIT %s:\ngot  %s\nwant %s", i, c, budget, mode.name, got, want)
				}
				if wantExits := !mode.native || !c.native; (exits > 0) != wantExits {
					t.Fatalf("call %d (%+v), JIT %s: %d exits to Go for the helper", i, c, mode.name, exits)
				}
			}
		}
	}
}

func runMemmemProgram(t *testing.T, e Engine, p *Program, data []byte, budget int64) string {
	t.Helper()
	x, err := Compile(p, e)
	if err != nil {
		t.Fatalf("%s: %v", e.Name(), err)
	}
	inst := x.NewInstance()
	inst.SetBudget(budget)
	res, err := inst.Run(&Context{Data: data, BlockSize: uint32(len(data))}, nil)
	return fmt.Sprintf("r0 %#x err %v regs %#x", res.R0, err, inst.Regs())
}
