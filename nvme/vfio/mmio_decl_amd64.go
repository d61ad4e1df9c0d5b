package vfio

import "unsafe"

// Implemented in mmio_amd64.s.

func load32(p unsafe.Pointer) uint32
func store32(p unsafe.Pointer, v uint32)
func load64(p unsafe.Pointer) uint64
func store64(p unsafe.Pointer, v uint64)
