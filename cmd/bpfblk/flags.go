package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// cmdline is the command line of one command, parsed under the CLI contract
// (doc.go): -h or --help prints the usage on stdout and exits 0; any other
// flag error is one line on stderr naming what is wrong, then a hint to run
// -h, and exits 2. Commands define their flags on the embedded FlagSet (or
// with the range-checked helpers below) and call parse or parseNoArgs.
type cmdline struct {
	*flag.FlagSet
	cmd      string // the command as messages name it: "scan", "prog run"
	synopsis string // the usage line after "bpfblk "
	about    string // optional text between the synopsis and the flags
	stdout   io.Writer
	stderr   io.Writer
}

// onCmdline, when set (by tests), sees every command line a command builds.
var onCmdline func(*cmdline)

// newCmdline makes the command line of cmd. Flag errors are reported by
// parse, never by the flag package itself.
func newCmdline(cmd, synopsis string, stdout, stderr io.Writer) *cmdline {
	fs := flag.NewFlagSet("bpfblk "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c := &cmdline{FlagSet: fs, cmd: cmd, synopsis: synopsis, stdout: stdout, stderr: stderr}
	if onCmdline != nil {
		onCmdline(c)
	}
	return c
}

// printUsage writes the synopsis, the about text and the flags to w.
func (c *cmdline) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: bpfblk %s\n", c.synopsis)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.about, "\n"))
	}
	n := 0
	c.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprint(w, "\nflags:\n")
	c.SetOutput(w)
	c.PrintDefaults()
	c.SetOutput(io.Discard)
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positional ones. When ok is false the command
// returns code at once: help was printed (0) or a usage error (2).
func (c *cmdline) parse(args []string) (pos []string, code int, ok bool) {
	for {
		if err := c.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printUsage(c.stdout)
				return nil, exitOK, false
			}
			return nil, c.usageError(err), false
		}
		args = c.Args()
		if len(args) == 0 {
			return pos, exitOK, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), exitOK, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseNoArgs parses the flags of a command that takes no positional
// arguments. When ok is false the command returns code at once.
func (c *cmdline) parseNoArgs(args []string) (code int, ok bool) {
	pos, code, ok := c.parse(args)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		return c.usageError(errors.Errorf("unexpected argument %q", pos[0])), false
	}
	return exitOK, true
}

// usageError reports a usage error of this command and returns its status.
func (c *cmdline) usageError(err error) int { return usageError(c.stderr, c.cmd, err) }

// failure reports a failure of this command and returns its status.
func (c *cmdline) failure(err error) int { return failure(c.stderr, c.cmd, err) }

// exit reports err as a usage error if it is marked as one (see asUsage),
// else as a failure, and returns the status.
func (c *cmdline) exit(err error) int {
	if isUsage(err) {
		return c.usageError(err)
	}
	return c.failure(err)
}

// usageHint is the line that follows every usage error.
func usageHint(cmd string) string {
	if cmd == "" {
		return "run 'bpfblk -h' for usage"
	}
	return fmt.Sprintf("run 'bpfblk %s -h' for usage", cmd)
}

// usageError prints a usage error (one line, then the hint) and returns the
// usage status.
func usageError(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "%s: %s\n%s\n", prefix(cmd), oneLine(err), usageHint(cmd))
	return exitUsage
}

// failure prints a one-line error and returns the failure status.
func failure(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "%s: %s\n", prefix(cmd), oneLine(err))
	return exitFail
}

func prefix(cmd string) string {
	if cmd == "" {
		return "bpfblk"
	}
	return "bpfblk " + cmd
}

// oneLine folds a multi-line error message into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", "; ")
}

// usageErr marks an error found in the command line itself (exit status 2),
// as opposed to a failure while acting on it (exit status 1).
type usageErr struct{ error }

func (e usageErr) Unwrap() error { return e.error }

// asUsage marks err as a usage error; nil stays nil.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return usageErr{err}
}

// usageErrorf is a new usage error.
func usageErrorf(format string, args ...any) error {
	return usageErr{errors.Errorf(format, args...)}
}

// isUsage reports whether err is marked as a usage error.
func isUsage(err error) bool {
	var u usageErr
	return errors.As(err, &u)
}

// multiFlag is a repeatable string flag, such as --dev.
type multiFlag []string

func (m *multiFlag) String() string {
	if m == nil {
		return ""
	}
	return strings.Join(*m, ",")
}

