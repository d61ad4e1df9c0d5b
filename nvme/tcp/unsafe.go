package tcp

import "unsafe"

// unsafePointer returns the address of b[0] (b is 4-byte aligned CQ memory).
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
