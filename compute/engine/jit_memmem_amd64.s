//go:build linux && amd64

#include "textflag.h"
#include "go_asm.h"

// jitMemmem is bpfblk_memmem for JIT code, which calls it directly instead
// of returning to Go (see jit_memmem_amd64.go). Its calling convention is
// the JIT's: the BPF registers are in place, r1 = DI (haystack), r2 = SI
// (its length), r3 = DX (needle), r4 = R9 (its length), R10 is the
// *Instance, and CX is 1 to search with AVX2, 0 with SSE2.
//
// It handles the common case only: a haystack shorter than 2^31 bytes, a
// needle of 1 to jitMemmemMaxNeedle bytes, both inside readable regions
// (the check is bytesAt's). Then it charges the budget like
// Instance.charge, returns the index or -1 in AX and CX = 0. In every other
// case (a length Go refuses, a fault, a search whose candidates keep
// failing) it changes nothing and returns CX = 1, and the JIT takes the
// helper's Go path, which decides. It preserves every general register but
// AX, CX and R11 (BP too: the frame pointer prologue saves and restores
// it), is NOSPLIT and calls nothing but memmemSearch, so it needs ~100
// bytes of stack below jitCall's frame, within the NOSPLIT limit.
TEXT ·jitMemmem(SB), NOSPLIT, $64-0
	MOVQ AX, 0(SP)
	MOVQ BX, 8(SP)
	MOVQ DX, 16(SP)
	MOVQ SI, 24(SP)
	MOVQ DI, 32(SP)
	MOVQ R8, 40(SP)
	MOVQ R9, 48(SP)
	MOVQ R12, 56(SP)

	// Lengths: the haystack below 2^31, the needle 1..jitMemmemMaxNeedle.
	MOVQ SI, AX
	SHRQ $31, AX
	JNE  bail
	LEAQ -1(R9), AX
	CMPQ AX, $(const_jitMemmemMaxNeedle-1)
	JHI  bail

	// The haystack: region r1>>32, offset o = r1&0xffffffff; o+len must
	// not pass the readable size (o < 2^32 and len < 2^31: no wrap).
	MOVQ DI, AX
	SHRQ $32, AX
	CMPQ AX, $(const_jitMemmemRegionN-1)
	JHI  bail
	SHLQ $5, AX                         // * regionSize, asserted in Go
	LEAQ const_jitMemmemRegions(R10)(AX*1), AX
	MOVL DI, BX
	LEAQ (BX)(SI*1), R11
	CMPQ R11, const_jitMemmemRsize(AX)
	JHI  bail
	MOVQ const_jitMemmemPtr(AX), R8
	TESTQ R8, R8
	JEQ  bail
	ADDQ BX, R8

	// The needle, the same way.
	MOVQ DX, AX
	SHRQ $32, AX
	CMPQ AX, $(const_jitMemmemRegionN-1)
	JHI  bail
	SHLQ $5, AX
	LEAQ const_jitMemmemRegions(R10)(AX*1), AX
	MOVL DX, BX
	LEAQ (BX)(R9*1), R11
	CMPQ R11, const_jitMemmemRsize(AX)
	JHI  bail
	MOVQ const_jitMemmemPtr(AX), DX
	TESTQ DX, DX
	JEQ  bail
	ADDQ BX, DX

	MOVQ R9, DI
	MOVQ SI, R9
	CALL memmemSearch<>(SB)
	TESTQ CX, CX
	JNE  bail

	// Charge (haystack + needle length) / 16, as Instance.charge does.
	MOVQ 24(SP), R11
	ADDQ 48(SP), R11
	SHRQ $4, R11
	SUBQ R11, const_jitMemmemBudget(R10)

	MOVQ 8(SP), BX
	MOVQ 16(SP), DX
	MOVQ 24(SP), SI
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ 48(SP), R9
	MOVQ 56(SP), R12
	XORL CX, CX
	RET

bail:
	MOVQ 0(SP), AX
	MOVQ 8(SP), BX
	MOVQ 16(SP), DX
	MOVQ 24(SP), SI
	MOVQ 32(SP), DI
	MOVQ 40(SP), R8
	MOVQ 48(SP), R9
	MOVQ 56(SP), R12
	MOVL $1, CX
	RET

// func jitMemmemPC() uintptr
TEXT ·jitMemmemPC(SB), NOSPLIT, $0-8
	LEAQ ·jitMemmem(SB), AX
	MOVQ AX, ret+0(FP)
	RET

// func memmemIndex(h, n []byte, avx2 bool) (i int, fellBack bool)
TEXT ·memmemIndex(SB), NOSPLIT, $0-65
	MOVQ    h_base+0(FP), R8
	MOVQ    h_len+8(FP), R9
	MOVQ    n_base+24(FP), DX
	MOVQ    n_len+32(FP), DI
	MOVBQZX avx2+48(FP), CX
	CALL    memmemSearch<>(SB)
	MOVQ    AX, i+56(FP)
	MOVB    CX, fellBack+64(FP)
	RET