func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// devFlag adds the repeatable --dev flag of the CLI contract.
func (c *cmdline) devFlag() *multiFlag {
	var devs multiFlag
	c.Var(&devs, "dev", "device `DEV` (repeatable): mock, mock:null, file:PATH[,lba=512|4096], pci:DDDD:BB:DD.F, uring:PATH[,sqpoll][,buffered][,noinline][,batch][,lba=512|4096], tcp://HOST:PORT[/NQN], csd[:N]; each device at most once")
	return &devs
}

// intFlag is an integer flag checked at parse time against a range and,
// when mult > 1, for being a multiple of mult. It stores through set, so one
// type serves int, int64 and uint32 variables.
type intFlag struct {
	set    func(int64)
	get    func() int64
	lo, hi int64
	mult   int64
	want   string // what a valid value is, when the range alone does not say it well
	suffix bool   // a binary suffix k, M or G may follow (4k = 4096), as in fio and SPDK
}

func (f *intFlag) String() string {
	if f == nil || f.get == nil {
		return "0"
	}
	return strconv.FormatInt(f.get(), 10)
}

func (f *intFlag) Set(s string) error {
	var n int64
	var err error
	if f.suffix {
		n, err = parseSuffixed(s)
	} else {
		n, err = strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	}
	if err != nil || n < f.lo || n > f.hi || f.mult > 1 && n%f.mult != 0 {
		return errors.New(f.describe())
	}
	f.set(n)
	return nil
}

func (f *intFlag) describe() string {
	switch {
	case f.want != "":
		return "want " + f.want
	case f.mult > 1:
		return fmt.Sprintf("want a multiple of %d from %d to %d", f.mult, f.lo, f.hi)
	}
	return fmt.Sprintf("want an integer from %d to %d", f.lo, f.hi)
}

// intVar defines an int flag that accepts lo to hi.
func (c *cmdline) intVar(p *int, name string, def int, lo, hi int64, usage string) *intFlag {
	*p = def
	f := &intFlag{set: func(n int64) { *p = int(n) }, get: func() int64 { return int64(*p) }, lo: lo, hi: hi}
	c.Var(f, name, usage)
	return f
}

// intRange returns a new int flag that accepts lo to hi.
func (c *cmdline) intRange(name string, def int, lo, hi int64, usage string) *int {
	p := new(int)
	c.intVar(p, name, def, lo, hi, usage)
	return p
}

// size returns a new int flag of bytes that accepts multiples of 512 from
// 512 to hi, written as a number or with a binary suffix (4k, 1M).
func (c *cmdline) size(name string, def int, hi int64, usage string) *int {
	p := new(int)
	f := c.intVar(p, name, def, 512, hi, usage)
	f.mult, f.suffix = 512, true
	return p
}

