//go:build linux && amd64

package engine

import "unsafe"

// bpfblk_memmem without leaving the JIT: the generated code calls
// jitMemmem (jit_memmem_amd64.s), an assembly function in this binary that
// checks the arguments against the regions exactly as the Go helper does,
// searches with SSE2 or AVX2 and charges the budget. It runs on the
// goroutine stack below jitCall, is NOSPLIT, calls no Go code and is not an
// asynchronous preemption point (assembly never is), so the Go runtime
// never sees it half-way: no stack growth, no stack scan, no preemption
// while it runs. Whatever it does not handle (lengths Go refuses, faults,
// empty or long needles, a search whose candidates keep failing) goes the
// usual way, out to Instance.callHelper, which decides as before.

// Offsets jitMemmem uses (go_asm.h gives them to the assembly as const_...;
// a region is regionSize = 32 bytes, asserted in jit_amd64.go).
const (
	jitMemmemRegions = unsafe.Offsetof(Instance{}.regions)
	jitMemmemBudget  = unsafe.Offsetof(Instance{}.budget)
	jitMemmemPtr     = unsafe.Offsetof(region{}.ptr)
	jitMemmemRsize   = unsafe.Offsetof(region{}.rsize)
	jitMemmemRegionN = maxRegions
)

// jitMemmemMaxNeedle is the longest needle jitMemmem searches for itself;
// longer ones (up to abi.MaxCmpLen) go to bytes.Index.
const jitMemmemMaxNeedle = 64

// jitMemmem is never called from Go: the JIT calls it with its own
// register convention (see the assembly).
func jitMemmem()

// jitMemmemPC returns jitMemmem's address, which the generated code calls.
func jitMemmemPC() uintptr

// memmemIndex runs jitMemmem's search on h and n (1 to jitMemmemMaxNeedle
// bytes; tests only): the index of n in h or -1, or fellBack when the
// search gave up to bytes.Index.
//
//go:noescape
func memmemIndex(h, n []byte, avx2 bool) (i int, fellBack bool)

// jitNativeMemmem makes the JIT call jitMemmem for bpfblk_memmem (tests
// and benchmarks turn it off to measure the Go path).
var jitNativeMemmem = true
