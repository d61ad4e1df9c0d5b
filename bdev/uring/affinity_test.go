//go:build linux

package uring_test

import (
	"runtime"
	"testing"

	"github.com/bpfblk/bpfblk/bdev/uring"
	"golang.org/x/sys/unix"
)

// TestWorkerCPUsOfPinnedReactor: a reactor pinned to one core, while the
// process's main thread is pinned to that core as well (the main thread
// may be the first reactor's), gets every CPU the process started with
// for its ring's io-wq workers, not just the one core it is pinned to.
func TestWorkerCPUsOfPinnedReactor(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skipf("the test needs two CPUs; this process may use %d", all.Count())
	}
	core := -1
	for c := 0; c < len(all)*64; c++ {
		if all.IsSet(c) {
			core = c
			break
		}
	}
	var one unix.CPUSet
	one.Set(core)
	// The main thread (thread id = process id), pinned as a reactor
	// running on it would pin it.
	var mainWas unix.CPUSet
	if err := unix.SchedGetaffinity(unix.Getpid(), &mainWas); err != nil {
		t.Fatal(err)
	}
	if err := unix.SchedSetaffinity(unix.Getpid(), &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(unix.Getpid(), &mainWas)
	// This thread, the reactor's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var selfWas unix.CPUSet
	if err := unix.SchedGetaffinity(0, &selfWas); err != nil {
		t.Fatal(err)
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &selfWas)

	got, ok := uring.WorkerCPUs()
	if !ok || got != all {
		t.Fatalf("workers of a reactor on core %d: %v (ok %v); want the process's %d CPUs", core, got, ok, all.Count())
	}
	// Unpinned, the thread shares its CPUs with the workers as it is.
	if err := unix.SchedSetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if got, ok := uring.WorkerCPUs(); ok {
		t.Fatalf("an unpinned thread got worker CPUs %v", got)
	}
}
