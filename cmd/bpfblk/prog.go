package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
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
)

func init() {
	register(command{name: "prog", summary: "verify, disassemble or run an eBPF program", run: runProg})
}

const progUsage = `usage:
  bpfblk prog verify FILE.o[:PROGRAM] [--set NAME=VALUE]... [--kernel]
                     [--map-memory BYTES] [--log]
  bpfblk prog dis    FILE.o[:PROGRAM] | --raw FILE
  bpfblk prog run    FILE.o[:PROGRAM] [--data FILE] [--set NAME=VALUE]...
                     [--lba N] [--nsid N] [--block-size N] [--budget N]
                     [--engine jit|interpreter] [--checked] [--map-memory BYTES] [--log]
  bpfblk prog run    --raw FILE [--data FILE] [--engine jit|interpreter] [--checked] [--log]

verify runs bpfblk's verifier (exit 1 with the instruction, its C source line
and the reason on rejection); --kernel also asks the Linux verifier (xdp
programs only). --log prints, on rejection, the verifier's log of the path
that led there: each instruction with the register state before it.
run prints "r0 = N" (unsigned decimal), the emitted values, then the maps.
--raw reads FILE as raw little-endian instructions and runs them with
r1 = data and r2 = data length. A filter's data is split into --block-size
blocks (default: one block of the whole data). --engine picks how the
program runs: jit (x86-64 machine code, the default on linux/amd64) or
interpreter; both give the same results. --checked makes the JIT check
every load and store at run time, as for accesses the verifier could not
prove (for debugging a suspected verifier bug; the interpreter always checks).

` + mapMemoryHelp + `
run 'bpfblk prog SUBCOMMAND -h' for a subcommand's flags
`

// progSynopses are the usage lines of prog's subcommands.
var progSynopses = map[string]string{
	"verify": "prog verify FILE.o[:PROGRAM] | --raw FILE [--set NAME=VALUE]... [--kernel] [--map-memory BYTES]",
	"dis":    "prog dis FILE.o[:PROGRAM] | --raw FILE",
	"run": "prog run FILE.o[:PROGRAM] | --raw FILE [--data FILE] [--set NAME=VALUE]... [--lba N] [--nsid N]\n" +
		"                [--block-size N] [--budget N] [--engine jit|interpreter] [--checked] [--map-memory BYTES]",
}

// progAbout says what each subcommand prints.
var progAbout = map[string]string{
	"verify": "Runs bpfblk's verifier: exit 1 with the instruction and the reason on rejection.\n" +
		"--kernel also asks the Linux verifier (xdp programs only).\n\n" + mapMemoryHelp,
	"dis": "Prints the program's instructions.",
	"run": "Prints \"r0 = N\" (unsigned decimal), the emitted values, then the maps.\n" +
		"--raw reads FILE as raw little-endian instructions and runs them with r1 = data\n" +
		"and r2 = data length. A filter's data is split into --block-size blocks.\n\n" + mapMemoryHelp,
}

// Bounds of prog run's numeric flags.
const (
	maxNSID       = 0xfffffffe // NVMe namespace ids are 1 to FFFFFFFEh
	maxProgBlock  = 64 << 20
	maxProgBudget = 1 << 62
)

// setFlags collects repeated --set NAME=VALUE.
type setFlags []string

func (s *setFlags) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(*s, ",")
}

func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

type progOpts struct {
	sets      setFlags
	kernel    bool
	raw       bool
	dataFile  string
	lba       uint64
	nsid      uint32
	blockSize uint32
	budget    int64
	engine    string
	mapMemory *byteSize
	log       bool
	checked   bool
}

