package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// buildCLI builds this command into a temporary directory, once per test
// binary, for tests that need a real process to send signals to.
func buildCLI(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bpfblk-cli")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "bpfblk")
		out, err := exec.Command("go", "build", "-o", cliPath, ".").CombinedOutput()
		if err != nil {
			cliErr = &buildError{err, out}
		}
	})
	if cliErr != nil {
		t.Fatalf("go build: %v", cliErr)
	}
	return cliPath
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + ": " + string(e.out) }

// cpuTime returns the user+system CPU time a process has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// interruptCLI starts the CLI with args, waits until it has used cpu of
// processor time (its setup takes less: a program is running), sends SIGINT
// and returns how long it took to exit after the signal, its exit status and
// its stderr.
func interruptCLI(t *testing.T, cpu time.Duration, args ...string) (time.Duration, int, string) {
	t.Helper()
	cmd := exec.Command(buildCLI(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for cpuTime(cmd.Process.Pid) < cpu {
		select {
		case err := <-exited:
			t.Fatalf("bpfblk %s exited before the signal: %v\n%s", strings.Join(args, " "), err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("bpfblk %s used %v of CPU in 30 s", strings.Join(args, " "), cpuTime(cmd.Process.Pid))
		}
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("bpfblk %s did not exit within 10 s of SIGINT\n%s", strings.Join(args, " "), stderr.String())
	}
	took := time.Since(t0)
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		t.Fatalf("bpfblk %s was killed by %v instead of handling SIGINT\n%s", strings.Join(args, " "), ws.Signal(), stderr.String())
	}
	return took, ws.ExitStatus(), stderr.String()
}

// TestScanSIGINTStopsHostileFilter: SIGINT stops a scan whose filter never
// ends (testdata/hostile.o: a loop calling a long function, which only the
// instruction budget ends, after about a second per block) within a second,
// with status 1 and one line that says so (not a fault line per chunk the
// signal stopped).
func TestScanSIGINTStopsHostileFilter(t *testing.T) {
	took, code, stderr := interruptCLI(t, 500*time.Millisecond, "scan", "--filter", "testdata/hostile.o", "--engine", "host")
	t.Logf("exited %v after SIGINT with status %d", took, code)
	if code != exitFail || strings.Count(stderr, "bpfblk scan: interrupted: ") != 1 || strings.Contains(stderr, "fault:") || strings.Contains(stderr, "canceled") {
		t.Fatalf("status %d, stderr:\n%s", code, stderr)
	}
	if took > time.Second {
		t.Fatalf("scan took %v to stop after SIGINT", took)
	}
}

// TestProgRunSIGINTStopsHostileFilter: the same for prog run, with a budget
// that would let the filter run for hours, on both engines.
func TestProgRunSIGINTStopsHostileFilter(t *testing.T) {
	data := filepath.Join(t.TempDir(), "block")
	if err := os.WriteFile(data, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, eng := range []string{"jit", "interpreter"} {
		took, code, stderr := interruptCLI(t, 300*time.Millisecond, "prog", "run", "testdata/hostile.o",
			"--data", data, "--budget", strconv.Itoa(1<<50), "--engine", eng)
		t.Logf("%s: exited %v after SIGINT with status %d: %s", eng, took, code, strings.TrimSpace(stderr))
		if code != exitFail || !strings.Contains(stderr, "run interrupted") {
			t.Fatalf("%s: status %d, stderr:\n%s", eng, code, stderr)
		}
		if took > time.Second {
			t.Fatalf("%s: prog run took %v to stop after SIGINT", eng, took)
		}
	}
}

// TestProgRunHostileTraceLength: bpf_trace_printk with a length read from
// the data once crashed prog run (the bounds check wrapped). The verifier
// now refuses an unbounded length, and a bounded one past the data is a
// fault, on both engines; nothing panics.
func TestProgRunHostileTraceLength(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, insns asm.Instructions) string {
		var raw bytes.Buffer
		if err := insns.Marshal(&raw, binary.LittleEndian); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, raw.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unbounded := write("unbounded", asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R1, 0x6425), // "%d"
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord), // n from the data
		asm.BuiltinFunc(abi.HelperTrace).Call(),
		asm.Return(),
	})
	bounded := write("bounded", asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.And.Imm(asm.R2, 0x7fffffff), // at most 2 GiB: accepted, checked when it runs
		asm.BuiltinFunc(abi.HelperTrace).Call(),
		asm.Return(),
	})
	// The length is the data's first 8 bytes: -2032, which the format's
	// stack offset (4088) wrapped to 2056, or 1000, past the 64 bytes.
	lengthData := func(name string, n uint64) string {
		p := filepath.Join(dir, name)
		d := binary.LittleEndian.AppendUint64(nil, n)
		if err := os.WriteFile(p, append(d, make([]byte, 56)...), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrapping, past := lengthData("wrapping", 0xffff_ffff_ffff_f810), lengthData("past", 1000)
	for _, eng := range []string{"jit", "interpreter"} {
		code, out, errOut := runCLI("prog", "run", "--raw", unbounded, "--data", wrapping, "--engine", eng)
		if code != exitFail || !strings.Contains(errOut, "instruction 6") || !strings.Contains(errOut, "bound it") {
			t.Fatalf("%s, unbounded length: status %d, stdout %q, stderr %q", eng, code, out, errOut)
		}
		code, out, errOut = runCLI("prog", "run", "--raw", bounded, "--data", past, "--engine", eng)
		if code != exitFail || !strings.Contains(errOut, "helper bpf_trace_printk format") {
			t.Fatalf("%s, length past the data: status %d, stdout %q, stderr %q", eng, code, out, errOut)
		}
	}
}
