package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/p2pdma"
	"github.com/pkg/errors"
)

func init() {
	register(command{name: "copy", summary: "copy blocks between namespaces peer-to-peer (CMB), by NVM Copy, or through host memory", run: runCopy})
}

const copySynopsis = "copy --from DEV:NSID:LBA:COUNT --to DEV:NSID:LBA [--via auto|cmb|copy|host] [--chunk BYTES] [-q N] [--verify] [--json]"

// copyReport is the JSON of `bpfblk copy --json`.
type copyReport struct {
	Bytes            uint64  `json:"bytes"`
	BytesThroughHost uint64  `json:"bytes_through_host"`
	Seconds          float64 `json:"seconds"`
	Via              string  `json:"via"`
	Path             string  `json:"path"`
	From             string  `json:"from"`
	To               string  `json:"to"`
	Verified         bool    `json:"verified,omitempty"`
}

// endpoint is one side of a copy as given on the command line.
type endpoint struct {
	dev   string // device address, e.g. "mock", "pci:0000:01:00.0"
	ns    string // NSID (or a namespace name such as mock1n1)
	lba   uint64
	count uint64 // source only
}

// parseEndpoint splits DEV:NSID:LBA[:COUNT] from the right, so that device
// addresses with colons (pci:0000:01:00.0, mock:null) stay whole.
func parseEndpoint(flagName, s string, withCount bool) (endpoint, error) {
	n := 3
	form := "DEV:NSID:LBA"
	if withCount {
		n, form = 4, "DEV:NSID:LBA:COUNT"
	}
	parts := strings.Split(s, ":")
	if len(parts) < n {
		return endpoint{}, errors.Errorf("--%s %q: want %s", flagName, s, form)
	}
	tail := parts[len(parts)-n+1:]
	e := endpoint{dev: strings.Join(parts[:len(parts)-n+1], ":"), ns: tail[0]}
	if e.dev == "" || e.ns == "" {
		return endpoint{}, errors.Errorf("--%s %q: want %s", flagName, s, form)
	}
	var err error
	if e.lba, err = strconv.ParseUint(tail[1], 0, 64); err != nil {
		return endpoint{}, errors.Errorf("--%s %q: LBA %q is not a number", flagName, s, tail[1])
	}
	if withCount {
		if e.count, err = strconv.ParseUint(tail[2], 0, 64); err != nil || e.count == 0 {
			return endpoint{}, errors.Errorf("--%s %q: COUNT %q is not a positive number", flagName, s, tail[2])
		}
	}
	if _, err := device.Parse(e.dev); err != nil {
		return endpoint{}, errors.Wrapf(err, "--%s", flagName)
	}
	return e, nil
}

