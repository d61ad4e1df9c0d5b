// Package kernel runs programs in the Linux kernel through cilium/ebpf, as an
// independent reference for the engine's semantics, its verifier and its
// speed. Only programs the kernel understands can run there: XDP programs
// (SEC("xdp")) that use kernel helpers only. bpfblk filter and scan programs
// (bpfblk context, bpfblk_* helpers) cannot.
//
// Limits of BPF_PROG_TEST_RUN for XDP measured on the development machines:
// inputs of 14..73,152 bytes are accepted, but direct packet access covers at
// most MaxData (3,520) bytes; the return value is 32 bits.
package kernel

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"

	"github.com/bpfblk/bpfblk/compute/verifier"
)

// MaxData is the largest XDP test input whose bytes are all reachable through
// data..data_end.
const MaxData = 3520

// MinData is the smallest XDP test input the kernel accepts.
const MinData = 14

var (
	availOnce sync.Once
	availErr  error
)

// ProbeTimeout bounds the availability probe: a kernel whose BPF JIT is
// wedged (seen on a 6.18 VM after heavy program load/free churn: the
// bpf_prog_pack mutex deadlocks against the vmap purge workqueue) never
// answers, and then the kernel half is skipped instead of hanging.
const ProbeTimeout = 10 * time.Second

// Available reports whether this process may load and run BPF programs
// (bpf() is refused without CAP_BPF/CAP_SYS_ADMIN or in some sandboxes). It
// reads no environment: a caller that lets its user switch the kernel half
// off (the tests and the CLI, with BPFBLK_KERNEL=0) checks that first.
func Available() error {
	availOnce.Do(func() {
		if pid, ok := jitWedged(); ok {
			availErr = errors.Errorf("kernel BPF JIT looks hung (task %s is blocked in the BPF program allocator); skipping instead of hanging too", pid)
			return
		}
		done := make(chan error, 1)
		go func() { done <- probe() }()
		select {
		case availErr = <-done:
		case <-time.After(ProbeTimeout):
			availErr = errors.Errorf("kernel BPF did not answer within %v (is the BPF JIT hung?)", ProbeTimeout)
		}
	})
	return availErr
}

func probe() error {
	{
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.XDP,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			return errors.Wrap(err, "kernel BPF is not available")
		}
		defer p.Close()
		buf := make([]byte, MinData)
		if _, err := p.Run(&ebpf.RunOptions{Data: buf}); err != nil {
			return errors.Wrap(err, "kernel BPF_PROG_TEST_RUN is not available")
		}
	}
	return nil
}

// Program is a program loaded into the kernel.
type Program struct {
	coll *ebpf.Collection
	prog *ebpf.Program
}

// LoadInstructions loads raw instructions as an XDP program.
func LoadInstructions(insns asm.Instructions) (*Program, error) {
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL", Instructions: verifier.CanonicalAtomics(insns),
	}, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 16})
	if err != nil {
		return nil, errors.Wrap(err, "kernel load")
	}
	return &Program{prog: p}, nil
}

// IsVerifierRejection reports whether err (from LoadInstructions or
// LoadSpec) is the kernel's verifier refusing the program, as opposed to a
// failure to load at all (no permission, no memory, no file descriptors),
// which says nothing about the program.
//
// cilium/ebpf returns every failed load as an *ebpf.VerifierError, with
// whatever log the kernel wrote; the verifier itself refuses a program with
// EACCES or EINVAL.
func IsVerifierRejection(err error) bool {
	var ve *ebpf.VerifierError
	return errors.As(err, &ve) && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL))
}

// LoadSpec loads one XDP program of a collection, with its maps, after
// setting vars. The spec is not modified.
func LoadSpec(cs *ebpf.CollectionSpec, name string, vars map[string]any) (*Program, error) {
	ps, ok := cs.Programs[name]
	if !ok {
		return nil, errors.Errorf("no program %q in object", name)
	}
	if ps.Type != ebpf.XDP {
		return nil, errors.Errorf("program %s in section %q is not an XDP program; the kernel can only check and run xdp programs", name, ps.SectionName)
	}
	cs = cs.Copy()
	for n := range cs.Programs {
		if n != name {
			delete(cs.Programs, n)
		}
	}
	cs.Programs[name].Instructions = verifier.CanonicalAtomics(cs.Programs[name].Instructions)
	for n, v := range vars {
		vs, ok := cs.Variables[n]
		if !ok {
			return nil, errors.Errorf("no variable %q in object", n)
		}
		if err := vs.Set(v); err != nil {
			return nil, errors.Wrapf(err, "set %s", n)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(cs, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 16},
	})
	if err != nil {
		return nil, errors.Wrap(err, "kernel load")
	}
	return &Program{coll: coll, prog: coll.Programs[name]}, nil
}

// Close unloads the program and its maps. Every loaded program holds a file
// descriptor and kernel memory, so a test that loads many must close them;
// one that does not runs out of descriptors (EMFILE) after some 20,000.
func (p *Program) Close() error {
	if p.coll != nil {
		p.coll.Close()
		return nil
	}
	return errors.Wrap(p.prog.Close(), "close kernel program")
}

// Run runs the program once on data and returns its return value and the
// data as the program left it.
func (p *Program) Run(data []byte) (uint32, []byte, error) {
	out := make([]byte, len(data)+256)
	opts := ebpf.RunOptions{Data: data, DataOut: out}
	ret, err := p.prog.Run(&opts)
	if err != nil {
		return 0, nil, errors.Wrap(err, "kernel test run")
	}
	return ret, opts.DataOut, nil
}

// Benchmark runs the program repeat times on data in the kernel and returns
// the mean time per run in nanoseconds as the kernel measured it.
func (p *Program) Benchmark(data []byte, repeat int) (uint32, float64, error) {
	ret, d, err := p.prog.Benchmark(data, repeat, nil)
	if err != nil {
		return 0, 0, errors.Wrap(err, "kernel benchmark")
	}
	return ret, float64(d.Nanoseconds()), nil
}

// Map returns a map of a program loaded with LoadSpec.
func (p *Program) Map(name string) *ebpf.Map {
	if p.coll == nil {
		return nil
	}
	return p.coll.Maps[name]
}

// jitWedged looks for a task blocked inside the kernel's BPF program
// allocator (readable for root in /proc/PID/task/TID/stack). Loading a
// program then blocks forever and the process can never exit, so callers
// must not try.
func jitWedged() (string, bool) {
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/stack")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil || !bytes.Contains(b, []byte("bpf_prog_pack")) {
			continue
		}
		st, err := os.ReadFile(filepath.Join(filepath.Dir(t), "stat"))
		if err != nil {
			continue
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'D' {
			return strings.Split(t, "/")[2], true
		}
	}
	return "", false
}
