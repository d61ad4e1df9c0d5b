package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// multiFlag is a repeatable string flag, such as --dev.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// parseInterleaved parses flags that may come before, between or after
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// devFlag adds the repeatable --dev flag of the CLI contract to fs.
func devFlag(fs *flag.FlagSet) *multiFlag {
	var devs multiFlag
	fs.Var(&devs, "dev", "device (repeatable): mock, mock:null, file:PATH[,lba=512|4096], pci:DDDD:BB:DD.F")
	return &devs
}

// parseNoArgs parses the flags of a command that takes no positional
// arguments. When it returns false, the command exits with code.
func parseNoArgs(cmd string, fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage, false
	}
	if len(pos) > 0 {
		return usageError(stderr, cmd, errors.Errorf("unexpected argument %q", pos[0])), false
	}
	return exitOK, true
}

// newFlagSet makes a flag set that reports errors on stderr without exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bpfblk %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// usageError prints a one-line usage error and returns the usage status.
func usageError(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bpfblk %s: %v\n", cmd, err)
	return exitUsage
}

// failure prints a one-line error and returns the failure status.
func failure(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bpfblk %s: %v\n", cmd, err)
	return exitFail
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

// openDevices opens --dev addresses for a command, mapping errors to exit
// statuses: a malformed address or a missing file is a usage error.
func openDevices(cmd string, devs []string, stderr io.Writer) (*device.Set, int) {
	for _, d := range devs {
		if _, err := device.Parse(d); err != nil {
			return nil, usageError(stderr, cmd, err)
		}
	}
	set, err := device.Open(devs, device.Options{})
	if err != nil {
		if os.IsNotExist(errors.Cause(err)) {
			return nil, usageError(stderr, cmd, err)
		}
		return nil, failure(stderr, cmd, err)
	}
	return set, exitOK
}
