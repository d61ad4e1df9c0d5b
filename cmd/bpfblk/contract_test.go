package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfblk/bpfblk/poller"
)

// checkUsageError checks the usage-error form of the CLI contract: exit 2,
// nothing on stdout, one line on stderr starting "bpfblk CMD: " and holding
// every string of want, then the hint to run -h.
func checkUsageError(t *testing.T, cmd string, args []string, code int, out, errOut string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	ok := code == exitUsage && out == "" && len(lines) == 2 &&
		strings.HasPrefix(lines[0], prefix(cmd)+": ") && lines[1] == usageHint(cmd)
	for _, w := range want {
		ok = ok && strings.Contains(lines[0], w)
	}
	if !ok {
		t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2, an error line naming %q and %q",
			args, code, out, errOut, want, usageHint(cmd))
	}
}

// checkFailure checks the failure form: exit 1, one line on stderr starting
// "bpfblk CMD: " and holding every string of want, and no usage hint.
func checkFailure(t *testing.T, cmd string, args []string, code int, errOut string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	ok := code == exitFail && len(lines) == 1 && strings.HasPrefix(lines[0], prefix(cmd)+": ") &&
		!strings.Contains(errOut, "for usage") && !strings.Contains(errOut, "goroutine")
	for _, w := range want {
		ok = ok && strings.Contains(errOut, w)
	}
	if !ok {
		t.Errorf("%v: exit %d, stderr %q; want exit 1 and one error line naming %q", args, code, errOut, want)
	}
}

// badValues returns values that flag f must refuse, and whether f is a
// numeric flag at all. Range-checked flags get values just outside their
// range; the flag package's own numeric flags get what their parser refuses
// (and NaN for floats, which ParseFloat accepts: such a flag breaks the
// contract).
func badValues(t *testing.T, f *flag.Flag) ([]string, bool) {
	switch v := f.Value.(type) {
	case *intFlag:
		bad := []string{"x", "1.5", ""}
		if v.lo > math.MinInt64 {
			bad = append(bad, strconv.FormatInt(v.lo-1, 10))
		}
		if v.hi < math.MaxInt64 {
			bad = append(bad, strconv.FormatInt(v.hi+1, 10))
		}
		if v.mult > 1 && v.lo+1 <= v.hi {
			bad = append(bad, strconv.FormatInt(v.lo+1, 10))
		}
		return bad, true
	case *secondsFlag:
		return []string{"x", "NaN", "+Inf", "-Inf", "0", "-1", "1e-12", strconv.FormatFloat(v.max.Seconds()+1, 'g', -1, 64)}, true
	case *byteSize:
		return []string{"x", "0", "-1", "1.5G", "1P", "99999999999T"}, true
	case *coresFlag:
		have, err := availableCores()
		if err != nil {
			t.Fatal(err)
		}
		// A bare number is an SPDK hex mask: 0 names no core.
		bad := []string{"x", "", "3-1", "0,0", "0", "0x0"}
		if next := slices.Max(have) + 1; next < poller.MaxCores {
			bad = append(bad, "["+strconv.Itoa(next)+"]", fmt.Sprintf("%x", uint64(1)<<next))
		}
		return append(bad, "["+strconv.Itoa(poller.MaxCores)+"]"), true
	}
	switch fmt.Sprintf("%T", f.Value) {
	case "*flag.intValue", "*flag.int64Value", "*flag.uintValue", "*flag.uint64Value", "*flag.durationValue":
		return []string{"x", "1.5"}, true
	case "*flag.float64Value":
		return []string{"x", "NaN", "Inf"}, true
	}
	return nil, false
}

// contractCommands is every command and subcommand, with arguments that make
// it fail at run time (exit 1).
func contractCommands(t *testing.T) []struct {
	cmd      string
	failArgs []string
	failMsg  string
} {
	return []struct {
		cmd      string
		failArgs []string
		failMsg  string
	}{
		{"scan", []string{"--filter", "/nonexistent/filter.o"}, "no such file"},
		{"perf", []string{"--dev", "pci:ffff:ff:1f.7", "-t", "0.1"}, "pci:ffff:ff:1f.7"},
		{"list", []string{"--dev", "pci:ffff:ff:1f.7"}, "pci:ffff:ff:1f.7"},
		{"identify", []string{"--dev", "file:/nonexistent/disk.img"}, "no such file"},
		{"copy", []string{"--from", "file:/nonexistent/disk.img:1:0:8", "--to", "mock:null:1:0"}, "no such file"},
		{"setup", []string{"--dev", "pci:0000:09:00.0"}, "no PCI function 0000:09:00.0"},
		{"prog verify", []string{"/nonexistent/filter.o"}, "no such file"},
		{"prog dis", []string{"/nonexistent/filter.o"}, "no such file"},
		{"prog run", []string{"/nonexistent/filter.o"}, "no such file"},
	}
}

