package amd64

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// encodings lists one instruction per case with the GNU objdump (Intel
// syntax) reading of it. The register choices cover the encoding corners:
// r8-r15 (REX.R/X/B), rsi/rdi as byte registers (REX needed), r12 as a base
// (SIB needed), r13 as a base (displacement needed), disp8 and disp32.
var encodings = []struct {
	emit func(a *Asm)
	want string
}{
	{func(a *Asm) { a.ALURR(Add, W64, RAX, RDI) }, "add rax,rdi"},
	{func(a *Asm) { a.CallR(R11) }, "call r11"},
	{func(a *Asm) { a.CallR(RAX) }, "call rax"},
	{func(a *Asm) { a.ALURR(Sub, W32, R9, R15) }, "sub r9d,r15d"},
	{func(a *Asm) { a.ALURR(Xor, W64, R12, R13) }, "xor r12,r13"},
	{func(a *Asm) { a.ALURR(Cmp, W32, RSI, RDX) }, "cmp esi,edx"},
	{func(a *Asm) { a.ALURI(Add, W64, RBX, 1) }, "add rbx,0x1"},
	{func(a *Asm) { a.ALURI(And, W64, R14, -1) }, "and r14,0xffffffffffffffff"},
	{func(a *Asm) { a.ALURI(Or, W32, R8, 0x12345) }, "or r8d,0x12345"},
	{func(a *Asm) { a.ALURI(Cmp, W64, RCX, 63) }, "cmp rcx,0x3f"},
	{func(a *Asm) { a.ALURI(Sub, W64, R12, 512) }, "sub r12,0x200"},
	{func(a *Asm) { a.ALURM(Cmp, W64, R11, MI(R10, RCX, 8, 0x88)) }, "cmp r11,QWORD PTR [r10+rcx*8+0x88]"},
	{func(a *Asm) { a.ALURM(Add, W64, R11, MI(R10, RCX, 8, 0x78)) }, "add r11,QWORD PTR [r10+rcx*8+0x78]"},
	{func(a *Asm) { a.ALUMI(Sub, W64, M(R10, 0x700), 14) }, "sub QWORD PTR [r10+0x700],0xe"},
	{func(a *Asm) { a.ALUMI(Sub, W64, M(R10, 8), 1000) }, "sub QWORD PTR [r10+0x8],0x3e8"},
	{func(a *Asm) { a.ALUMR(Add, W64, M(R11, -8), R15) }, "add QWORD PTR [r11-0x8],r15"},
	{func(a *Asm) { a.ALUMR(Xor, W32, M(R11, -4), RSI) }, "xor DWORD PTR [r11-0x4],esi"},
	{func(a *Asm) { a.TestRR(W64, RCX, RCX) }, "test rcx,rcx"},
	{func(a *Asm) { a.TestRI(W32, R13, 0x80) }, "test r13d,0x80"},
	{func(a *Asm) { a.MovRR(W64, RCX, R9) }, "mov rcx,r9"},
	{func(a *Asm) { a.MovRR(W32, R11, R11) }, "mov r11d,r11d"},
	{func(a *Asm) { a.MovRI32(R13, 0xdeadbeef) }, "mov r13d,0xdeadbeef"},
	{func(a *Asm) { a.MovRI(RAX, 7) }, "mov eax,0x7"},
	{func(a *Asm) { a.MovRI(RBX, ^uint64(0)) }, "mov rbx,0xffffffffffffffff"},
	{func(a *Asm) { a.MovRI(R11, 1<<32) }, "movabs r11,0x100000000"},
	{func(a *Asm) { a.Load(W8, false, RDI, M(R11, -1)) }, "movzx edi,BYTE PTR [r11-0x1]"},
	{func(a *Asm) { a.Load(W16, false, R9, M(R11, -2)) }, "movzx r9d,WORD PTR [r11-0x2]"},
	{func(a *Asm) { a.Load(W32, false, RSI, M(R11, -4)) }, "mov esi,DWORD PTR [r11-0x4]"},
	{func(a *Asm) { a.Load(W64, false, R14, M(R11, -8)) }, "mov r14,QWORD PTR [r11-0x8]"},
	{func(a *Asm) { a.Load(W8, true, RAX, M(R11, -1)) }, "movsx rax,BYTE PTR [r11-0x1]"},
	{func(a *Asm) { a.Load(W16, true, R12, M(R11, -2)) }, "movsx r12,WORD PTR [r11-0x2]"},
	{func(a *Asm) { a.Load(W32, true, RDX, M(R11, -4)) }, "movsxd rdx,DWORD PTR [r11-0x4]"},
	{func(a *Asm) { a.Load(W64, false, R12, M(R10, 80)) }, "mov r12,QWORD PTR [r10+0x50]"},
	{func(a *Asm) { a.Load(W64, false, RAX, M(R12, 0)) }, "mov rax,QWORD PTR [r12]"},
	{func(a *Asm) { a.Load(W64, false, RAX, M(R13, 0)) }, "mov rax,QWORD PTR [r13+0x0]"},
	{func(a *Asm) { a.Load(W64, false, RAX, M(RBP, 0)) }, "mov rax,QWORD PTR [rbp+0x0]"},
	{func(a *Asm) { a.Load(W64, false, RBX, MI(R10, RCX, 1, 0x710)) }, "mov rbx,QWORD PTR [r10+rcx*1+0x710]"},
	{func(a *Asm) { a.Load(W8, false, RAX, MI(RCX, R11, 1, 0)) }, "movzx eax,BYTE PTR [rcx+r11*1]"},
	{func(a *Asm) { a.Store(W8, M(R11, -1), RSI) }, "mov BYTE PTR [r11-0x1],sil"},
	{func(a *Asm) { a.Store(W8, M(R11, -1), RDI) }, "mov BYTE PTR [r11-0x1],dil"},
	{func(a *Asm) { a.Store(W8, M(R11, -1), RBX) }, "mov BYTE PTR [r11-0x1],bl"},
	{func(a *Asm) { a.Store(W16, M(R11, -2), R8) }, "mov WORD PTR [r11-0x2],r8w"},
	{func(a *Asm) { a.Store(W32, M(R12, -4), RDX) }, "mov DWORD PTR [r12-0x4],edx"},
	{func(a *Asm) { a.Store(W64, M(R10, 0), R15) }, "mov QWORD PTR [r10],r15"},
	{func(a *Asm) { a.StoreImm(W8, M(R11, -1), -1) }, "mov BYTE PTR [r11-0x1],0xff"},
	{func(a *Asm) { a.StoreImm(W16, M(R11, -2), 0x1234) }, "mov WORD PTR [r11-0x2],0x1234"},
	{func(a *Asm) { a.StoreImm(W32, M(R11, -4), 5) }, "mov DWORD PTR [r11-0x4],0x5"},
	{func(a *Asm) { a.StoreImm(W64, M(R10, 0x7f0), -2) }, "mov QWORD PTR [r10+0x7f0],0xfffffffffffffffe"},
	{func(a *Asm) { a.Lea(R11, M(R13, -32768)) }, "lea r11,[r13-0x8000]"},
	{func(a *Asm) { a.Lea(RCX, MI(RCX, RCX, 2, 0)) }, "lea rcx,[rcx+rcx*2]"},
	{func(a *Asm) { a.Lea(R11, M(R12, 8)) }, "lea r11,[r12+0x8]"},
	{func(a *Asm) { a.ImulRR(W64, R8, R14) }, "imul r8,r14"},
	{func(a *Asm) { a.ImulRI(W32, RSI, -3) }, "imul esi,esi,0xfffffffd"},
	{func(a *Asm) { a.ShiftRI(Shl, W64, RDX, 3) }, "shl rdx,0x3"},
	{func(a *Asm) { a.ShiftRI(Shr, W32, R15, 16) }, "shr r15d,0x10"},
	{func(a *Asm) { a.ShiftRI(Sar, W64, R9, 63) }, "sar r9,0x3f"},
	{func(a *Asm) { a.ShiftRI(Rol, W16, RAX, 8) }, "rol ax,0x8"},
	{func(a *Asm) { a.ShiftRCL(Shl, W32, RBX) }, "shl ebx,cl"},
	{func(a *Asm) { a.ShiftRCL(Sar, W64, R13) }, "sar r13,cl"},
	{func(a *Asm) { a.Neg(W64, RDI) }, "neg rdi"},
	{func(a *Asm) { a.Neg(W32, R12) }, "neg r12d"},
	{func(a *Asm) { a.Div(W64, RCX) }, "div rcx"},
	{func(a *Asm) { a.Idiv(W32, RCX) }, "idiv ecx"},
	{func(a *Asm) { a.SignExtendAX(W64) }, "cqo"},
	{func(a *Asm) { a.SignExtendAX(W32) }, "cdq"},
	{func(a *Asm) { a.Movsx(W64, W8, RAX, RSI) }, "movsx rax,sil"},
	{func(a *Asm) { a.Movsx(W32, W8, R9, RDI) }, "movsx r9d,dil"},
	{func(a *Asm) { a.Movsx(W64, W16, R14, R15) }, "movsx r14,r15w"},
	{func(a *Asm) { a.Movsx(W64, W32, R11, R11) }, "movsxd r11,r11d"},
	{func(a *Asm) { a.Movzx16(RSI, RSI) }, "movzx esi,si"},
	{func(a *Asm) { a.Bswap(W32, R13) }, "bswap r13d"},
	{func(a *Asm) { a.Bswap(W64, RAX) }, "bswap rax"},
	{func(a *Asm) { a.Cmpxchg(W64, M(R11, -8), R9) }, "cmpxchg QWORD PTR [r11-0x8],r9"},
	{func(a *Asm) { a.Cmpxchg(W32, M(R11, -4), RSI) }, "cmpxchg DWORD PTR [r11-0x4],esi"},
	{func(a *Asm) { a.JmpR(R11) }, "jmp r11"},
	{func(a *Asm) { a.JmpM(MI(R10, RCX, 1, 0x700)) }, "jmp QWORD PTR [r10+rcx*1+0x700]"},
	{func(a *Asm) { a.Ret() }, "ret"},
	{func(a *Asm) { a.ShiftX(Shl, W64, RAX, RDI, RCX) }, "shlx rax,rdi,rcx"},
	{func(a *Asm) { a.ShiftX(Shr, W32, R9, R15, RSI) }, "shrx r9d,r15d,esi"},
	{func(a *Asm) { a.ShiftX(Sar, W64, R13, RBX, R12) }, "sarx r13,rbx,r12"},
	{func(a *Asm) { a.ShiftX(Shl, W32, RDX, R8, R15) }, "shlx edx,r8d,r15d"},
	{func(a *Asm) { a.Movbe(W64, R14, MI(RBP, R13, 1, 8)) }, "movbe r14,QWORD PTR [rbp+r13*1+0x8]"},
	{func(a *Asm) { a.Movbe(W32, RAX, MI(RCX, R11, 1, 0)) }, "movbe eax,DWORD PTR [rcx+r11*1]"},
	{func(a *Asm) { a.Movbe(W16, RSI, M(R11, -2)) }, "movbe si,WORD PTR [r11-0x2]"},
}

