// Command bpfblk is the command-line face of the bpfblk storage stack: scans with
// eBPF filters, NVMe benchmarks, device setup and program tooling.
//
// Exit status: 0 success, 1 failure or rejection, 2 usage error.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand. Each lives in its own file and registers itself
// from init, so subcommands never share a file.
type command struct {
	name    string
	summary string
	// run executes the subcommand with the arguments after its name and returns
	// the process exit status.
	run func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("bpfblk: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// Exit statuses of the CLI contract.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: bpfblk COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run 'bpfblk COMMAND -h' for a command's flags")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "bpfblk: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return c.run(args[1:], stdout, stderr)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