// TestContract runs the CLI contract (doc.go) over every command: -h and
// --help print the usage on stdout and exit 0; an unknown flag and a bad
// value of every numeric flag are usage errors (exit 2, one line naming the
// flag, then the hint); a failure at run time exits 1.
func TestContract(t *testing.T) {
	fakeSetup(t) // setup acts on a fake system, never this machine's
	var got *cmdline
	onCmdline = func(c *cmdline) { got = c }
	t.Cleanup(func() { onCmdline = nil })

	numeric := map[string][]string{}
	for _, tc := range contractCommands(t) {
		cmdArgs := strings.Fields(tc.cmd)
		for _, h := range []string{"-h", "--help"} {
			got = nil
			args := append(slices.Clone(cmdArgs), h)
			code, out, errOut := runCLI(args...)
			if code != exitOK || errOut != "" || !strings.HasPrefix(out, "usage: bpfblk "+tc.cmd) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want the usage on stdout and exit 0", args, code, out, errOut)
			}
			if got == nil || got.cmd != tc.cmd {
				t.Fatalf("%v built no command line for %q", args, tc.cmd)
			}
			got.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(out, "-"+f.Name) {
					t.Errorf("%v: the usage does not list -%s", args, f.Name)
				}
			})
		}
		fs := got

		args := append(slices.Clone(cmdArgs), "--no-such-flag")
		code, out, errOut := runCLI(args...)
		checkUsageError(t, tc.cmd, args, code, out, errOut, "no-such-flag")

		fs.VisitAll(func(f *flag.Flag) {
			bad, ok := badValues(t, f)
			if !ok {
				return
			}
			numeric[tc.cmd] = append(numeric[tc.cmd], f.Name)
			for _, v := range bad {
				args := append(slices.Clone(cmdArgs), "-"+f.Name, v)
				code, out, errOut := runCLI(args...)
				checkUsageError(t, tc.cmd, args, code, out, errOut, "-"+f.Name, strconv.Quote(v))
			}
		})

		args = append(slices.Clone(cmdArgs), tc.failArgs...)
		code, _, errOut = runCLI(args...)
		checkFailure(t, tc.cmd, args, code, errOut, tc.failMsg)
	}

	// The flags the contract names are among those checked.
	for cmd, flags := range map[string][]string{
		"scan":        {"c", "chunk", "map-memory"},
		"prog verify": {"map-memory"},
		"perf":        {"M", "q", "o", "t", "c"},
		"copy":        {"chunk", "q"},
		"setup":       {"hugepages", "node"},
		"prog run":    {"lba", "nsid", "block-size", "budget", "map-memory"},
	} {
		for _, f := range flags {
			if !slices.Contains(numeric[cmd], f) {
				t.Errorf("%s -%s was not checked as a numeric flag (checked: %v)", cmd, f, numeric[cmd])
			}
		}
	}
}

