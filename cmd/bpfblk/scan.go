package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/bdev/device/demo"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/abi"
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

const scanSynopsis = "scan [--filter FILE.o[:PROGRAM]] [--set NAME=VALUE]... [--dev DEV]... [--ns NAME[:FIRST-LAST]]... [--overlap BYTES] [--placement auto|device|host] [--stage host|cmb] [-c CORES] [--chunk BYTES] [--map-memory BYTES] [--log] [--count] [--json]"

// scanReport is the JSON of `bpfblk scan --json`: the last line, after the
// match lines.
type scanReport struct {
	// Engine is the engine of host cores: jit or interpreter.
	Engine string `json:"engine"`
	// Matches is the result lines (matching LBAs of a per-block filter,
	// emitted records of a scanner); MatchingBlocks the distinct blocks
	// they are in; Records the values a scanner emitted (0 for filters).
	Matches          uint64 `json:"matches"`
	MatchingBlocks   uint64 `json:"matching_blocks"`
	Records          uint64 `json:"records"`
	Lost             uint64 `json:"lost"`
	BytesScanned     uint64 `json:"bytes_scanned"`
	BytesToHost      uint64 `json:"bytes_to_host"`
	BytesThroughHost uint64 `json:"bytes_through_host"`
	// BytesOverNetwork is what the tcp:// devices' connections received
	// and sent during the scan (NVMe/TCP PDUs, headers included); 0
	// without network devices.
	BytesOverNetwork uint64            `json:"bytes_over_network"`
	Seconds          float64           `json:"seconds"`
	Engines          []scanEngineJSON  `json:"engines"`
	Targets          []scanTargetJSON  `json:"targets"`
	Losses           []scanLossJSON    `json:"losses"`
	Faults           []string          `json:"faults"`
	Maps             []json.RawMessage `json:"maps"`
}

// scanMatchJSON is one match line of `bpfblk scan --json`.
type scanMatchJSON struct {
	Name   string  `json:"name"`
	LBA    uint64  `json:"lba"`
	Offset *uint32 `json:"offset,omitempty"`
}

type scanLossJSON struct {
	Name   string `json:"name"`
	LBA    uint64 `json:"lba"`
	Blocks uint64 `json:"blocks"`
	Values uint64 `json:"values"`
	Where  string `json:"where"`
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
	Name           string `json:"name"`
	NSID           uint32 `json:"nsid"`
	BlockSize      uint32 `json:"block_size"`
	First          uint64 `json:"first"`
	Engine         string `json:"engine"`
	Why            string `json:"why,omitempty"`
	Blocks         uint64 `json:"blocks"`
	Bytes          uint64 `json:"bytes"`
	BytesScanned   uint64 `json:"bytes_scanned"`
	Matches        uint64 `json:"matches"`
	MatchingBlocks uint64 `json:"matching_blocks"`
	Lost           uint64 `json:"lost"`
}

