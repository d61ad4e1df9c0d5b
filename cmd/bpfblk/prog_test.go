package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
)

const patternObj = "../../filters/pattern_bpfel.o"

func writeRaw(t *testing.T, insns asm.Instructions) string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "prog.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := insns.Marshal(f, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProgVerify(t *testing.T) {
	code, out, errOut := runCLI("prog", "verify", patternObj+":pattern_filter", "--set", "pattern=hex:616263", "--set", "pattern_len=3")
	if code != exitOK || !strings.Contains(out, "pattern_filter: ok (bpfblk/filter") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A rejection names the instruction and the reason, on one line.
	bad := writeRaw(t, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R5), asm.Return()})
	code, _, errOut = runCLI("prog", "verify", "--raw", bad)
	if code != exitFail || !strings.Contains(errOut, "instruction 0 (MovReg dst: r0 src: r5): read of uninitialised register r5") ||
		strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestProgVerifyKernel(t *testing.T) {
	code, out, errOut := runCLI("prog", "verify", patternObj+":pattern_xdp", "--kernel", "--set", "pattern=0x6261", "--set", "pattern_len=2")
	if code != exitOK || !(strings.Contains(out, "kernel: ok") || strings.Contains(out, "kernel: skipped")) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Log(strings.TrimSpace(out))
	code, out, _ = runCLI("prog", "verify", patternObj+":pattern_filter", "--kernel")
	if code != exitOK || !strings.Contains(out, "kernel: skipped: bpfblk/filter programs") {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}

func TestProgRunRaw(t *testing.T) {
	// r0 = 7 + data[1]; with r1 = data, r2 = len.
	prog := writeRaw(t, asm.Instructions{
		asm.Mov.Imm(asm.R0, 7),
		asm.LoadMem(asm.R3, asm.R1, 1, asm.Byte),
		asm.Add.Reg(asm.R0, asm.R3),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return(),
	})
	data := writeFile(t, []byte("AB"))
	for _, e := range []string{"jit", "interpreter"} {
		code, out, errOut := runCLI("prog", "run", "--raw", prog, "--data", data, "--engine", e)
		if code != exitOK || out != "r0 = 75\n" {
			t.Fatalf("--engine %s: exit %d, stdout %q, stderr %q", e, code, out, errOut)
		}
	}
	// Unsigned decimal.
	neg := writeRaw(t, asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()})
	if _, out, _ := runCLI("prog", "run", neg, "--raw"); out != "r0 = 18446744073709551615\n" {
		t.Fatalf("stdout %q", out)
	}
	// Out of bounds: a fault, exit 1, one line.
	code, _, errOut := runCLI("prog", "run", "--raw", prog)
	if code != exitFail || !strings.Contains(errOut, "outside the program's memory") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// Endless loop: the budget stops it.
	loop := writeRaw(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Add.Imm(asm.R0, 1).WithSymbol("l"), asm.JGE.Imm(asm.R0, 0, "l"), asm.Return()})
	code, _, errOut = runCLI("prog", "run", "--raw", loop, "--budget", "1000")
	if code != exitFail || !strings.Contains(errOut, "budget") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestProgRunFilterAndMaps(t *testing.T) {
	data := make([]byte, 4*512)
	copy(data[2*512+100:], "needle")
	df := writeFile(t, data)
	code, out, errOut := runCLI("prog", "run", patternObj+":pattern_filter", "--data", df, "--block-size", "512",
		"--lba", "1000", "--set", "pattern=hex:6e6565646c65", "--set", "pattern_len=6")
	if code != exitOK || out != "r0 = 1\nemitted = 1\n  1002\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// --checked: every access checked at run time, the same result.
	code, out, errOut = runCLI("prog", "run", patternObj+":pattern_filter", "--data", df, "--block-size", "512",
		"--lba", "1000", "--set", "pattern=hex:6e6565646c65", "--set", "pattern_len=6", "--checked")
	if code != exitOK || out != "r0 = 1\nemitted = 1\n  1002\n" {
		t.Fatalf("--checked: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// pattern is a __u64: text is not guessed into bytes.
	code, _, errOut = runCLI("prog", "run", patternObj+":pattern_filter", "--data", df, "--set", "pattern=needle")
	if code != exitUsage || !strings.Contains(errOut, `--set pattern: "needle" is not a number (__u64 takes decimal, 0x hex, or hex:BYTES)`) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	recs := make([]byte, 3*16)
	for i := 0; i < 3; i++ {
		binary.LittleEndian.PutUint32(recs[16*i:], 7)
		binary.LittleEndian.PutUint32(recs[16*i+4:], uint32(10*(i+1)))
	}
	code, out, errOut = runCLI("prog", "run", "../../filters/aggregate_bpfel.o", "--data", writeFile(t, recs))
	want := "r0 = 3\nmap totals (array, key __u32, value __u64, 2 entries):\n  key: 0  value: 3\n  key: 1  value: 60\n" +
		"map by_key (hash, key __u32, value struct stats, 1 entries):\n  key: 7  value: {count: 3, sum: 60}\n"
	if code != exitOK || out != want {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestProgDis(t *testing.T) {
	code, out, _ := runCLI("prog", "dis", patternObj+":pattern_memmem")
	if code != exitOK || !strings.Contains(out, "pattern_memmem (section bpfblk/filter)") || !strings.Contains(out, "Call FnUnspec") && !strings.Contains(out, "Call") {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}

func TestProgBadInput(t *testing.T) {
	raw := writeRaw(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"prog"}, exitUsage, "usage"},
		{[]string{"prog", "frob"}, exitUsage, "unknown subcommand"},
		{[]string{"prog", "run"}, exitUsage, "want exactly one program file"},
		{[]string{"prog", "run", "a", "b"}, exitUsage, "want exactly one program file"},
		{[]string{"prog", "run", "--nope", raw}, exitUsage, "flag provided but not defined"},
		{[]string{"prog", "verify", patternObj}, exitUsage, "name one as FILE.o:PROGRAM"},
		{[]string{"prog", "verify", patternObj + ":nosuch"}, exitUsage, "no program \"nosuch\""},
		{[]string{"prog", "run", patternObj + ":pattern_filter", "--set", "nosuch=1"}, exitUsage, "no variable"},
		{[]string{"prog", "run", patternObj + ":pattern_filter", "--set", "pattern"}, exitUsage, "want NAME=VALUE"},
		{[]string{"prog", "run", "--raw", raw, "--set", "a=1"}, exitUsage, "--set needs an ELF object"},
		{[]string{"prog", "run", "--raw", raw, "--budget", "0"}, exitUsage, "flag -budget: want an integer from 1"},
		{[]string{"prog", "run", "--raw", raw, "--engine", "fast"}, exitUsage, "want jit or interpreter"},
		{[]string{"prog", "verify", "/nonexistent.o"}, exitFail, "no such file"},
		{[]string{"prog", "verify", raw}, exitFail, "not a BPF ELF object"},
		{[]string{"prog", "run", "--raw", writeFile(t, []byte{1, 2, 3})}, exitFail, "not a whole number of 8-byte instructions"},
		{[]string{"prog", "run", "--raw", raw, "--data", "/nonexistent"}, exitFail, "no such file"},
		{[]string{"prog", "run", patternObj + ":pattern_filter", "--data", writeFile(t, make([]byte, 100)), "--block-size", "512"}, exitUsage, "not a whole number of 512-byte blocks"},
	}
	for _, tc := range cases {
		code, _, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) || strings.Contains(errOut, "goroutine") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
}
