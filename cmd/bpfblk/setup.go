package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/nvme/pci"
)

func init() {
	register(command{name: "setup", summary: "hand NVMe controllers to vfio-pci and reserve hugepages (like SPDK's setup.sh)", run: runSetup})
}

const setupSynopsis = `setup [config|reset|status] [--dev pci:DDDD:BB:DD.F]... [--hugemem SIZE | --hugepages N] [--hugepage-size 2M|1G] [--node N] [--dry-run]`

const setupAbout = `  config  (the default) reserve hugepages and hand NVMe controllers to vfio-pci;
          controllers with a mounted, swapped-on or held namespace are left alone
  reset   give the controllers back to the kernel's nvme driver
  status  list NVMe controllers with driver, IOMMU group and block devices, and the hugepages`

// setupHost returns the system the command works on; tests replace it with
// a fake sysfs tree and kernel.
var setupHost = func(root string) *pci.Host { return &pci.Host{Root: root} }

// loadModule loads a kernel module (only on the real system root).
var loadModule = func(name string) error {
	out, err := exec.Command("modprobe", name).CombinedOutput()
	if err != nil {
		return errors.Errorf("modprobe %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

type setupOptions struct {
	mode      string
	devs      []pci.Addr
	hugeKB    int // page size
	hugePages int // -1: from hugemem
	hugeMem   int64
	node      int
	dryRun    bool
	realRoot  bool
}

func runSetup(args []string, stdout, stderr io.Writer) int {
	fs := newCmdline("setup", setupSynopsis, stdout, stderr)
	fs.about = setupAbout
	var devs multiFlag
	fs.Var(&devs, "dev", "NVMe function to act on (repeatable; default: every NVMe function)")
	hugemem := fs.String("hugemem", "2G", "hugepage memory to reserve: a size such as 2G or 512M (a plain number is MiB); 0 frees them")
	var hugepages, node int
	fs.intVar(&hugepages, "hugepages", -1, -1, maxHugePages, "reserve `N` hugepages (overrides --hugemem; -1: from --hugemem)").want =
		fmt.Sprintf("a number of pages from 0 to %d (or -1: from --hugemem)", maxHugePages)
	pageSize := fs.String("hugepage-size", "2M", "hugepage size: 2M or 1G")
	fs.intVar(&node, "node", -1, -1, maxNode, "NUMA `NODE` for the hugepages (-1: spread evenly over the nodes)").want =
		fmt.Sprintf("a NUMA node from 0 to %d (or -1: spread over the nodes)", maxNode)
	dry := fs.Bool("dry-run", false, "print what would be written to sysfs, change nothing")
	root := fs.String("root", "/", "system root holding sys/ and proc/ (for testing against a copy)")
	pos, code, ok := fs.parse(args)
	if !ok {
		return code
	}
	o := setupOptions{mode: "config", hugePages: hugepages, node: node, dryRun: *dry}
	if len(pos) > 0 {
		o.mode = pos[0]
		pos = pos[1:]
	}
	switch o.mode {
	case "config", "reset", "status":
	default:
		return fs.usageError(errors.Errorf("unknown action %q (want config, reset or status)", o.mode))
	}
	if len(pos) > 0 {
		return fs.usageError(errors.Errorf("unexpected argument %q", pos[0]))
	}
	seen := map[pci.Addr]string{}
	for _, d := range devs {
		if !pci.IsDevString(d) {
			return fs.usageError(errors.Errorf("--dev %q: setup acts on PCI functions (pci:DDDD:BB:DD.F)", d))
		}
		a, err := pci.ParseAddr(d)
		if err != nil {
			return fs.usageError(errors.Wrap(err, "--dev"))
		}
		if first, dup := seen[a]; dup {
			return fs.usageError(errors.Errorf("--dev: %q and %q are both %s: %v", first, d, a.DevString(), device.ErrDuplicate))
		}
		seen[a] = d
		o.devs = append(o.devs, a)
	}
	switch strings.ToUpper(*pageSize) {
	case "2M", "2MB", "2048K", "2048KB":
		o.hugeKB = 2048
	case "1G", "1GB", "1048576K", "1048576KB":
		o.hugeKB = 1 << 20
	default:
		return fs.usageError(errors.Errorf("--hugepage-size %q: want 2M or 1G", *pageSize))
	}
	var err error
	if o.hugeMem, err = parseMemSize(*hugemem); err != nil {
		return fs.usageError(errors.Wrap(err, "--hugemem"))
	}
	o.realRoot = *root == "/" || *root == ""
	h := setupHost(*root)
	if o.dryRun {
		h.DryRun = true
		h.Write = func(path string, data []byte) error {
			fmt.Fprintf(stdout, "would write %q to %s\n", strings.TrimSpace(string(data)), path)
			return nil
		}
	}
	switch o.mode {
	case "status":
		return setupStatus(h, stdout, stderr)
	case "reset":
		return setupReset(h, o, stdout, stderr)
	}
	return setupConfig(h, o, stdout, stderr)
}

// Bounds of setup's numeric flags: 16 Mi pages (32 TiB of 2 MiB pages) and
// Linux's largest NUMA node number (MAX_NUMNODES is at most 1024).
const (
	maxHugePages = 1 << 24
	maxNode      = 1023
)

// parseMemSize parses "2G", "512M", "1024" (MiB), "0".
func parseMemSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1 << 20)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult, t = 1<<10, t[:len(t)-1]
		case 'M':
			mult, t = 1<<20, t[:len(t)-1]
		case 'G':
			mult, t = 1<<30, t[:len(t)-1]
		case 'T':
			mult, t = 1<<40, t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, errors.Errorf("bad size %q (want e.g. 2G, 512M or a number of MiB)", s)
	}
	return n * mult, nil
}