func runScan(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("scan", scanSynopsis, stdout, stderr)
	filter := fs.String("filter", "", "filter object FILE.o[:PROGRAM]; default: the built-in pattern filter looking for "+demo.Pattern)
	var sets, nsFlags multiFlag
	fs.Var(&sets, "set", setHelp)
	devs := fs.devFlag()
	fs.Var(&nsFlags, "ns", "scan only namespace `NAME[:FIRST-LAST]` (repeatable): a bdev name such as mock0n1, optionally with an inclusive LBA range (FIRST- runs to the end)")
	overlap := fs.intRange("overlap", 0, 0, compute.MaxOverlap, "`BYTES` past each block's end a program sees (0 to 1 MiB), so that a pattern straddling two blocks is found at the first")
	placeFlag := fs.String("placement", "auto", "where the program runs: auto, device or host")
	engineFlag := fs.String("engine", "auto", "deprecated alias of --placement (auto, device or host)")
	stage := fs.String("stage", "host", "where data is staged for host engines: host or cmb")
	count := fs.Bool("count", false, "print only the number of result lines")
	jsonOut := fs.Bool("json", false, "print JSON lines: one per match, then the report")
	cores := fs.cores("c", 2, "`CORES` of the host compute reactors: a mask as SPDK reads it (3 or 0x3: cores 0-1; a bare number is hex) or a list such as 0-1, 0,2 or [0-3], of cores this process may use")
	chunk := fs.size("chunk", 256<<10, 64<<20, "`BYTES` per program run (a multiple of 512, at most 64 MiB)")
	mapMemory := mapMemoryFlag(fs.FlagSet)
	var verifierLog bool
	logFlag(fs.FlagSet, &verifierLog)
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	// --engine is the old spelling of --placement (how host cores run a
	// program is prog run --engine): it still works as it did.
	placeName, placeOpt := *placeFlag, "--placement"
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["engine"] {
		if given["placement"] && *placeFlag != *engineFlag {
			return fs.usageError(errors.Errorf("--engine %s and --placement %s disagree (--engine is the old spelling of --placement)", *engineFlag, *placeFlag))
		}
		placeName, placeOpt = *engineFlag, "--engine"
	}
	eng, err := compute.ParsePlacement(placeName)
	if err != nil {
		return fs.usageError(errors.Wrap(err, placeOpt))
	}
	switch *stage {
	case "host":
	case "cmb":
	default:
		return fs.usageError(errors.Errorf("--stage: unknown stage %q (want host or cmb)", *stage))
	}
	progEngine, err := envEngine()
	if err != nil {
		return fs.usageError(err)
	}
	vars := map[string]any{}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fs.usageError(errors.Errorf("--set %q: want NAME=VALUE", s))
		}
		vars[k] = v
	}
	ranges, err := parseNSFlags(nsFlags)
	if err != nil {
		return fs.usageError(err)
	}

	exe, err := loadScanProgram(*filter, vars, int64(*mapMemory), verifierLog, progEngine)
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
	targets, err := scanTargets(set.Bdevs, ranges)
	if err != nil {
		return fs.usageError(err)
	}
	cb, err := compute.NewBdev("scan", set.Bdevs)
	if err != nil {
		return failure(stderr, "scan", err)
	}
	defer cb.Close()
	for i, b := range set.Bdevs {
		if n, ok := set.Lengths[b]; ok {
			if err := cb.SetLength(i, n); err != nil {
				return failure(stderr, "scan", err)
			}
		}
	}
	g, err := poller.Start(poller.Config{Cores: *cores, NoPin: true})
	if err != nil {
		return failure(stderr, "scan", err)
	}
	defer g.Stop()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var matches []compute.Match
	opts := compute.Options{Placement: eng, ChunkBytes: *chunk, Devices: set.Controllers, Overlap: *overlap}
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
	scanner := exe.Program().Type != abi.TypeFilter
	name := func(m compute.Match) string { return set.Bdevs[targets[m.Target].Base].Name() }
	var jw *jsonLines
	switch {
	case *count:
	case *jsonOut:
		// Match lines as they arrive: a large result is never held.
		jw = &jsonLines{w: bufio.NewWriterSize(stdout, 64<<10)}
		opts.OnMatch = func(m compute.Match) {
			ml := scanMatchJSON{Name: name(m), LBA: m.LBA}
			if scanner {
				ml.Offset = &m.Offset
			}
			jw.write(ml)
		}
	default:
		opts.OnMatch = func(m compute.Match) { matches = append(matches, m) }
	}
	bar := isTerminal(stderr)
	if bar {
		opts.Progress = func(done, total uint64) { progressBar(stderr, done, total) }
	}
	net0 := networkBytes(set)
	st, err := cb.Scan(ctx, g, exe, targets, opts)
	net := networkUse{bytes: networkBytes(set) - net0, devices: networkDevices(set)}
	if bar {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if st == nil {
		return failure(stderr, "scan", mapMemoryHint(err))
	}
	switch {
	case *jsonOut:
		if jw == nil {
			jw = &jsonLines{w: bufio.NewWriterSize(stdout, 64<<10)}
		}
		rep := scanJSON(st, targets, scanner, mapsJSON(exe.Program(), st.Maps), emulatedControllers(set))
		rep.BytesOverNetwork = net.bytes
		jw.write(rep)
		if werr := jw.flush(); werr != nil {
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
		for _, m := range matches {
			// NAME LBA (NAME OFFSET for a scanner's records): the bdev name
			// tells namespaces of different controllers apart, which their
			// NSIDs do not.
			if scanner {
				w.printf("%s %d %d\n", name(m), m.LBA, m.Offset)
			} else {
				w.printf("%s %d\n", name(m), m.LBA)
			}
		}
		w.flush()
		printScanSummary(stderr, st, targets, scanner, emulatedControllers(set), net)
		if opts.Staging != nil {
			fmt.Fprintf(stderr, "host engines staged their chunks in %s\n", opts.Staging.Name())
		}
		if werr := printMaps(stderr, exe.Program(), st.Maps); werr != nil {
			return failure(stderr, "scan", werr)
		}
	}
	var stopped []compute.ChunkFault
	for _, f := range st.Faults {
		if ctx.Err() != nil && (errors.Is(f.Err, engine.ErrInterrupted) || errors.Is(f.Err, context.Canceled)) {
			stopped = append(stopped, f) // chunks the interrupt stopped: one line for all
			continue
		}
		fmt.Fprintf(stderr, "bpfblk scan: fault: %v\n", f)
	}
	if len(stopped) > 0 || (ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		what := "before its end"
		if len(stopped) > 0 {
			what = fmt.Sprintf("%d chunks in flight stopped (the first: %s blocks %d-%d)",
				len(stopped), stopped[0].Base, stopped[0].LBA, stopped[0].LBA+stopped[0].Blocks-1)
		}
		fmt.Fprintf(stderr, "bpfblk scan: interrupted: %s; the results are incomplete\n", what)
		if errors.Is(err, context.Canceled) {
			return exitFail // said above
		}
	}
	for _, l := range st.Losses {
		fmt.Fprintf(stderr, "bpfblk scan: lost: %v\n", l)
	}
	if err != nil {
		return failure(stderr, "scan", err)
	}
	if len(st.Faults) > 0 {
		return exitFail
	}
	if st.Lost > 0 {
		return failure(stderr, "scan", errors.Errorf("%d emitted values did not reach the host (the results are incomplete)", st.Lost))
	}
	return exitOK
}

// nsRange is one --ns: a namespace and an inclusive LBA range.
type nsRange struct {
	name        string
	first, last uint64
	whole, open bool // no range; FIRST- (to the end)
	flag        string
}

// parseNSFlags parses the --ns values.
func parseNSFlags(flags []string) ([]nsRange, error) {
	var out []nsRange
	for _, f := range flags {
		name, rng, hasRange := strings.Cut(f, ":")
		if strings.Contains(f, "://") {
			// tcp://HOST:PORT/NQNn1 has colons of its own: the range is
			// what follows the last one, if it is made of LBAs.
			i := strings.LastIndex(f, ":")
			name, rng, hasRange = f, "", false
			if r := f[i+1:]; r != "" && strings.Trim(r, "0123456789-") == "" {
				name, rng, hasRange = f[:i], r, true
			}
		}
		if name == "" {
			return nil, errors.Errorf("--ns %q: want NAME[:FIRST-LAST]", f)
		}
		r := nsRange{name: name, flag: f, whole: !hasRange}
		if hasRange {
			a, b, ok := strings.Cut(rng, "-")
			first, err1 := strconv.ParseUint(a, 10, 64)
			var last uint64
			var err2 error
			if r.open = ok && b == ""; !r.open {
				last, err2 = strconv.ParseUint(b, 10, 64)
			}
			if !ok || err1 != nil || err2 != nil || !r.open && last < first {
				return nil, errors.Errorf("--ns %q: want NAME:FIRST-LAST (decimal LBAs, FIRST <= LAST) or NAME:FIRST-", f)
			}
			r.first, r.last = first, last
		}
		out = append(out, r)
	}
	return out, nil
}

// scanTargets returns the targets of the --ns ranges over bdevs (every
// namespace, whole, without any).
func scanTargets(bdevs []*bdev.Bdev, ranges []nsRange) ([]compute.Target, error) {
	if len(ranges) == 0 {
		t := make([]compute.Target, len(bdevs))
		for i := range t {
			t[i] = compute.Target{Base: i}
		}
		return t, nil
	}
	var out []compute.Target
	for _, r := range ranges {
		i := slices.IndexFunc(bdevs, func(b *bdev.Bdev) bool { return b.Name() == r.name })
		if i < 0 {
			names := make([]string, len(bdevs))
			for k, b := range bdevs {
				names[k] = b.Name()
			}
			return nil, errors.Errorf("--ns %q: no namespace %s (have: %s)", r.flag, r.name, strings.Join(names, ", "))
		}
		n := bdevs[i].NumBlocks()
		t := compute.Target{Base: i}
		if !r.whole {
			last := r.last
			if r.open {
				last = n - 1
			}
			if r.first >= n || last >= n {
				return nil, errors.Errorf("--ns %q: %s has LBAs 0-%d", r.flag, r.name, n-1)
			}
			t.Start, t.Blocks = r.first, last-r.first+1
		}
		for _, o := range out {
			if o.Base == i && overlaps(o, t, n) {
				return nil, errors.Errorf("--ns %q overlaps another --ns of %s: a block would be scanned twice", r.flag, r.name)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// overlaps reports whether two targets of a base of n blocks share a block.
func overlaps(a, b compute.Target, n uint64) bool {
	end := func(t compute.Target) uint64 {
		if t.Blocks == 0 {
			return n
		}
		return t.Start + t.Blocks
	}
	return a.Start < end(b) && b.Start < end(a)
}

// jsonLines writes one JSON object per line.
type jsonLines struct {
	w   *bufio.Writer
	err error
}

func (j *jsonLines) write(v any) {
	if j.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err == nil {
		b = append(b, '\n')
		_, err = j.w.Write(b)
	}
	j.err = err
}

func (j *jsonLines) flush() error {
	if j.err != nil {
		return j.err
	}
	return j.w.Flush()
}

// loadScanProgram loads the user's filter, or the built-in one.
func loadScanProgram(filter string, vars map[string]any, mapMemory int64, verifierLog bool, eng engine.Engine) (*engine.Executable, error) {
	var p *engine.Program
	if filter == "" {
		spec, err := filters.LoadPattern()
		if err != nil {
			return nil, errors.Wrap(err, "built-in filter")
		}
		if err := builtinPattern(vars, demo.Pattern); err != nil {
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
	return engine.Compile(p, eng)
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

func printScanSummary(w io.Writer, st *compute.Stats, targets []compute.Target, scanner bool, emu map[string]bool, net networkUse) {
	secs := st.Elapsed.Seconds()
	fmt.Fprintf(w, "scanned %s in %.3fs (%.2f GB/s); host cores run the %s engine\n",
		humanBytes(st.BytesScanned), secs, float64(st.BytesScanned)/secs/1e9, st.Engine)
	var blocks uint64
	for _, t := range st.Targets {
		blocks += t.MatchingBlocks
	}
	if scanner {
		fmt.Fprintf(w, "%d records emitted in %d matching blocks", st.Matches, blocks)
	} else {
		fmt.Fprintf(w, "%d matching blocks", blocks)
	}
	if st.Lost > 0 {
		fmt.Fprintf(w, "; %d emitted values LOST", st.Lost)
	}
	fmt.Fprintf(w, "; bytes to host %s, through host memory %s", humanBytes(st.BytesToHost), humanBytes(st.BytesThroughHost))
	if net.devices > 0 {
		fmt.Fprintf(w, "; over the network %s (%d bytes, %.3f%% of the bytes scanned)", humanBytes(net.bytes), net.bytes, 100*float64(net.bytes)/float64(max(st.BytesScanned, 1)))
	}
	fmt.Fprintln(w)
	for i, t := range st.Targets {
		first := targets[i].Start
		fmt.Fprintf(w, "  %-10s %4d B blocks %d-%d: %d of %d blocks match (selectivity %.3f%%)",
			t.Base, t.BlockSize, first, first+t.Blocks-1, t.MatchingBlocks, t.Blocks, 100*float64(t.MatchingBlocks)/float64(max(t.Blocks, 1)))
		if scanner {
			fmt.Fprintf(w, ", %d records", t.Matches)
		}
		if t.Lost > 0 {
			fmt.Fprintf(w, ", %d values lost", t.Lost)
		}
		fmt.Fprintf(w, "; on %s", t.Engine)
		if t.Why != "" {
			fmt.Fprintf(w, " (%s)", t.Why)
		}
		fmt.Fprintln(w)
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
	if st.Reruns > 0 {
		fmt.Fprintf(w, "  %d program runs filled their emit buffer and ran again with room\n", st.Reruns)
	}
}

// scanJSON is the report line of --json.
func scanJSON(st *compute.Stats, targets []compute.Target, scanner bool, maps []json.RawMessage, emu map[string]bool) scanReport {
	rep := scanReport{
		Engine: st.Engine, Matches: st.Matches, Lost: st.Lost, BytesScanned: st.BytesScanned, BytesToHost: st.BytesToHost,
		BytesThroughHost: st.BytesThroughHost, Seconds: st.Elapsed.Seconds(),
		Engines: []scanEngineJSON{}, Targets: []scanTargetJSON{}, Losses: []scanLossJSON{}, Faults: []string{}, Maps: maps,
	}
	if scanner {
		rep.Records = st.Matches
	}
	for _, e := range st.Engines {
		rep.Engines = append(rep.Engines, scanEngineJSON{Name: e.Name, Targets: e.Targets, Chunks: e.Chunks, BytesScanned: e.BytesScanned, RunSeconds: e.RunTime.Seconds(), Emulated: emu[e.Name]})
	}
	for i, t := range st.Targets {
		rep.MatchingBlocks += t.MatchingBlocks
		rep.Targets = append(rep.Targets, scanTargetJSON{Name: t.Base, NSID: t.NSID, BlockSize: t.BlockSize, First: targets[i].Start, Engine: t.Engine, Why: t.Why,
			Blocks: t.Blocks, Bytes: t.Bytes, BytesScanned: t.BytesScanned, Matches: t.Matches, MatchingBlocks: t.MatchingBlocks, Lost: t.Lost})
	}
	for _, l := range st.Losses {
		rep.Losses = append(rep.Losses, scanLossJSON{Name: l.Base, LBA: l.LBA, Blocks: l.Blocks, Values: l.Values, Where: l.Where})
	}
	for _, f := range st.Faults {
		rep.Faults = append(rep.Faults, f.Error())
	}
	return rep
}

// trafficCounter is a transport that counts the bytes it moved over the
// network (nvme/tcp's host transport).
type trafficCounter interface {
	Traffic() (rx, tx uint64)
}

// networkUse is what a scan moved over the network.
type networkUse struct {
	bytes   uint64 // received and sent
	devices int    // controllers reached over the network
}

// networkBytes sums the bytes the set's network transports have moved.
func networkBytes(set *device.Set) uint64 {
	var n uint64
	for _, c := range set.Controllers {
		if t, ok := c.Transport().(trafficCounter); ok {
			rx, tx := t.Traffic()
			n += rx + tx
		}
	}
	return n
}

// networkDevices counts the set's controllers reached over the network.
func networkDevices(set *device.Set) int {
	n := 0
	for _, c := range set.Controllers {
		if _, ok := c.Transport().(trafficCounter); ok {
			n++
		}
	}
	return n
}
