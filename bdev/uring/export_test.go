//go:build linux

package uring

import (
	"github.com/bpfblk/bpfblk/bdev"
	"golang.org/x/sys/unix"
)

// SetOnSubmit sets the hook that sees each batch Poll submits.
func SetOnSubmit(f func(sqes uint32)) { onSubmit = f }

// WorkerCPUs is workerCPUs, for tests.
func WorkerCPUs() (unix.CPUSet, bool) { return workerCPUs() }

// Deferred reports whether owner's ring (without sqpoll) is open and set
// up with DEFER_TASKRUN.
func Deferred(o bdev.Owner) bool {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	r := registry.rings[ringKey{owner: o}]
	return r != nil && r.r.Deferred()
}