// TestContractTopLevel: the same contract for bpfblk itself and for the
// prog group.
func TestContractTopLevel(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"prog", "-h"}, {"prog", "--help"}} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || errOut != "" || !strings.HasPrefix(out, "usage:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	code, out, errOut := runCLI("help", "perf")
	if code != exitOK || errOut != "" || !strings.HasPrefix(out, "usage: bpfblk perf") {
		t.Errorf("help perf: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"", nil, "missing command"},
		{"", []string{"frob"}, `unknown command "frob"`},
		{"", []string{"--no-such-flag"}, "no-such-flag"},
		{"", []string{"help", "frob"}, `"frob"`},
		{"prog", []string{"prog"}, "missing subcommand"},
		{"prog", []string{"prog", "frob"}, `unknown subcommand "frob"`},
		{"prog", []string{"prog", "--no-such-flag"}, "no-such-flag"},
	} {
		code, out, errOut := runCLI(tc.args...)
		checkUsageError(t, tc.cmd, tc.args, code, out, errOut, tc.want)
	}
}

// TestDuplicateDevices: one device given twice is a usage error in every
// command that takes --dev, whether by the same address or by two paths of
// one file.
func TestDuplicateDevices(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"scan", "perf", "list", "identify"} {
		for _, devs := range [][]string{
			{"mock", "mock"},
			{"mock:null", "mock", "mock:null"},
			{"file:" + img, "file:" + dir + "/./" + "disk.img"},
			{"file:" + img, "file:" + link + ",lba=4096"},
		} {
			args := []string{cmd, "-t", "0.1"}
			if cmd != "perf" {
				args = args[:1]
			}
			for _, d := range devs {
				args = append(args, "--dev", d)
			}
			code, out, errOut := runCLI(args...)
			checkUsageError(t, cmd, args, code, out, errOut, "--dev", "device given twice")
		}
	}
	fakeSetup(t)
	args := []string{"setup", "--dev", "pci:0000:01:00.0", "--dev", "pci:01:00.0"}
	code, out, errOut := runCLI(args...)
	checkUsageError(t, "setup", args, code, out, errOut, "device given twice")

	// Two paths of one file on either side of a copy are one device, opened once.
	args = []string{"copy", "--from", "file:" + img + ":1:0:8", "--to", "file:" + link + ":1:64"}
	if code, out, errOut := runCLI(args...); code != exitOK || !strings.Contains(out, "copied") {
		t.Errorf("%v: exit %d, %s%s", args, code, out, errOut)
	}
	args = []string{"copy", "--from", "file:" + img + ":1:0:8", "--to", "file:" + link + ",lba=4096:1:64"}
	code, out, errOut = runCLI(args...)
	checkUsageError(t, "copy", args, code, out, errOut, "two LBA sizes")
}

// TestCoreMaskChecked: a core that this process may not use is a usage
// error naming the core and the cores there are.
func TestCoreMaskChecked(t *testing.T) {
	old := availableCores
	availableCores = func() ([]int, error) { return []int{0, 2, 3}, nil }
	t.Cleanup(func() { availableCores = old })
	for _, tc := range []struct {
		cmd, mask, core string
	}{
		{"scan", "2", "core 1"}, // SPDK: a bare number is a hex mask
		{"scan", "0x10", "core 4"},
		{"perf", "0,2-5", "core 4"},
		{"perf", "[99]", "core 99"},
		{"perf", "99", "core 4"}, // 0x99: cores 0, 3, 4 and 7
	} {
		args := []string{tc.cmd, "-c", tc.mask}
		code, out, errOut := runCLI(args...)
		checkUsageError(t, tc.cmd, args, code, out, errOut, "-c", tc.core, "cores available: 0,2-3")
	}
	// The default is the first cores there are, not cores 0 and 1.
	var got *cmdline
	onCmdline = func(c *cmdline) { got = c }
	t.Cleanup(func() { onCmdline = nil })
	runCLI("scan", "-h")
	if def := got.Lookup("c").DefValue; def != "[0,2]" {
		t.Errorf("scan -c defaults to %q with cores 0,2,3 available; want [0,2]", def)
	}
	runCLI("perf", "-h")
	if def := got.Lookup("c").DefValue; def != "[0]" {
		t.Errorf("perf -c defaults to %q; want [0]", def)
	}
}

// TestNumbersChecked: the values the issue found accepted or mangled are
// usage errors naming the flag.
func TestNumbersChecked(t *testing.T) {
	raw := writeRaw(t, nil)
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"prog run", []string{"prog", "run", "--raw", raw, "--nsid", "4294967296"}, "-nsid"},
		{"prog run", []string{"prog", "run", "--raw", raw, "--nsid", "0"}, "-nsid"},
		{"prog run", []string{"prog", "run", "--raw", raw, "--block-size", "100"}, "-block-size"},
		{"prog run", []string{"prog", "run", "--raw", raw, "--budget", "-5"}, "-budget"},
		{"perf", []string{"perf", "-t", "NaN"}, "-t"},
		{"perf", []string{"perf", "-t", "1e300"}, "-t"},
		{"perf", []string{"perf", "-M", "101"}, "-M"},
		{"perf", []string{"perf", "-o", "0"}, "-o"},
		{"scan", []string{"scan", "-c", "[1023]"}, "core 1023"},
		{"scan", []string{"scan", "--chunk", "-1"}, "-chunk"},
	} {
		code, out, errOut := runCLI(tc.args...)
		checkUsageError(t, tc.cmd, tc.args, code, out, errOut, tc.want)
	}
}
