package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfblk/bpfblk/compute/abi"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/compute/kernel"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

func init() {
	register(command{name: "prog", summary: "verify, disassemble or run an eBPF program", run: runProg})
}

const progUsage = `usage:
  bpfblk prog verify FILE.o[:PROGRAM] [--set NAME=VALUE]... [--kernel]
  bpfblk prog dis    FILE.o[:PROGRAM] | --raw FILE
  bpfblk prog run    FILE.o[:PROGRAM] [--data FILE] [--set NAME=VALUE]...
                     [--lba N] [--nsid N] [--block-size N] [--budget N]
                     [--engine jit|interpreter]
  bpfblk prog run    --raw FILE [--data FILE] [--engine jit|interpreter]

verify runs bpfblk's verifier (exit 1 with the instruction and the reason on
rejection); --kernel also asks the Linux verifier (xdp programs only).
run prints "r0 = N" (unsigned decimal), the emitted values, then the maps.
--raw reads FILE as raw little-endian instructions and runs them with
r1 = data and r2 = data length. A filter's data is split into --block-size
blocks (default: one block of the whole data). --engine picks how the
program runs: jit (x86-64 machine code, the default on linux/amd64) or
interpreter; both give the same results.
`

// setFlags collects repeated --set NAME=VALUE.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

type progOpts struct {
	sets      setFlags
	kernel    bool
	raw       bool
	dataFile  string
	lba       uint64
	nsid      uint
	blockSize uint
	budget    int64
	engine    string
}

func runProg(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, progUsage)
		return exitUsage
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, progUsage)
		return exitOK
	case "verify", "dis", "run":
	default:
		fmt.Fprintf(stderr, "bpfblk prog: unknown subcommand %q\n%s", sub, progUsage)
		return exitUsage
	}
	var o progOpts
	fs := flag.NewFlagSet("bpfblk prog "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&o.sets, "set", "set global variable NAME=VALUE (repeatable)")
	fs.BoolVar(&o.raw, "raw", false, "FILE holds raw little-endian instructions")
	if sub == "verify" {
		fs.BoolVar(&o.kernel, "kernel", false, "also ask the Linux kernel's verifier")
	}
	if sub == "run" {
		fs.StringVar(&o.dataFile, "data", "", "file with the data to run on")
		fs.Uint64Var(&o.lba, "lba", 0, "LBA of the first block")
		fs.UintVar(&o.nsid, "nsid", 1, "namespace id")
		fs.UintVar(&o.blockSize, "block-size", 0, "block size in bytes (0: the whole data is one block)")
		fs.Int64Var(&o.budget, "budget", engine.DefaultBudget, "instruction budget per run")
		fs.StringVar(&o.engine, "engine", engine.Default().Name(), "jit or interpreter")
	}
	// Flags may come before or after the positional argument.
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, progUsage)
				return exitOK
			}
			fmt.Fprintf(stderr, "bpfblk prog %s: %v\n", sub, err)
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "bpfblk prog %s: want exactly one program file, got %d arguments\n", sub, len(pos))
		return exitUsage
	}
	if o.raw && len(o.sets) > 0 {
		fmt.Fprintf(stderr, "bpfblk prog %s: --set needs an ELF object, not --raw instructions\n", sub)
		return exitUsage
	}
	if o.budget <= 0 && sub == "run" {
		fmt.Fprintf(stderr, "bpfblk prog run: --budget must be positive\n")
		return exitUsage
	}
	if sub == "run" && engine.EngineByName(o.engine) == nil {
		fmt.Fprintf(stderr, "bpfblk prog run: --engine %q: want jit or interpreter\n", o.engine)
		return exitUsage
	}
	var err error
	switch sub {
	case "verify":
		err = progVerify(pos[0], &o, stdout, stderr)
	case "dis":
		err = progDis(pos[0], &o, stdout)
	case "run":
		err = progRun(pos[0], &o, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bpfblk prog %s: %s\n", sub, oneLine(err))
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitFail
	}
	return exitOK
}

var errUsage = errors.New("usage")

// progUsageError is bad input from the user (exit status 2).
type progUsageError struct{ msg string }

func (e progUsageError) Error() string   { return e.msg }
func (e progUsageError) Is(t error) bool { return t == errUsage }

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// splitTarget splits FILE.o[:PROGRAM].
func splitTarget(t string) (file, prog string) {
	if i := strings.LastIndexByte(t, ':'); i > 0 {
		if _, err := os.Stat(t); err != nil {
			return t[:i], t[i+1:]
		}
	}
	return t, ""
}

// loadTarget parses the object and returns the collection, the selected
// program and the variable values from --set.
func loadTarget(target string, o *progOpts) (*ebpf.CollectionSpec, *ebpf.ProgramSpec, map[string]any, error) {
	file, name := splitTarget(target)
	cs, err := loadCollection(file)
	if err != nil {
		return nil, nil, nil, err
	}
	ps, err := engine.SelectProgram(cs, name)
	if err != nil {
		return nil, nil, nil, progUsageError{fmt.Sprintf("%s: %v", file, err)}
	}
	text := map[string]any{}
	for _, s := range o.sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, nil, nil, progUsageError{fmt.Sprintf("--set %q: want NAME=VALUE", s)}
		}
		text[k] = v
	}
	vars, err := typeVars(cs.Variables, text)
	if err != nil {
		return nil, nil, nil, progUsageError{err.Error()}
	}
	return cs, ps, vars, nil
}

func loadRaw(file string) (asm.Instructions, []byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	if len(b) == 0 || len(b)%asm.InstructionSize != 0 {
		return nil, nil, fmt.Errorf("%s: %d bytes is not a whole number of 8-byte instructions", file, len(b))
	}
	insns, err := asm.AppendInstructions(nil, bytes.NewReader(b), binary.LittleEndian, "linux")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", file, err)
	}
	return insns, b, nil
}