// targets returns the functions to act on: the --dev list, or every NVMe
// function (plus, for reset, every function vfio-pci holds).
func targets(h *pci.Host, o setupOptions) ([]*pci.Function, error) {
	if len(o.devs) > 0 {
		var out []*pci.Function
		for _, a := range o.devs {
			f, err := h.Function(a)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
		return out, nil
	}
	all, err := h.Functions()
	if err != nil {
		return nil, err
	}
	var out []*pci.Function
	for _, f := range all {
		if f.IsNVMe() || o.mode == "reset" && (f.Driver == pci.DriverVFIO || f.DriverOverride == pci.DriverVFIO) {
			out = append(out, f)
		}
	}
	return out, nil
}

func setupConfig(h *pci.Host, o setupOptions, stdout, stderr io.Writer) int {
	status := exitOK
	// Hugepages first: they are useful (and harmless) on their own.
	count := o.hugePages
	if count < 0 {
		pageBytes := int64(o.hugeKB) << 10
		count = int((o.hugeMem + pageBytes - 1) / pageBytes)
	}
	if err := h.ReserveHugePages(o.hugeKB, count, o.node); err != nil {
		fmt.Fprintf(stderr, "bpfblk setup: hugepages: %v\n", err)
		status = exitFail
	} else if !o.dryRun {
		fmt.Fprintf(stdout, "hugepages: %s\n", hugeSummary(h, o.hugeKB))
	}

	fns, err := targets(h, o)
	if err != nil {
		return failure(stderr, "setup", err)
	}
	if len(fns) == 0 {
		fmt.Fprintln(stdout, "no NVMe functions found (PCI class 0x010802): nothing to bind")
	}
	v := h.VFIO()
	if v.Problem() != "" && !v.Driver && o.realRoot && !o.dryRun && v.IOMMUGroups > 0 {
		if err := loadModule("vfio-pci"); err != nil {
			fmt.Fprintf(stderr, "bpfblk setup: %v\n", err)
		}
		v = h.VFIO()
	}
	if p := v.Problem(); p != "" {
		fmt.Fprintf(stderr, "bpfblk setup: VFIO cannot be used on this machine: %s\n", p)
		return exitFail
	}
	for _, f := range fns {
		id := fmt.Sprintf("%s (%04x:%04x)", f.Addr, f.Vendor, f.Device)
		if !f.IsNVMe() {
			fmt.Fprintf(stdout, "%s: not an NVMe controller (class %#06x); binding it as asked\n", id, f.Class)
		}
		if f.Driver == pci.DriverVFIO {
			fmt.Fprintf(stdout, "%s: already bound to vfio-pci (IOMMU group %d)\n", id, f.IOMMUGroup)
			continue
		}
		if f.IOMMUGroup < 0 {
			fmt.Fprintf(stderr, "bpfblk setup: %s has no IOMMU group; left with %s\n", id, driverName(f.Driver))
			status = exitFail
			continue
		}
		if why := h.InUse(f.Addr); len(why) > 0 {
			fmt.Fprintf(stdout, "%s: in use (%s); left with %s\n", id, strings.Join(why, "; "), driverName(f.Driver))
			if len(o.devs) > 0 {
				status = exitFail
			}
			continue
		}
		if err := h.Bind(f.Addr, pci.DriverVFIO); err != nil {
			fmt.Fprintf(stderr, "bpfblk setup: %s: %v\n", id, err)
			status = exitFail
			continue
		}
		verb := "->"
		if o.dryRun {
			verb = "would go from"
		}
		fmt.Fprintf(stdout, "%s: %s %s vfio-pci (IOMMU group %d)\n", id, driverName(f.Driver), verb, f.IOMMUGroup)
		if others := groupBlockers(h, f); others != "" {
			fmt.Fprintf(stdout, "%s: warning: IOMMU group %d also holds %s; bind them to vfio-pci too or the group cannot be used\n", id, f.IOMMUGroup, others)
		}
	}
	return status
}

// groupBlockers names the other functions in f's IOMMU group that a host
// driver holds (which make the group unusable for VFIO).
func groupBlockers(h *pci.Host, f *pci.Function) string {
	members, err := h.GroupMembers(f.IOMMUGroup)
	if err != nil {
		return ""
	}
	var out []string
	for _, m := range members {
		if m.Addr != f.Addr && m.Driver != "" && m.Driver != pci.DriverVFIO && m.Driver != "pcieport" {
			out = append(out, fmt.Sprintf("%s (driver %s)", m.Addr, m.Driver))
		}
	}
	return strings.Join(out, ", ")
}

func driverName(d string) string {
	if d == "" {
		return "no driver"
	}
	return d
}

func hugeSummary(h *pci.Host, sizeKB int) string {
	pools, err := h.HugePools()
	if err != nil {
		return err.Error()
	}
	var total string
	var nodes []string
	for _, p := range pools {
		if p.SizeKB != sizeKB {
			continue
		}
		if p.Node < 0 {
			total = fmt.Sprintf("%d x %d kB (%d MiB), %d free", p.Total, p.SizeKB, p.Bytes()>>20, p.Free)
		} else {
			nodes = append(nodes, fmt.Sprintf("node %d: %d", p.Node, p.Total))
		}
	}
	if len(nodes) > 1 {
		total += " (" + strings.Join(nodes, ", ") + ")"
	}
	return total
}

func setupReset(h *pci.Host, o setupOptions, stdout, stderr io.Writer) int {
	fns, err := targets(h, o)
	if err != nil {
		return failure(stderr, "setup", err)
	}
	if len(fns) == 0 {
		fmt.Fprintln(stdout, "no NVMe functions found: nothing to reset")
		return exitOK
	}
	if _, err := os.Stat(h.Path("/sys/bus/pci/drivers/nvme")); err != nil && o.realRoot && !o.dryRun {
		if err := loadModule("nvme"); err != nil {
			fmt.Fprintf(stderr, "bpfblk setup: %v\n", err)
		}
	}
	status := exitOK
	for _, f := range fns {
		id := fmt.Sprintf("%s (%04x:%04x)", f.Addr, f.Vendor, f.Device)
		if f.Driver != pci.DriverVFIO && f.DriverOverride == "" {
			fmt.Fprintf(stdout, "%s: already with %s\n", id, driverName(f.Driver))
			continue
		}
		got, err := h.Release(f.Addr)
		if err != nil {
			fmt.Fprintf(stderr, "bpfblk setup: %s: %v\n", id, err)
			status = exitFail
			continue
		}
		if o.dryRun {
			fmt.Fprintf(stdout, "%s: would go from %s back to the kernel\n", id, driverName(f.Driver))
			continue
		}
		fmt.Fprintf(stdout, "%s: %s -> %s\n", id, driverName(f.Driver), driverName(got))
		if got == "" && f.IsNVMe() {
			fmt.Fprintf(stderr, "bpfblk setup: %s: no kernel driver took it (is the nvme module available?)\n", id)
			status = exitFail
		}
	}
	return status
}

func setupStatus(h *pci.Host, stdout, stderr io.Writer) int {
	v := h.VFIO()
	if p := v.Problem(); p != "" {
		fmt.Fprintf(stdout, "VFIO: unavailable: %s\n", p)
	} else {
		fmt.Fprintf(stdout, "VFIO: ready (%d IOMMU groups, vfio-pci loaded)\n", v.IOMMUGroups)
	}
	all, err := h.Functions()
	if err != nil {
		return failure(stderr, "setup", err)
	}
	var rows []*pci.Function
	for _, f := range all {
		if f.IsNVMe() || f.Driver == pci.DriverVFIO {
			rows = append(rows, f)
		}
	}
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "no NVMe functions (PCI class 0x010802)")
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	if len(rows) > 0 {
		fmt.Fprintln(tw, "ADDRESS\tVENDOR:DEVICE\tNUMA\tDRIVER\tIOMMU GROUP\tBLOCK DEVICES\tIN USE")
	}
	for _, f := range rows {
		numa, group := "-", "-"
		if f.NUMANode >= 0 {
			numa = strconv.Itoa(f.NUMANode)
		}
		if f.IOMMUGroup >= 0 {
			group = strconv.Itoa(f.IOMMUGroup)
		}
		blk := strings.Join(h.BlockDevices(f.Addr), ",")
		if blk == "" {
			blk = "-"
		}
		use := strings.Join(h.InUse(f.Addr), "; ")
		if use == "" {
			use = "-"
		}
		fmt.Fprintf(tw, "%s\t%04x:%04x\t%s\t%s\t%s\t%s\t%s\n", f.Addr.DevString(), f.Vendor, f.Device, numa, driverName(f.Driver), group, blk, use)
	}
	tw.Flush()
	pools, err := h.HugePools()
	if err != nil {
		fmt.Fprintf(stdout, "hugepages: %v\n", err)
		return exitOK
	}
	tw = tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "HUGEPAGES\tNODE\tTOTAL\tFREE\tRESERVED")
	for _, p := range pools {
		node := "all"
		if p.Node >= 0 {
			node = strconv.Itoa(p.Node)
		}
		fmt.Fprintf(tw, "%d kB\t%s\t%d\t%d\t%d MiB\n", p.SizeKB, node, p.Total, p.Free, p.Bytes()>>20)
	}
	tw.Flush()
	return exitOK
}
