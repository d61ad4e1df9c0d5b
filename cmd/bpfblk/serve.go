package main

import (
	"time"

	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bpfblk/bpfblk/nvmf"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

func init() {
	register(command{name: "serve", summary: "export devices' namespaces over NVMe/TCP", run: runServe})
}

// serveSignals returns the channel that stops serve and a function that
// releases it; tests replace it.
var serveSignals = func() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("serve", "serve --listen ADDR:PORT [--nqn NQN] [-c CORES] [--dev DEV]... [--no-pin]", stdout, stderr)
	fs.about = "Exports the NVM namespaces of the devices as one NVMe/TCP subsystem, with a\n" +
		"discovery controller, until interrupted. One target worker polls on each core."
	listen := fs.String("listen", "", "`ADDR:PORT` to listen on, e.g. 127.0.0.1:4420 (port 0: any free port)")
	nqn := fs.String("nqn", "nqn.2024-01.io.bpfblk:subsystem", "`NQN` of the exported subsystem")
	cores := fs.cores("c", 1, "`CORES` to run target workers on: a mask as SPDK reads it (3 or 0x3: cores 0-1; a bare number is hex) or a list such as 0-1, 0,2 or [0-3], of cores this process may use")
	devs := fs.devFlag()
	noPin := fs.Bool("no-pin", false, "do not pin reactors to their cores")
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	if *listen == "" {
		return fs.usageError(errors.New("--listen: required"))
	}
	if _, port, err := net.SplitHostPort(*listen); err != nil || port == "" {
		return fs.usageError(errors.Errorf("--listen %q: want ADDR:PORT", *listen))
	}
	if *nqn == "" || len(*nqn) > 223 || strings.ContainsAny(*nqn, " /") {
		return fs.usageError(errors.Errorf("--nqn %q: 1 to 223 bytes, no spaces or slashes", *nqn))
	}
	set, code := openDevices("serve", *devs, stderr)
	if set == nil {
		return code
	}
	defer set.Close()
	if len(set.Bdevs) == 0 {
		return fs.failure(errors.New("the devices have no NVM namespaces"))
	}
	g, err := poller.Start(poller.Config{Cores: *cores, NoPin: *noPin, Idle: serveIdle})
	if err != nil {
		return fs.failure(err)
	}
	defer g.Stop()
	sigs, release := serveSignals()
	defer release()
	srv, err := nvmf.Listen(*listen, nvmf.Config{NQN: *nqn, Bdevs: set.Bdevs, Reactors: g.Reactors()})
	if err != nil {
		return fs.failure(err)
	}
	defer srv.Close()
	names := make([]string, len(set.Bdevs))
	for i, b := range set.Bdevs {
		names[i] = fmt.Sprintf("%d=%s", i+1, b.Name())
	}
	fmt.Fprintf(stdout, "serving %s on %s: namespaces %s\n", srv.NQN(), srv.Addr(), strings.Join(names, " "))
	waitErr := make(chan error, 1)
	go func() { waitErr <- srv.Wait() }()
	select {
	case <-sigs:
		return exitOK
	case err := <-waitErr:
		if err != nil {
			return fs.failure(err)
		}
		return exitOK
	}
}

// serveIdle is the idle strategy of the target's reactors: a short spin,
// then park — a parked reactor wakes when one of its sockets is readable,
// so spinning longer only burns the core the hosts' requests need.
var serveIdle = poller.IdleStrategy{Spin: 16, Yield: 4, Park: 200 * time.Microsecond}
