//go:build linux && amd64

package engine

import (
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/abi"
)

// TestJITWithoutExecMemory: where executable memory is refused, the JIT
// says so, and Compile(p, nil) runs the program on the interpreter instead.
func TestJITWithoutExecMemory(t *testing.T) {
	p, err := FromInstructions("t", abi.TypeRaw, asm.Instructions{asm.Mov.Imm(asm.R0, 42), asm.Return()})
	if err != nil {
		t.Fatal(err)
	}
	saved, savedDefault := jitProtect, defaultEngine
	defer func() { jitProtect, defaultEngine = saved, savedDefault }()
	jitProtect = func([]byte) error { return unix.EACCES }
	defaultEngine = JIT

	if _, err := Compile(p, JIT); !errors.Is(err, ErrNoExecMemory) {
		t.Fatalf("explicit JIT: got %v, want ErrNoExecMemory", err)
	}
	x, err := Compile(p, nil)
	if err != nil || x.Engine() != "interpreter" {
		t.Fatalf("default engine: %v, engine %q", err, x.Engine())
	}
	res, err := x.NewInstance().Run(&Context{Data: make([]byte, 8)}, nil)
	if err != nil || res.R0 != 42 {
		t.Fatalf("run: %v %v", res, err)
	}
	jitProtect = saved
	if x, err := Compile(p, nil); err != nil || x.Engine() != "jit" {
		t.Fatalf("with exec memory: %v", err)
	}
}
