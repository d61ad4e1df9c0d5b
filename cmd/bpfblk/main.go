package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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

// Exit statuses of the CLI contract (doc.go).
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: bpfblk COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run 'bpfblk COMMAND -h' for a command's flags")
	fmt.Fprintln(w, "exit status: 0 success, 1 failure, 2 usage error")
}

// run runs the command line args (without the program name) and returns
// the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "", fmt.Errorf("missing command (one of %s)", strings.Join(commandNames(), ", ")))
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "help":
		// help COMMAND is COMMAND -h.
		if len(args) > 1 {
			if _, ok := commands[args[1]]; ok {
				return run([]string{args[1], "-h"}, stdout, stderr)
			}
			return usageError(stderr, "", fmt.Errorf("help: unknown command %q (one of %s)", args[1], strings.Join(commandNames(), ", ")))
		}
		usage(stdout)
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		what := "unknown command"
		if strings.HasPrefix(args[0], "-") {
			what = "unknown flag"
		}
		return usageError(stderr, "", fmt.Errorf("%s %q (commands: %s)", what, args[0], strings.Join(commandNames(), ", ")))
	}
	return c.run(args[1:], stdout, stderr)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