func runCopy(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("copy", copySynopsis, stdout, stderr)
	from := fs.String("from", "", "source DEV:NSID:LBA:COUNT (DEV as in --dev: mock, mock:null, file:PATH[,lba=N], pci:DDDD:BB:DD.F, uring:PATH; "+
		"for mock, NSID counts the demo subsystem's namespaces in order, or names one such as mock1n1)")
	to := fs.String("to", "", "destination DEV:NSID:LBA")
	viaFlag := fs.String("via", "auto", "path: auto (NVM Copy, else a CMB, else host memory), cmb, copy or host")
	verify := fs.Bool("verify", false, "read both ranges back afterwards and compare them (through host memory)")
	jsonOut := fs.Bool("json", false, "print a JSON report")
	chunk := fs.size("chunk", 128<<10, 64<<20, "`BYTES` per Read/Write pair (a multiple of 512, at most 64 MiB)")
	qd := fs.intRange("q", 8, 1, 1024, "`N` chunks in flight (1-1024)")
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	if *from == "" || *to == "" {
		return usageError(stderr, "copy", errors.New("--from and --to are required"))
	}
	src, err := parseEndpoint("from", *from, true)
	if err != nil {
		return usageError(stderr, "copy", err)
	}
	dst, err := parseEndpoint("to", *to, false)
	if err != nil {
		return usageError(stderr, "copy", err)
	}
	via, err := p2pdma.ParseVia(*viaFlag)
	if err != nil {
		return usageError(stderr, "copy", err)
	}

	// One Open for both sides: emulated controllers then share one bus, as
	// controllers of one PCIe fabric do.
	// Both sides on one device (two addresses of one file, say) open it once.
	addrs := []string{src.dev}
	ss, _ := device.Parse(src.dev)
	ds, _ := device.Parse(dst.dev)
	switch {
	case ss.Key() != ds.Key():
		addrs = append(addrs, dst.dev)
	case ss.LBASize != ds.LBASize:
		return fs.usageError(errors.Errorf("--from %s and --to %s are one file with two LBA sizes", src.dev, dst.dev))
	default:
		dst.dev = src.dev
	}
	set, code := openDevices("copy", addrs, stderr)
	if set == nil {
		return code
	}
	defer set.Close()
	nss := deviceNamespaces(set, addrs)
	sb, err := resolveNamespace("from", src, nss[src.dev])
	if err != nil {
		return usageError(stderr, "copy", err)
	}
	db, err := resolveNamespace("to", dst, nss[dst.dev])
	if err != nil {
		return usageError(stderr, "copy", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, err := p2pdma.Copy(ctx, db, dst.lba, sb, src.lba, src.count, p2pdma.CopyOptions{
		Via: via, ChunkBytes: *chunk, InFlight: *qd, Others: set.Controllers,
		Logf: func(format string, args ...any) { fmt.Fprintf(stderr, "bpfblk copy: "+format+"\n", args...) },
	})
	if err != nil {
		if errors.Is(err, p2pdma.ErrInvalid) {
			return usageError(stderr, "copy", err)
		}
		return failure(stderr, "copy", err)
	}
	if *verify {
		if err := p2pdma.Compare(ctx, sb, src.lba, db, dst.lba, src.count); err != nil {
			return failure(stderr, "copy", errors.Wrap(err, "verify"))
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(copyReport{
			Bytes: st.Bytes, BytesThroughHost: st.BytesThroughHost, Seconds: st.Elapsed.Seconds(),
			Via: st.Via.String(), Path: st.Path, From: sb.Name(), To: db.Name(), Verified: *verify,
		}); err != nil {
			return failure(stderr, "copy", err)
		}
		return exitOK
	}
	secs := st.Elapsed.Seconds()
	fmt.Fprintf(stdout, "copied %s from %s blocks %d+%d to %s block %d via %s (%s) in %.3fs (%.2f GB/s); through host memory %s%s\n",
		humanBytes(st.Bytes), sb.Name(), src.lba, src.count, db.Name(), dst.lba, st.Via, st.Path, secs,
		float64(st.Bytes)/max(secs, 1e-9)/1e9, humanBytes(st.BytesThroughHost), map[bool]string{true: "; verified"}[*verify])
	return exitOK
}

// deviceNamespaces attributes the opened namespaces to the addresses that
// opened them, in order: a PCI address has its own controller, each file:
// address one namespace of the shared file-backed controller, mock:null the
// null controller, and mock the demo subsystem (the other emulated
// controllers).
func deviceNamespaces(set *device.Set, addrs []string) map[string][]*bdev.Bdev {
	out := map[string][]*bdev.Bdev{}
	specs := map[string]device.Spec{}
	for _, a := range addrs {
		specs[a], _ = device.Parse(a)
	}
	owner := map[*nvme.Controller]string{}
	serial := func(c *nvme.Controller) string { return strings.TrimSpace(c.IdentifyData().Serial) }
	var files, urings []string // one namespace each, in the order of the addresses
	for _, a := range addrs {
		s := specs[a]
		for _, c := range set.Controllers {
			if owner[c] != "" {
				continue
			}
			switch {
			case s.Kind == device.PCI && c.Name() == "pci:"+s.Addr,
				s.Kind == device.MockNull && serial(c) == "BPFBLKNULL",
				s.Kind == device.File && serial(c) == "BPFBLKFILE":
				owner[c] = a
			}
		}
		switch s.Kind {
		case device.File:
			files = append(files, a)
		case device.Uring:
			urings = append(urings, a)
		}
	}
	for _, a := range addrs {
		if specs[a].Kind == device.Mock {
			for _, c := range set.Controllers {
				if owner[c] == "" && !strings.HasPrefix(c.Name(), "pci:") {
					owner[c] = a
				}
			}
		}
	}
	fileIndex, uringIndex := 0, 0
	for _, b := range set.Bdevs {
		c, _ := bdev.NVMeNamespace(b)
		if c == nil {
			// Not an NVMe namespace: a uring: device, opened in order.
			if uringIndex < len(urings) {
				out[urings[uringIndex]] = append(out[urings[uringIndex]], b)
			}
			uringIndex++
			continue
		}
		a := owner[c]
		if a == "" {
			continue
		}
		if specs[a].Kind == device.File {
			// The file-backed controller's namespaces follow the file: addresses.
			if fileIndex < len(files) {
				out[files[fileIndex]] = append(out[files[fileIndex]], b)
			}
			fileIndex++
			continue
		}
		out[a] = append(out[a], b)
	}
	return out
}

// resolveNamespace finds the namespace an endpoint names among its device's
// namespaces: NSID is the namespace ID when the device has one controller
// (a file: device is namespace 1); for the mock demo subsystem, which has several,
// it counts their namespaces in order. A namespace name (mock1n1) works too.
func resolveNamespace(flagName string, e endpoint, bdevs []*bdev.Bdev) (*bdev.Bdev, error) {
	if s, _ := device.Parse(e.dev); (s.Kind == device.File || s.Kind == device.Uring) && len(bdevs) == 1 {
		// A file: device is one namespace, whatever NSID it got on the
		// shared file-backed controller; a uring: device is one bdev.
		if e.ns == "1" || e.ns == bdevs[0].Name() {
			return bdevs[0], nil
		}
		return nil, errors.Errorf("--%s: device %s has one namespace: 1 (%s), not %q", flagName, e.dev, bdevs[0].Name(), e.ns)
	}
	ctrls := map[*nvme.Controller]bool{}
	var have []string
	for i, b := range bdevs {
		c, _ := bdev.NVMeNamespace(b)
		ctrls[c] = true
		have = append(have, fmt.Sprintf("%d (%s)", i+1, b.Name()))
	}
	n, numErr := strconv.ParseUint(e.ns, 10, 32)
	for i, b := range bdevs {
		switch {
		case numErr != nil && b.Name() == e.ns,
			numErr == nil && len(ctrls) > 1 && uint64(i+1) == n,
			numErr == nil && len(ctrls) == 1 && uint64(b.Info().NSID) == n:
			return b, nil
		}
	}
	if len(ctrls) == 1 {
		have = have[:0]
		for _, b := range bdevs {
			have = append(have, fmt.Sprintf("%d (%s)", b.Info().NSID, b.Name()))
		}
	}
	if len(have) == 0 {
		return nil, errors.Errorf("--%s: device %s has no NVM namespaces", flagName, e.dev)
	}
	return nil, errors.Errorf("--%s: device %s has no namespace %q (it has %s)", flagName, e.dev, e.ns, strings.Join(have, ", "))
}
