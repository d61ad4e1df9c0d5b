package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
)

func init() {
	register(command{name: "list", summary: "list controllers and namespaces of devices", run: runList})
	register(command{name: "identify", summary: "print a controller's Identify data", run: runIdentify})
}

// nsJSON is one namespace in `bpfblk list --json`.
type nsJSON struct {
	NSID       uint32 `json:"nsid"`
	CommandSet string `json:"command_set"`
	Blocks     uint64 `json:"blocks,omitempty"`
	BlockSize  uint32 `json:"block_size,omitempty"`
	Bytes      uint64 `json:"bytes,omitempty"`
}

// ctrlJSON is one controller in `bpfblk list --json`.
type ctrlJSON struct {
	Name       string   `json:"name"`
	Model      string   `json:"model"`
	Serial     string   `json:"serial"`
	Firmware   string   `json:"firmware"`
	Version    string   `json:"version"`
	MaxXfer    int      `json:"max_transfer"`
	IOQueues   int      `json:"io_queues"`
	Optional   []string `json:"optional_commands"`
	CMBBytes   uint64   `json:"cmb_bytes"`
	Compute    bool     `json:"compute"`
	Namespaces []nsJSON `json:"namespaces"`
	// SubNQN, CNTLID and MultiController say which NVM subsystem the
	// controller belongs to (Identify SUBNQN, CNTLID, CMIC bit 1): a
	// compute controller reaches the namespaces of its subsystem.
	SubNQN          string `json:"subnqn"`
	CNTLID          uint16 `json:"cntlid"`
	MultiController bool   `json:"multi_controller"`
}

var csiNames = map[uint8]string{nvme.CSINVM: "NVM", 1: "KV", 2: "ZNS", nvme.CSISLM: "SLM", nvme.CSICP: "CP"}

func describe(c *nvme.Controller) ctrlJSON {
	id := c.IdentifyData()
	v := c.Version()
	out := ctrlJSON{
		Name: c.Name(), Model: id.Model, Serial: id.Serial, Firmware: id.Firmware,
		Version:  fmt.Sprintf("%d.%d.%d", v>>16, v>>8&0xff, v&0xff),
		MaxXfer:  c.MaxTransfer(),
		IOQueues: c.IOQueues(),
		Optional: []string{},
		SubNQN:   id.SubNQN, CNTLID: id.CNTLID, MultiController: id.CMIC&nvme.CMICMultiController != 0,
	}
	for _, op := range []struct {
		op   uint8
		name string
	}{{nvme.OpWriteZeroes, "write-zeroes"}, {nvme.OpDSM, "deallocate"}, {nvme.OpCopy, "copy"}, {nvme.OpCompare, "compare"}} {
		if c.Supports(op.op) {
			out.Optional = append(out.Optional, op.name)
		}
	}
	if info, ok := c.CMBInfo(); ok {
		out.CMBBytes = info.Size
	}
	if cns, err := c.ComputeNamespaces(); err == nil && len(cns) > 0 {
		out.Compute = true
	}
	for _, ns := range c.Namespaces() {
		n := nsJSON{NSID: ns.ID, CommandSet: csiNames[ns.CSI]}
		if n.CommandSet == "" {
			n.CommandSet = fmt.Sprintf("CSI %d", ns.CSI)
		}
		if ns.CSI == nvme.CSINVM {
			n.Blocks, n.BlockSize, n.Bytes = ns.Blocks, ns.BlockSize, ns.Blocks*uint64(ns.BlockSize)
		}
		out.Namespaces = append(out.Namespaces, n)
	}
	return out
}

func runList(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("list", "list [--dev DEV]... [--json]", stdout, stderr)
	devs := fs.devFlag()
	jsonOut := fs.Bool("json", false, "print JSON")
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	set, code := openDevices("list", *devs, stderr)
	if set == nil {
		return code
	}
	defer set.Close()
	var ctrls []ctrlJSON
	for _, c := range set.Controllers {
		ctrls = append(ctrls, describe(c))
	}
	// A uring: device has no controller of bpfblk's: one entry with one
	// namespace, nsid 0, command set "block".
	for _, b := range set.Bdevs {
		if _, ok := uring.Lookup(b); ok {
			bs := uint32(b.BlockSize())
			ctrls = append(ctrls, ctrlJSON{Name: b.Name(), Model: b.Info().Product, MaxXfer: b.Info().MaxTransfer, Optional: []string{},
				Namespaces: []nsJSON{{CommandSet: "block", Blocks: b.NumBlocks(), BlockSize: bs, Bytes: b.NumBlocks() * uint64(bs)}}})
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ctrls); err != nil {
			return failure(stderr, "list", err)
		}
		return exitOK
	}
	printSubsystems(stdout, ctrls)
	for _, c := range ctrls {
		if len(c.Namespaces) == 1 && c.Namespaces[0].CommandSet == "block" {
			n := c.Namespaces[0]
			fmt.Fprintf(stdout, "%s  %s\n  %s  %-5s %10d blocks of %4d B  %s\n", c.Name, c.Model, c.Name, n.CommandSet, n.Blocks, n.BlockSize, humanBytes(n.Bytes))
			continue
		}
		extra := ""
		if c.CMBBytes > 0 {
			extra += ", CMB " + humanBytes(c.CMBBytes)
		}
		if c.Compute {
			extra += ", computational storage (CP+SLM)"
		}
		fmt.Fprintf(stdout, "%s  %s  serial %s  fw %s  NVMe %s  max transfer %s  optional: %s%s\n",
			c.Name, c.Model, c.Serial, c.Firmware, c.Version, humanBytes(uint64(c.MaxXfer)), strings.Join(c.Optional, ","), extra)
		for _, n := range c.Namespaces {
			if n.BlockSize > 0 {
				fmt.Fprintf(stdout, "  %sn%d  %-4s %10d blocks of %4d B  %s\n", c.Name, n.NSID, n.CommandSet, n.Blocks, n.BlockSize, humanBytes(n.Bytes))
			} else {
				fmt.Fprintf(stdout, "  %sn%d  %s\n", c.Name, n.NSID, n.CommandSet)
			}
		}
	}
	return exitOK
}