var spaces = regexp.MustCompile(`\s+`)

// TestEncodingsAgainstObjdump decodes every encoding with GNU objdump and
// compares its reading with the intended instruction.
func TestEncodingsAgainstObjdump(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("objdump (binutils) not installed: encodings not cross-checked")
	}
	var a Asm
	for _, c := range encodings {
		c.emit(&a)
	}
	code, err := a.Finish()
	if err != nil {
		t.Fatal(err)
	}
	got := disassemble(t, objdump, code)
	if len(got) != len(encodings) {
		t.Fatalf("objdump read %d instructions, want %d:\n%s", len(got), len(encodings), strings.Join(got, "\n"))
	}
	for i, c := range encodings {
		if got[i] != c.want {
			t.Errorf("case %d: objdump reads %q, want %q", i, got[i], c.want)
		}
	}
}

// TestLabels checks rel32 jumps and RIP-relative lea in both directions.
func TestLabels(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("objdump (binutils) not installed")
	}
	var a Asm
	top, end := a.NewLabel(), a.NewLabel()
	a.Bind(top)             // 0
	a.Jcc(CondNE, end)      // 0: 6 bytes
	a.Jmp(top)              // 6: 5 bytes
	a.LeaLabel(R11, end)    // 11: 7 bytes
	a.Jcc(CondL.Not(), top) // 18: 6 bytes
	a.Bind(end)             // 24
	a.Ret()
	code, err := a.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"jne 0x18", "jmp 0x0", "lea r11,[rip+0x6] # 0x18", "jge 0x0", "ret"}
	got := disassemble(t, objdump, code)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var b Asm
	b.Jmp(b.NewLabel())
	if _, err := b.Finish(); err == nil {
		t.Fatal("an unbound label was accepted")
	}
}

func disassemble(t *testing.T, objdump string, code []byte) []string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "code.bin")
	if err := os.WriteFile(f, code, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(objdump, "-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", f).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump: %v\n%s", err, out)
	}
	var insns []string
	for _, line := range strings.Split(string(out), "\n") {
		// "   4:	48 01 f8             	add    rax,rdi"
		parts := strings.Split(line, "\t")
		if len(parts) < 3 || !strings.HasSuffix(strings.TrimSpace(parts[0]), ":") {
			continue
		}
		insns = append(insns, strings.TrimSpace(spaces.ReplaceAllString(strings.Join(parts[2:], " "), " ")))
	}
	return insns
}
