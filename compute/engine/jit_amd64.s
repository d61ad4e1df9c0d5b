//go:build linux && amd64

#include "textflag.h"

// func jitCall(entry uintptr, m *Instance, resume uintptr)
//
// The generated code uses no stack of its own beyond the return address of
// this CALL and what jitMemmem, which it calls, uses (~100 bytes, well
// within what NOSPLIT code may use), keeps rsp, restores rbp (which holds
// the data region's bias while it runs) before returning, and may clobber
// every other register (this is an ABI0 function: Go's wrapper restores R14
// and X15 after it returns).
TEXT ·jitCall(SB), NOSPLIT, $0-24
	MOVQ entry+0(FP), AX
	MOVQ m+8(FP), R10
	MOVQ resume+16(FP), R11
	CALL AX
	RET