// memmemSearch finds the needle at DX, DI bytes long (1 to
// jitMemmemMaxNeedle), in the haystack at R8, R9 bytes long, with 32-byte
// AVX2 vectors if CX is 1, 16-byte SSE2 vectors otherwise. It returns the
// first index or -1 in AX and CX = 0; or CX = 1 if candidates kept failing
// (more than 32 plus one per 16 bytes scanned), so that the caller falls
// back to bytes.Index and the time stays linear in the haystack.
//
// A window of starts s..s+V-1 (V = 16 or 32) compares the vector at s with
// the needle's first byte and the vector at s+len-1 with its last byte;
// only starts where both match are compared in full. Every load stays
// inside the haystack: the last window is moved back to end at the last
// start (its starts already seen are masked off), and a haystack with fewer
// than V starts is compared start by start.
//
// Registers: R8 haystack, R9 last start (a pointer), SI window, DX needle,
// DI needle length, R11 candidate mask, BX failed candidates, AX, CX and R12
// scratch (R12: the two-window loops' bound). Clobbers X0-X5 (Y0-Y5).
TEXT memmemSearch<>(SB), NOSPLIT|NOFRAME, $0-0
	CMPQ    DI, R9
	JHI     notfound
	LEAQ    (R8)(R9*1), R9
	SUBQ    DI, R9
	MOVQ    R8, SI
	XORL    BX, BX
	MOVBLZX (DX), AX
	MOVBLZX -1(DX)(DI*1), R11
	TESTQ   CX, CX
	JEQ     sse2

	MOVQ         AX, X0
	VPBROADCASTB X0, Y0
	MOVQ         R11, X1
	VPBROADCASTB X1, Y1

	// Two windows (64 starts) per iteration while they fit, R12 holding
	// the last start of a full pair; then single windows.
	MOVQ R9, AX
	SUBQ R8, AX
	CMPQ AX, $63
	JB   avxloop
	LEAQ -63(R9), R12

avx64:
	VPCMPEQB  (SI), Y0, Y2
	VPCMPEQB  -1(SI)(DI*1), Y1, Y3
	VPCMPEQB  32(SI), Y0, Y4
	VPCMPEQB  31(SI)(DI*1), Y1, Y5
	VPAND     Y2, Y3, Y3
	VPAND     Y4, Y5, Y5
	VPOR      Y3, Y5, Y2
	VPMOVMSKB Y2, AX
	TESTL     AX, AX
	JNE       avx64cand

avx64next:
	ADDQ $64, SI
	CMPQ SI, R12
	JLS  avx64
	JMP  avxloop

avx64cand:
	VPMOVMSKB Y3, R11
	VPMOVMSKB Y5, AX
	SHLQ      $32, AX
	ORQ       AX, R11

avx64c:
	BSFQ R11, AX
	ADDQ SI, AX
	XORL CX, CX

avx64verify:
	MOVBLZX (AX)(CX*1), R12
	CMPB    R12, (DX)(CX*1)
	JNE     avx64fail
	INCQ    CX
	CMPQ    CX, DI
	JB      avx64verify
	VZEROUPPER
	JMP     found

avx64fail:
	INCQ BX
	MOVQ SI, CX
	SUBQ R8, CX
	SHRQ $4, CX
	ADDQ $32, CX
	CMPQ BX, CX
	JHI  avxbail
	LEAQ -1(R11), CX
	ANDQ CX, R11
	JNE  avx64c
	LEAQ -63(R9), R12
	JMP  avx64next

avxloop:
	LEAQ      31(SI), AX
	CMPQ      AX, R9
	JHI       avxtail
	VPCMPEQB  (SI), Y0, Y2
	VPCMPEQB  -1(SI)(DI*1), Y1, Y3
	VPAND     Y2, Y3, Y3
	VPMOVMSKB Y3, R11
	TESTL     R11, R11
	JNE       avxcand

avxnext:
	ADDQ $32, SI
	JMP  avxloop

avxcand:
	BSFL R11, AX
	ADDQ SI, AX
	XORL CX, CX

avxverify:
	MOVBLZX (AX)(CX*1), R12
	CMPB    R12, (DX)(CX*1)
	JNE     avxfail
	INCQ    CX
	CMPQ    CX, DI
	JB      avxverify
	VZEROUPPER
	JMP     found

avxfail:
	INCQ BX
	MOVQ SI, CX
	SUBQ R8, CX
	SHRQ $4, CX
	ADDQ $32, CX
	CMPQ BX, CX
	JHI  avxbail
	LEAL -1(R11), CX
	ANDL CX, R11
	JNE  avxcand
	JMP  avxnext

avxtail:
	CMPQ SI, R9
	JHI  avxnotfound
	MOVQ R9, AX
	SUBQ R8, AX
	CMPQ AX, $31
	JB   avxshort

	// The last window ends at the last start; starts before SI are done.
	LEAQ      -31(R9), AX
	MOVQ      SI, CX
	SUBQ      AX, CX
	MOVQ      AX, SI
	VPCMPEQB  (SI), Y0, Y2
	VPCMPEQB  -1(SI)(DI*1), Y1, Y3
	VPAND     Y2, Y3, Y3
	VPMOVMSKB Y3, R11
	MOVL      $-1, AX
	SHLL      CX, AX
	ANDL      AX, R11
	JNE       avxcand
	JMP       avxnext

