package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/p2pdma"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

func init() {
	register(command{name: "scan", summary: "scan namespaces with an eBPF filter; only matching LBAs reach the host", run: runScan})
}

const scanSynopsis = "scan [--filter FILE.o[:PROGRAM]] [--set NAME=VALUE]... [--dev DEV]... [--engine auto|device|host] [--stage host|cmb] [-c CORES] [--chunk BYTES] [--map-memory BYTES] [--log] [--count] [--json]"

// scanReport is the JSON of `bpfblk scan --json`.
type scanReport struct {
	Matches          uint64            `json:"matches"`
	BytesScanned     uint64            `json:"bytes_scanned"`
	BytesToHost      uint64            `json:"bytes_to_host"`
	BytesThroughHost uint64            `json:"bytes_through_host"`
	Seconds          float64           `json:"seconds"`
	Engines          []scanEngineJSON  `json:"engines"`
	Targets          []scanTargetJSON  `json:"targets"`
	Faults           []string          `json:"faults"`
	Maps             []json.RawMessage `json:"maps"`
}

type scanEngineJSON struct {
	Name         string  `json:"name"`
	Targets      int     `json:"targets"`
	Chunks       uint64  `json:"chunks"`
	BytesScanned uint64  `json:"bytes_scanned"`
	RunSeconds   float64 `json:"run_seconds"`
	// Emulated marks an engine that is an emulated device (nvme/mock): its
	// run time is the emulator's, not a real device's.
	Emulated bool `json:"emulated,omitempty"`
}

type scanTargetJSON struct {
	Name         string `json:"name"`
	NSID         uint32 `json:"nsid"`
	Engine       string `json:"engine"`
	Blocks       uint64 `json:"blocks"`
	BytesScanned uint64 `json:"bytes_scanned"`
	Matches      uint64 `json:"matches"`
	// Why says why a target ran on host cores though compute devices were
	// offered.
	Why string `json:"why,omitempty"`
}