// parseSuffixed parses an integer (decimal, or 0x hex) with an optional
// binary suffix k, M or G, upper or lower case, that "B" or "iB" may
// follow: 4k, 4K, 4KiB and 4096 are one size.
func parseSuffixed(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if len(t) > 1 && !strings.HasPrefix(t, "0x") && !strings.HasPrefix(t, "0X") {
		t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	}
	shift := 0
	if n := len(t); n > 1 && !strings.HasPrefix(t, "0x") && !strings.HasPrefix(t, "0X") {
		switch t[n-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift > 0 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 0, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, errors.Errorf("bad size %q", s)
	}
	return n << shift, nil
}

// alias defines name as another name of the flag of, sharing its value.
func (c *cmdline) alias(name, of string) {
	f := c.Lookup(of)
	c.Var(f.Value, name, "the same as -"+of)
}

// int64Var defines an int64 flag that accepts lo to hi.
func (c *cmdline) int64Var(p *int64, name string, def int64, lo, hi int64, usage string) *intFlag {
	*p = def
	f := &intFlag{set: func(n int64) { *p = n }, get: func() int64 { return *p }, lo: lo, hi: hi}
	c.Var(f, name, usage)
	return f
}

// uint32Var defines a uint32 flag that accepts lo to hi.
func (c *cmdline) uint32Var(p *uint32, name string, def uint32, lo, hi uint32, usage string) *intFlag {
	*p = def
	f := &intFlag{set: func(n int64) { *p = uint32(n) }, get: func() int64 { return int64(*p) }, lo: int64(lo), hi: int64(hi)}
	c.Var(f, name, usage)
	return f
}

// secondsFlag is a time given in seconds (a decimal number), checked at
// parse time to be finite, above zero and at most max.
type secondsFlag struct {
	d   *time.Duration
	max time.Duration
}

func (f *secondsFlag) String() string {
	if f == nil || f.d == nil {
		return "0"
	}
	return strconv.FormatFloat(f.d.Seconds(), 'g', -1, 64)
}

func (f *secondsFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > f.max.Seconds() {
		return errors.Errorf("want a number of seconds above 0 and at most %g", f.max.Seconds())
	}
	d := time.Duration(v * float64(time.Second))
	if d <= 0 {
		return errors.Errorf("want a number of seconds above 0 and at most %g (%s is below a nanosecond)", f.max.Seconds(), s)
	}
	*f.d = d
	return nil
}

// seconds returns a new duration flag given in seconds, from above 0 to max.
func (c *cmdline) seconds(name string, def, max time.Duration, usage string) *time.Duration {
	d := def
	c.Var(&secondsFlag{d: &d, max: max}, name, usage)
	return &d
}

// coresFlag is a core mask (poller.ParseCoreMask's forms) checked at parse
// time against the cores this process may run on.
type coresFlag struct {
	mask  *string
	avail func() ([]int, error)
}

func (f *coresFlag) String() string {
	if f == nil || f.mask == nil {
		return ""
	}
	return *f.mask
}

func (f *coresFlag) Set(orig string) error {
	s := spdkMask(orig)
	cores, err := poller.ParseCoreMask(s)
	if err == nil && len(cores) == 0 {
		err = errors.Errorf("core mask %q names no core", orig)
	}
	if err != nil {
		if s != strings.TrimSpace(orig) {
			err = errors.Wrap(err, "a bare number is a hexadecimal mask, as in SPDK: 1 is core 0, 3 cores 0 and 1, [3] core 3")
		}
		return err
	}
	if err := checkCores(cores, f.avail); err != nil {
		return err
	}
	*f.mask = s
	return nil
}

// spdkMask reads a core mask as SPDK does: a bare number is a hexadecimal
// mask with or without 0x (-c 3 and -c 0x3 are cores 0 and 1); a list or
// range (0,2 or [0-3] or 0-1) names the cores themselves.
func spdkMask(s string) string {
	t := strings.TrimSpace(s)
	if t == "" || strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X") {
		return t
	}
	for _, r := range t {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return t
		}
	}
	return "0x" + t
}

// availableCores is poller.AvailableCores; tests replace it.
var availableCores = poller.AvailableCores

// checkCores checks that every core exists and is in the affinity mask.
func checkCores(cores []int, avail func() ([]int, error)) error {
	have, err := avail()
	if err != nil {
		return err
	}
	ok := make(map[int]bool, len(have))
	for _, c := range have {
		ok[c] = true
	}
	for _, c := range cores {
		if !ok[c] {
			return errors.Errorf("core %d does not exist or is not in this process's affinity mask (cores available: %s)", c, poller.FormatCores(have))
		}
	}
	return nil
}

// cores returns a new core-mask flag. Its default is the first n cores this
// process may run on.
func (c *cmdline) cores(name string, n int, usage string) *string {
	// In brackets: a bare "0" or "2" would read as an SPDK hex mask.
	def := "[0]"
	if have, err := availableCores(); err == nil && len(have) > 0 {
		def = "[" + poller.FormatCores(have[:min(n, len(have))]) + "]"
	}
	f := &coresFlag{mask: &def, avail: availableCores}
	c.Var(f, name, usage)
	return f.mask
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// openDevices opens --dev addresses for a command. A malformed address or a
// device named twice is a usage error; a device that cannot be opened (a
// missing file, an absent PCI function) is a failure.
func openDevices(cmd string, devs []string, stderr io.Writer) (*device.Set, int) {
	for _, d := range devs {
		if _, err := device.Parse(d); err != nil {
			return nil, usageError(stderr, cmd, errors.Wrap(err, "--dev"))
		}
	}
	set, err := device.Open(devs, device.Options{Programs: csd.Runner{}})
	if err != nil {
		if errors.Is(err, device.ErrDuplicate) {
			return nil, usageError(stderr, cmd, errors.Wrap(err, "--dev"))
		}
		return nil, failure(stderr, cmd, err)
	}
	for _, n := range set.Notes {
		fmt.Fprintf(stderr, "bpfblk %s: note: %s\n", cmd, n)
	}
	return set, exitOK
}