avxshort:
	// Fewer than 32 starts (SI is the haystack): try each one.
	MOVQ R9, CX
	SUBQ SI, CX
	INCQ CX
	MOVL $1, R11
	SHLL CX, R11
	DECL R11
	JMP  avxcand

avxnotfound:
	VZEROUPPER
	JMP notfound

avxbail:
	VZEROUPPER
	JMP bailout

sse2:
	MOVQ      AX, X0
	PUNPCKLBW X0, X0
	PSHUFLW   $0, X0, X0
	PSHUFD    $0, X0, X0
	MOVQ      R11, X1
	PUNPCKLBW X1, X1
	PSHUFLW   $0, X1, X1
	PSHUFD    $0, X1, X1

	// Two windows (32 starts) per iteration while they fit, as for AVX2.
	MOVQ R9, AX
	SUBQ R8, AX
	CMPQ AX, $31
	JB   sseloop
	LEAQ -31(R9), R12

sse32:
	MOVOU    (SI), X2
	MOVOU    -1(SI)(DI*1), X3
	MOVOU    16(SI), X4
	MOVOU    15(SI)(DI*1), X5
	PCMPEQB  X0, X2
	PCMPEQB  X1, X3
	PCMPEQB  X0, X4
	PCMPEQB  X1, X5
	PAND     X2, X3
	PAND     X4, X5
	MOVO     X3, X2
	POR      X5, X2
	PMOVMSKB X2, AX
	TESTL    AX, AX
	JNE      sse32cand

sse32next:
	ADDQ $32, SI
	CMPQ SI, R12
	JLS  sse32
	JMP  sseloop

sse32cand:
	PMOVMSKB X3, R11
	PMOVMSKB X5, AX
	SHLL     $16, AX
	ORL      AX, R11

sse32c:
	BSFL R11, AX
	ADDQ SI, AX
	XORL CX, CX

sse32verify:
	MOVBLZX (AX)(CX*1), R12
	CMPB    R12, (DX)(CX*1)
	JNE     sse32fail
	INCQ    CX
	CMPQ    CX, DI
	JB      sse32verify
	JMP     found

sse32fail:
	INCQ BX
	MOVQ SI, CX
	SUBQ R8, CX
	SHRQ $4, CX
	ADDQ $32, CX
	CMPQ BX, CX
	JHI  bailout
	LEAL -1(R11), CX
	ANDL CX, R11
	JNE  sse32c
	LEAQ -31(R9), R12
	JMP  sse32next

sseloop:
	LEAQ  15(SI), AX
	CMPQ  AX, R9
	JHI   ssetail
	MOVOU (SI), X2
	MOVOU -1(SI)(DI*1), X3
	PCMPEQB X0, X2
	PCMPEQB X1, X3
	PAND  X2, X3
	PMOVMSKB X3, R11
	TESTL R11, R11
	JNE   ssecand

ssenext:
	ADDQ $16, SI
	JMP  sseloop

ssecand:
	BSFL R11, AX
	ADDQ SI, AX
	XORL CX, CX

sseverify:
	MOVBLZX (AX)(CX*1), R12
	CMPB    R12, (DX)(CX*1)
	JNE     ssefail
	INCQ    CX
	CMPQ    CX, DI
	JB      sseverify
	JMP     found

ssefail:
	INCQ BX
	MOVQ SI, CX
	SUBQ R8, CX
	SHRQ $4, CX
	ADDQ $32, CX
	CMPQ BX, CX
	JHI  bailout
	LEAL -1(R11), CX
	ANDL CX, R11
	JNE  ssecand
	JMP  ssenext

ssetail:
	CMPQ SI, R9
	JHI  notfound
	MOVQ R9, AX
	SUBQ R8, AX
	CMPQ AX, $15
	JB   sseshort
	LEAQ  -15(R9), AX
	MOVQ  SI, CX
	SUBQ  AX, CX
	MOVQ  AX, SI
	MOVOU (SI), X2
	MOVOU -1(SI)(DI*1), X3
	PCMPEQB X0, X2
	PCMPEQB X1, X3
	PAND  X2, X3
	PMOVMSKB X3, R11
	MOVL  $-1, AX
	SHLL  CX, AX
	ANDL  AX, R11
	JNE   ssecand
	JMP   ssenext

sseshort:
	MOVQ R9, CX
	SUBQ SI, CX
	INCQ CX
	MOVL $1, R11
	SHLL CX, R11
	DECL R11
	JMP  ssecand

found:
	SUBQ R8, AX
	XORL CX, CX
	RET

notfound:
	MOVQ $-1, AX
	XORL CX, CX
	RET

bailout:
	MOVL $1, CX
	RET