func runScan(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("scan", scanSynopsis, stdout, stderr)
	filter := fs.String("filter", "", "filter object FILE.o[:PROGRAM]; default: the built-in pattern filter looking for "+device.DemoPattern)
	var sets multiFlag
	fs.Var(&sets, "set", setHelp)
	devs := fs.devFlag()
	engineFlag := fs.String("engine", "auto", "where the program runs: auto, device or host")
	stage := fs.String("stage", "host", "where data is staged for host engines: host or cmb")
	count := fs.Bool("count", false, "print only the number of matches")
	jsonOut := fs.Bool("json", false, "print a JSON report instead of match lines")
	cores := fs.cores("c", 2, "`CORES` of the host compute reactors: a mask such as 0x3, 0-1 or 0,2 of cores this process may use")
	chunk := fs.size("chunk", 256<<10, 64<<20, "`BYTES` per program run (a multiple of 512, at most 64 MiB)")
	mapMemory := mapMemoryFlag(fs.FlagSet)
	var verifierLog bool
	logFlag(fs.FlagSet, &verifierLog)
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	eng, err := compute.ParseEngine(*engineFlag)
	if err != nil {
		return fs.usageError(errors.Wrap(err, "--engine"))
	}
	switch *stage {
	case "host":
	case "cmb":
	default:
		return fs.usageError(errors.Errorf("--stage: unknown stage %q (want host or cmb)", *stage))
	}
	vars := map[string]any{}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fs.usageError(errors.Errorf("--set %q: want NAME=VALUE", s))
		}
		vars[k] = v
	}

	exe, err := loadScanProgram(*filter, vars, int64(*mapMemory), verifierLog)
	if err != nil {
		printVerifierLog(stderr, err)
		return fs.exit(mapMemoryHint(err))
	}

	set, code := openDevices("scan", *devs, stderr)
	if set == nil {
		return code
	}
	defer set.Close()
	if len(set.Bdevs) == 0 {
		return failure(stderr, "scan", errors.New("the devices have no NVM namespaces"))
	}
	cb, err := compute.NewBdev("scan", set.Bdevs)
	if err != nil {
		return failure(stderr, "scan", err)
	}
	defer cb.Close()
	g, err := poller.Start(poller.Config{Cores: *cores, NoPin: true})
	if err != nil {
		return failure(stderr, "scan", err)
	}
	defer g.Stop()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var matches []compute.Match
	opts := compute.Options{Engine: eng, ChunkBytes: *chunk, Devices: set.Controllers}
	if *stage == "cmb" {
		// Host engines read chunks into a controller memory buffer: the data
		// goes drive to peer memory and never crosses host DRAM.
		reg, err := p2pdma.OpenAny(set.Controllers)
		if err != nil {
			return failure(stderr, "scan", errors.Wrap(err, "--stage cmb (use --stage host)"))
		}
		defer reg.Close()
		opts.Staging = p2pdma.NewCMBStaging(reg)
	}
	if !*count && !*jsonOut {
		opts.OnMatch = func(m compute.Match) { matches = append(matches, m) }
	}
	bar := isTerminal(stderr)
	if bar {
		opts.Progress = func(done, total uint64) { progressBar(stderr, done, total) }
	}
	targets := cb.AllTargets()
	st, err := cb.Scan(ctx, g, exe, targets, opts)
	if bar {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if st == nil {
		return failure(stderr, "scan", mapMemoryHint(err))
	}
	switch {
	case *jsonOut:
		if werr := writeScanJSON(stdout, st, mapsJSON(exe.Program(), st.Maps), emulatedControllers(set)); werr != nil {
			return failure(stderr, "scan", werr)
		}
	case *count:
		fmt.Fprintln(stdout, st.Matches)
	default:
		slices.SortFunc(matches, func(a, b compute.Match) int {
			if a.Target != b.Target {
				return a.Target - b.Target
			}
			if c := cmp.Compare(a.LBA, b.LBA); c != 0 {
				return c
			}
			return cmp.Compare(a.Offset, b.Offset)
		})
		w := newLineWriter(stdout)
		for i, m := range matches {
			// A scanner may emit several records of one block: one line per block.
			if i > 0 && matches[i-1].Target == m.Target && matches[i-1].LBA == m.LBA {
				continue
			}
			// NAME LBA: the bdev name tells namespaces of different
			// controllers apart, which their NSIDs do not.
			w.printf("%s %d\n", set.Bdevs[targets[m.Target].Base].Name(), m.LBA)
		}
		w.flush()
		printScanSummary(stderr, st, emulatedControllers(set))
		if opts.Staging != nil {
			fmt.Fprintf(stderr, "host engines staged their chunks in %s\n", opts.Staging.Name())
		}
		if werr := printMaps(stderr, exe.Program(), st.Maps); werr != nil {
			return failure(stderr, "scan", werr)
		}
	}
	for _, f := range st.Faults {
		fmt.Fprintf(stderr, "bpfblk scan: fault: %v\n", f)
	}
	if err != nil {
		return failure(stderr, "scan", err)
	}
	if len(st.Faults) > 0 {
		return exitFail
	}
	return exitOK
}

// loadScanProgram loads the user's filter, or the built-in one.
func loadScanProgram(filter string, vars map[string]any, mapMemory int64, verifierLog bool) (*engine.Executable, error) {
	var p *engine.Program
	if filter == "" {
		spec, err := filters.LoadPattern()
		if err != nil {
			return nil, errors.Wrap(err, "built-in filter")
		}
		if err := builtinPattern(vars, device.DemoPattern); err != nil {
			return nil, err
		}
		typed, err := typeVars(spec.Variables, vars)
		if err != nil {
			return nil, asUsage(err)
		}
		if p, err = engine.LoadSpec(spec, &engine.LoadOptions{Program: "pattern_memmem", Vars: typed, MapMemory: mapMemory, VerifierLog: verifierLog}); err != nil {
			return nil, err
		}
	} else {
		path, prog := splitTarget(filter)
		spec, err := loadCollection(path)
		if err != nil {
			return nil, errors.Wrap(err, "--filter")
		}
		ps, err := engine.SelectProgram(spec, prog)
		if err != nil {
			return nil, asUsage(errors.Wrapf(err, "--filter %s", filter))
		}
		typed, err := typeVars(spec.Variables, vars)
		if err != nil {
			return nil, asUsage(err)
		}
		if p, err = engine.LoadSpec(spec, &engine.LoadOptions{Program: ps.Name, Vars: typed, MapMemory: mapMemory, VerifierLog: verifierLog}); err != nil {
			return nil, errors.Wrap(err, path)
		}
	}
	return engine.Compile(p, nil)
}

type lineWriter struct {
	w   io.Writer
	buf []byte
}

func newLineWriter(w io.Writer) *lineWriter { return &lineWriter{w: w} }