func runProg(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "prog", errors.New("missing subcommand (verify, dis or run)"))
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, progUsage)
		return exitOK
	case "verify", "dis", "run":
	default:
		what := "unknown subcommand"
		if strings.HasPrefix(sub, "-") {
			what = "unknown flag"
		}
		return usageError(stderr, "prog", fmt.Errorf("%s %q (want verify, dis or run)", what, sub))
	}
	var o progOpts
	fs := newCmdline("prog "+sub, progSynopses[sub], stdout, stderr)
	fs.about = progAbout[sub]
	fs.Var(&o.sets, "set", "set global variable `NAME=VALUE` (repeatable)")
	fs.BoolVar(&o.raw, "raw", false, "FILE holds raw little-endian instructions")
	if sub == "verify" {
		fs.BoolVar(&o.kernel, "kernel", false, "also ask the Linux kernel's verifier")
	}
	if sub == "verify" || sub == "run" {
		o.mapMemory = mapMemoryFlag(fs.FlagSet)
		logFlag(fs.FlagSet, &o.log)
	}
	if sub == "run" {
		fs.StringVar(&o.dataFile, "data", "", "file with the data to run on")
		fs.Uint64Var(&o.lba, "lba", 0, "LBA of the first block")
		fs.uint32Var(&o.nsid, "nsid", 1, 1, maxNSID, fmt.Sprintf("namespace id `N` (1-%d)", uint32(maxNSID)))
		fs.uint32Var(&o.blockSize, "block-size", 0, 0, maxProgBlock, "block size in `BYTES`: 0 (the whole data is one block) or a multiple of 512").mult = 512
		fs.int64Var(&o.budget, "budget", engine.DefaultBudget, 1, maxProgBudget, "instruction budget `N` per run (above 0)")
		fs.StringVar(&o.engine, "engine", "", "jit or interpreter (default: $BPFBLK_ENGINE, else "+engine.Default().Name()+")")
		fs.BoolVar(&o.checked, "checked", false, "check every memory access at run time, ignoring the verifier's proofs (debugging)")
	}
	pos, code, ok := fs.parse(args[1:])
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(fmt.Errorf("want exactly one program file, got %d arguments", len(pos)))
	}
	if o.raw && len(o.sets) > 0 {
		return fs.usageError(errors.New("--set needs an ELF object, not --raw instructions"))
	}
	if sub == "run" && o.engine == "" {
		e, err := envEngine()
		if err != nil {
			return fs.usageError(err)
		}
		if o.engine = engine.Default().Name(); e != nil {
			o.engine = e.Name()
		}
	}
	if sub == "run" && engine.EngineByName(o.engine) == nil {
		return fs.usageError(fmt.Errorf("--engine %q: want jit or interpreter", o.engine))
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
		printVerifierLog(stderr, err)
		return fs.exit(err)
	}
	return exitOK
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
		return nil, nil, nil, usageErrorf("%s: %v", file, err)
	}
	text := map[string]any{}
	for _, s := range o.sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, nil, nil, usageErrorf("--set %q: want NAME=VALUE", s)
		}
		text[k] = v
	}
	vars, err := typeVars(cs.Variables, text)
	if err != nil {
		return nil, nil, nil, asUsage(err)
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
		return engine.FromBytesWith(target, abi.TypeRaw, b, &engine.LoadOptions{VerifierLog: o.log, Checked: o.checked})
	}
	cs, ps, vars, err := loadTarget(target, o)
	if err != nil {
		return nil, err
	}
	lo := &engine.LoadOptions{Program: ps.Name, Vars: vars, VerifierLog: o.log, Checked: o.checked}
	if o.mapMemory != nil {
		lo.MapMemory = int64(*o.mapMemory)
	}
	p, err := engine.LoadSpec(cs, lo)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ps.Name, mapMemoryHint(err))
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
	if err := kernelAvailable(); err != nil {
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
		return usageErrorf("--block-size %d: %d bytes of data is not a whole number of %d-byte blocks", o.blockSize, len(data), o.blockSize)
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
		Data: data, LBA: o.lba, NSID: o.nsid, BlockSize: o.blockSize,
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
	return printMaps(stdout, p, engine.MergeMaps(inst))
}