func loadProgram(target string, o *progOpts) (*engine.Program, error) {
	if o.raw {
		_, b, err := loadRaw(target)
		if err != nil {
			return nil, err
		}
		return engine.FromBytes(target, abi.TypeRaw, b)
	}
	cs, ps, vars, err := loadTarget(target, o)
	if err != nil {
		return nil, err
	}
	p, err := engine.LoadSpec(cs, &engine.LoadOptions{Program: ps.Name, Vars: vars})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ps.Name, err)
	}
	return p, nil
}

func progVerify(target string, o *progOpts, stdout, stderr io.Writer) error {
	p, err := loadProgram(target, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %d instructions, %d maps)\n", p.Name, p.Type, len(p.Insns), len(p.Maps))
	if !o.kernel {
		return nil
	}
	switch p.Type {
	case abi.TypeXDP:
	case abi.TypeRaw:
		fmt.Fprintf(stdout, "kernel: skipped: raw programs (r1 = data, r2 = length) have no Linux program type; only xdp programs can be checked\n")
		return nil
	default:
		fmt.Fprintf(stdout, "kernel: skipped: %s programs use the bpfblk context and helpers, which Linux does not have; only xdp programs can be checked\n", p.Type)
		return nil
	}
	if err := kernel.Available(); err != nil {
		fmt.Fprintf(stdout, "kernel: skipped: %v\n", err)
		return nil
	}
	var kp *kernel.Program
	if o.raw {
		kp, err = kernel.LoadInstructions(p.Insns)
	} else {
		cs, ps, vars, lerr := loadTarget(target, o)
		if lerr != nil {
			return lerr
		}
		kp, err = kernel.LoadSpec(cs, ps.Name, vars)
	}
	if err != nil {
		return fmt.Errorf("kernel rejects %s: %v", p.Name, err)
	}
	kp.Close()
	fmt.Fprintf(stdout, "kernel: ok\n")
	return nil
}

func progDis(target string, o *progOpts, stdout io.Writer) error {
	var insns asm.Instructions
	if o.raw {
		var err error
		if insns, _, err = loadRaw(target); err != nil {
			return err
		}
	} else {
		_, ps, _, err := loadTarget(target, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s (section %s):\n", ps.Name, ps.SectionName)
		insns = ps.Instructions
	}
	fmt.Fprintf(stdout, "%v", insns)
	return nil
}

func progRun(target string, o *progOpts, stdout io.Writer) error {
	var data []byte
	if o.dataFile != "" {
		var err error
		if data, err = os.ReadFile(o.dataFile); err != nil {
			return err
		}
	}
	p, err := loadProgram(target, o)
	if err != nil {
		return err
	}
	if o.blockSize > 0 && len(data)%int(o.blockSize) != 0 {
		return progUsageError{fmt.Sprintf("%d bytes of data is not a whole number of %d-byte blocks", len(data), o.blockSize)}
	}
	x, err := engine.Compile(p, engine.EngineByName(o.engine))
	if err != nil {
		return err
	}
	inst := x.NewInstance()
	inst.SetBudget(o.budget)
	inst.SetTrace(stdout)
	// SIGINT stops the program wherever it is (engine.ErrInterrupted).
	var stop atomic.Bool
	inst.SetInterrupt(&stop)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	go func() {
		<-ctx.Done()
		stop.Store(true)
	}()
	emit := make([]uint64, 1<<16)
	res, err := inst.Run(&engine.Context{
		Data: data, LBA: o.lba, NSID: uint32(o.nsid), BlockSize: uint32(o.blockSize),
	}, emit)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "r0 = %d\n", res.R0)
	if res.Emitted > 0 || res.Overflow {
		fmt.Fprintf(stdout, "emitted = %d", res.Emitted)
		if res.Overflow {
			fmt.Fprint(stdout, " (more were dropped)")
		}
		fmt.Fprintln(stdout)
		for _, v := range emit[:res.Emitted] {
			fmt.Fprintf(stdout, "  %d\n", v)
		}
	}
	for _, m := range engine.MergeMaps(inst) {
		printMap(stdout, m)
	}
	return nil
}

func printMap(w io.Writer, m engine.MapData) {
	kind := "array"
	if m.Kind == verifier.MapHash {
		kind = "hash"
	}
	fmt.Fprintf(w, "map %s (%s, key %d bytes, value %d bytes, %d entries):\n", m.Name, kind, m.KeySize, m.ValueSize, len(m.Entries))
	for _, e := range m.Entries {
		fmt.Fprintf(w, "  %s: %s\n", fmtBytes(e.Key), fmtBytes(e.Value))
	}
}

// fmtBytes prints little-endian integers of 1, 2, 4 or 8 bytes as unsigned
// decimal, multiples of 8 bytes as decimal words, anything else as hex.
func fmtBytes(b []byte) string {
	switch len(b) {
	case 1:
		return fmt.Sprint(b[0])
	case 2:
		return fmt.Sprint(binary.LittleEndian.Uint16(b))
	case 4:
		return fmt.Sprint(binary.LittleEndian.Uint32(b))
	case 8:
		return fmt.Sprint(binary.LittleEndian.Uint64(b))
	}
	if len(b)%8 == 0 {
		var parts []string
		for i := 0; i < len(b); i += 8 {
			parts = append(parts, fmt.Sprint(binary.LittleEndian.Uint64(b[i:])))
		}
		return "{" + strings.Join(parts, " ") + "}"
	}
	return fmt.Sprintf("%x", b)
}
