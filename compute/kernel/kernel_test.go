package kernel_test

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/kernel"
)

// kernelAvailable is kernel.Available, unless BPFBLK_KERNEL=0 in the
// environment switches the kernel tests off.
func kernelAvailable() error {
	if os.Getenv("BPFBLK_KERNEL") == "0" {
		return errors.New("kernel BPF disabled by BPFBLK_KERNEL=0")
	}
	return kernel.Available()
}

func TestRunInKernel(t *testing.T) {
	if err := kernelAvailable(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	// r0 = data[0] + 1 after a bounds check; data[1] = 0x5a.
	p, err := kernel.LoadInstructions(asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 2),
		asm.Mov.Imm(asm.R0, 0),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Add.Imm(asm.R0, 1),
		asm.StoreImm(asm.R2, 1, 0x5a, asm.Byte),
		asm.Return().WithSymbol("out"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data := make([]byte, kernel.MinData)
	data[0] = 41
	ret, out, err := p.Run(data)
	if err != nil || ret != 42 || out[1] != 0x5a {
		t.Fatalf("ret %d, out[1] %#x, err %v", ret, out[1], err)
	}
	if _, err := kernel.LoadInstructions(asm.Instructions{asm.Return()}); err == nil {
		t.Fatal("kernel accepted an exit without r0")
	}
}

// TestLoadFailureIsNotARejection: a load that fails for lack of file
// descriptors is not the verifier's answer, and programs closed after use
// give their descriptors back.
func TestLoadFailureIsNotARejection(t *testing.T) {
	if err := kernelAvailable(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	prog := asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}
	_, err := kernel.LoadInstructions(asm.Instructions{asm.Return()})
	if !kernel.IsVerifierRejection(err) {
		t.Fatalf("an exit without r0: %v is not a verifier rejection", err)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// Loading and closing more programs than the limit allows open at once.
	low := old
	low.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	defer func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old) }()
	for i := 0; i < 200; i++ {
		p, err := kernel.LoadInstructions(prog)
		if err != nil {
			t.Fatalf("load %d with programs closed after use: %v", i, err)
		}
		p.Close()
	}
	// Without closing, the descriptors run out, and that is no rejection.
	var open []*kernel.Program
	defer func() {
		for _, p := range open {
			p.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		p, err := kernel.LoadInstructions(prog)
		if err != nil {
			if kernel.IsVerifierRejection(err) {
				t.Fatalf("running out of descriptors reported as a verifier rejection: %v", err)
			}
			return
		}
		open = append(open, p)
	}
	t.Fatal("200 programs open under a limit of 64 descriptors")
}
