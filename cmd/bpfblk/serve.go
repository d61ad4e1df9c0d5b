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

	"github.com/bpfblk/bpfblk/nvme"
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
	fs := newCmdline("serve", "serve --listen ADDR:PORT [--nqn NQN] [-c CORES] [--dev DEV]... [--compute-hosts N] [--no-pin]", stdout, stderr)
	fs.about = "Exports the NVM namespaces of the devices as one NVMe/TCP subsystem, with a\n" +
		"discovery controller, until interrupted. One target worker polls on each core.\n" +
		"The first compute controller among the devices (csd, or the one of mock) has its\n" +
		"compute and memory namespaces exported after the NVM ones: remote hosts load and\n" +
		"run programs on it, and it reads the NVM namespaces of its subsystem peer to peer,\n" +
		"so a remote bpfblk scan sends only matches over the network."
	listen := fs.String("listen", "", "`ADDR:PORT` to listen on, e.g. 127.0.0.1:4420 (port 0: any free port)")
	nqn := fs.String("nqn", "nqn.2024-01.io.bpfblk:subsystem", "`NQN` of the exported subsystem")
	cores := fs.cores("c", 1, "`CORES` to run target workers on: a mask as SPDK reads it (3 or 0x3: cores 0-1; a bare number is hex) or a list such as 0-1, 0,2 or [0-3], of cores this process may use")
	devs := fs.devFlag()
	noPin := fs.Bool("no-pin", false, "do not pin reactors to their cores")
	hosts := fs.intRange("compute-hosts", 1, 1, 1024, "`N` hosts that may use the exported compute controller at once, each with 1/N of its memory (others scan on their own cores)")
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
	cc, err := computeController(set.Controllers)
	if err != nil {
		return fs.failure(err)
	}
	srv, err := nvmf.Listen(*listen, nvmf.Config{NQN: *nqn, Bdevs: set.Bdevs, Reactors: g.Reactors(), Compute: cc, ComputeHosts: *hosts})
	if err != nil {
		return fs.failure(err)
	}
	defer srv.Close()
	names := make([]string, len(set.Bdevs))
	for i, b := range set.Bdevs {
		names[i] = fmt.Sprintf("%d=%s", i+1, b.Name())
	}
	if cp, mem, note := srv.ComputeNSIDs(); cp != 0 {
		names = append(names, fmt.Sprintf("%d=compute(%s)", cp, cc.Name()))
		for _, m := range mem {
			names = append(names, fmt.Sprintf("%d=memory(%s)", m, cc.Name()))
		}
		if note != "" {
			fmt.Fprintf(stderr, "bpfblk serve: note: %s\n", note)
		}
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

// computeController returns the first controller with a compute namespace
// and memory namespaces, or nil.
func computeController(cs []*nvme.Controller) (*nvme.Controller, error) {
	for _, c := range cs {
		cns, err := c.ComputeNamespaces()
		if err != nil {
			return nil, err
		}
		if len(cns) > 0 && len(cns[0].Memory) > 0 {
			return c, nil
		}
	}
	return nil, nil
}

// serveIdle is the idle strategy of the target's reactors: a short spin,
// then park — a parked reactor wakes when one of its sockets is readable,
// so spinning longer only burns the core the hosts' requests need.
var serveIdle = poller.IdleStrategy{Spin: 16, Yield: 4, Park: 200 * time.Microsecond}