func (l *lineWriter) printf(format string, args ...any) {
	l.buf = fmt.Appendf(l.buf, format, args...)
	if len(l.buf) > 64<<10 {
		l.flush()
	}
}

func (l *lineWriter) flush() {
	l.w.Write(l.buf)
	l.buf = l.buf[:0]
}

func progressBar(w io.Writer, done, total uint64) {
	if total == 0 {
		return
	}
	const width = 40
	f := float64(done) / float64(total)
	n := int(f * width)
	fmt.Fprintf(w, "\r[%s%s] %5.1f%% %s of %s", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*f, humanBytes(done), humanBytes(total))
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), "KMGTPE"
	i := -1
	for v >= unit && i < len(u)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, u[i])
}

// emulatedControllers names the set's emulated controllers (nvme/mock): what
// they report as device time is the emulator's.
func emulatedControllers(set *device.Set) map[string]bool {
	emu := map[string]bool{}
	for _, c := range set.Controllers {
		if _, ok := c.Transport().(*mock.Controller); ok {
			emu[c.Name()] = true
		}
	}
	return emu
}

func printScanSummary(w io.Writer, st *compute.Stats, emu map[string]bool) {
	secs := st.Elapsed.Seconds()
	var blocks uint64
	for _, t := range st.Targets {
		blocks += t.Blocks
	}
	fmt.Fprintf(w, "scanned %s in %.3fs (%.2f GB/s): %d matching blocks of %d (selectivity %.3f%%)\n",
		humanBytes(st.BytesScanned), secs, float64(st.BytesScanned)/secs/1e9, st.Matches, blocks, 100*float64(st.Matches)/float64(max(blocks, 1)))
	fmt.Fprintf(w, "bytes to host %s, through host memory %s\n", humanBytes(st.BytesToHost), humanBytes(st.BytesThroughHost))
	for _, t := range st.Targets {
		fmt.Fprintf(w, "  %-10s nsid %-3d %-8s %9d blocks %10s %8d matches\n", t.Base, t.NSID, t.Engine, t.Blocks, humanBytes(t.BytesScanned), t.Matches)
		if t.Why != "" {
			fmt.Fprintf(w, "    on host cores: %s\n", t.Why)
		}
	}
	for _, e := range st.Engines {
		if e.Targets == 0 {
			continue
		}
		fmt.Fprintf(w, "  engine %-10s %d targets, %d program runs, %s", e.Name, e.Targets, e.Chunks, humanBytes(e.BytesScanned))
		if e.Name == "host" {
			// Host runs are timed on the core that runs them.
			fmt.Fprintf(w, ", %.3fs in the program (%.2f GB/s per busy core)\n", e.RunTime.Seconds(), float64(e.BytesScanned)/max(e.RunTime.Seconds(), 1e-9)/1e9)
		} else {
			// Offloaded runs are timed from the host: Execute Program latency,
			// summed over chunks that were in flight together.
			label := ""
			if emu[e.Name] {
				label = " (emulated device: the emulator's time on host CPUs)"
			}
			fmt.Fprintf(w, ", %.3fs of Execute Program latency summed over chunks%s\n", e.RunTime.Seconds(), label)
		}
	}
}

func writeScanJSON(w io.Writer, st *compute.Stats, maps []json.RawMessage, emu map[string]bool) error {
	rep := scanReport{
		Matches: st.Matches, BytesScanned: st.BytesScanned, BytesToHost: st.BytesToHost,
		BytesThroughHost: st.BytesThroughHost, Seconds: st.Elapsed.Seconds(),
		Engines: []scanEngineJSON{}, Targets: []scanTargetJSON{}, Faults: []string{}, Maps: maps,
	}
	for _, e := range st.Engines {
		rep.Engines = append(rep.Engines, scanEngineJSON{Name: e.Name, Targets: e.Targets, Chunks: e.Chunks, BytesScanned: e.BytesScanned, RunSeconds: e.RunTime.Seconds(), Emulated: emu[e.Name]})
	}
	for _, t := range st.Targets {
		rep.Targets = append(rep.Targets, scanTargetJSON{Name: t.Base, NSID: t.NSID, Engine: t.Engine, Blocks: t.Blocks, BytesScanned: t.BytesScanned, Matches: t.Matches, Why: t.Why})
	}
	for _, f := range st.Faults {
		rep.Faults = append(rep.Faults, f.Error())
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