// printSubsystems prints one line per NVM subsystem: its NQN and its
// controllers.
func printSubsystems(w io.Writer, ctrls []ctrlJSON) {
	var order []string
	members := map[string][]string{}
	for _, c := range ctrls {
		if _, seen := members[c.SubNQN]; !seen {
			order = append(order, c.SubNQN)
		}
		members[c.SubNQN] = append(members[c.SubNQN], fmt.Sprintf("%s (cntlid %d)", c.Name, c.CNTLID))
	}
	for _, nqn := range order {
		name := nqn
		if name == "" {
			name = "(no SUBNQN)"
		}
		fmt.Fprintf(w, "subsystem %s: %s\n", name, strings.Join(members[nqn], ", "))
	}
}

func runIdentify(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("identify", "identify [--dev DEV]... [--json]", stdout, stderr)
	devs := fs.devFlag()
	jsonOut := fs.Bool("json", false, "print JSON")
	if code, ok := fs.parseNoArgs(args); !ok {
		return code
	}
	set, code := openDevices("identify", *devs, stderr)
	if set == nil {
		return code
	}
	defer set.Close()
	type named struct {
		name string
		id   *nvme.IdentifyController
	}
	var ids []named
	for _, c := range set.Controllers {
		ids = append(ids, named{c.Name(), c.IdentifyData()})
	}
	// A uring: NVMe namespace is identified through io_uring passthrough
	// on its generic device; other uring: devices have nothing to say.
	for _, b := range set.Bdevs {
		d, ok := uring.Lookup(b)
		if !ok {
			continue
		}
		ng := uring.GenericPath(d.Path)
		if ng == "" {
			fmt.Fprintf(stderr, "bpfblk identify: note: %s (%s) is not an NVMe namespace: nothing to identify\n", b.Name(), d.Path)
			continue
		}
		pt, err := uring.OpenPassthru(ng)
		if err != nil {
			return failure(stderr, "identify", err)
		}
		id, err := pt.IdentifyController()
		pt.Close()
		if err != nil {
			return failure(stderr, "identify", errors.Wrapf(err, "%s (%s)", b.Name(), ng))
		}
		ids = append(ids, named{b.Name(), id})
	}
	if *jsonOut {
		all := map[string]map[string]string{}
		for _, c := range ids {
			m := map[string]string{}
			for _, kv := range identifyFields(c.id) {
				m[kv[0]] = kv[1]
			}
			all[c.name] = m
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			return failure(stderr, "identify", err)
		}
		return exitOK
	}
	for _, c := range ids {
		fmt.Fprintf(stdout, "%s:\n", c.name)
		for _, kv := range identifyFields(c.id) {
			fmt.Fprintf(stdout, "  %-10s %s\n", kv[0], kv[1])
		}
	}
	return exitOK
}

// identifyFields lists the parsed Identify Controller fields in spec order.
func identifyFields(id *nvme.IdentifyController) [][2]string {
	return [][2]string{
		{"vid", fmt.Sprintf("%#04x", id.VID)}, {"ssvid", fmt.Sprintf("%#04x", id.SSVID)},
		{"sn", id.Serial}, {"mn", id.Model}, {"fr", id.Firmware},
		{"rab", fmt.Sprint(id.RAB)}, {"ieee", fmt.Sprintf("%02x%02x%02x", id.IEEE[2], id.IEEE[1], id.IEEE[0])},
		{"cmic", fmt.Sprintf("%#x", id.CMIC)}, {"mdts", fmt.Sprint(id.MDTS)}, {"cntlid", fmt.Sprintf("%#x", id.CNTLID)},
		{"ver", fmt.Sprintf("%#x", id.Version)}, {"oaes", fmt.Sprintf("%#x", id.OAES)}, {"ctratt", fmt.Sprintf("%#x", id.CTRATT)},
		{"cntrltype", fmt.Sprint(id.CNTRLTYPE)}, {"oacs", fmt.Sprintf("%#x", id.OACS)}, {"acl", fmt.Sprint(id.ACL)},
		{"aerl", fmt.Sprint(id.AERL)}, {"lpa", fmt.Sprintf("%#x", id.LPA)}, {"elpe", fmt.Sprint(id.ELPE)},
		{"sqes", fmt.Sprintf("%#x", id.SQES)}, {"cqes", fmt.Sprintf("%#x", id.CQES)}, {"maxcmd", fmt.Sprint(id.MAXCMD)},
		{"nn", fmt.Sprint(id.NN)}, {"oncs", fmt.Sprintf("%#x", id.ONCS)}, {"fuses", fmt.Sprintf("%#x", id.FUSES)},
		{"fna", fmt.Sprintf("%#x", id.FNA)}, {"vwc", fmt.Sprintf("%#x", id.VWC)}, {"awun", fmt.Sprint(id.AWUN)},
		{"awupf", fmt.Sprint(id.AWUPF)}, {"ocfs", fmt.Sprintf("%#x", id.OCFS)}, {"sgls", fmt.Sprintf("%#x", id.SGLS)},
		{"subnqn", id.SubNQN},
	}
}
