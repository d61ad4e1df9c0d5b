package pci

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// Host is the system seen through sysfs and procfs under Root.
type Host struct {
	// Root is prepended to every /sys, /proc and /dev path; "" means "/".
	Root string
	// Write writes a sysfs attribute. Nil means os.WriteFile. Tests install a
	// fake kernel here; a dry run installs a printer.
	Write func(path string, data []byte) error
	// DryRun skips the checks that read back the effect of a write (a
	// printing Write changes nothing).
	DryRun bool
}

// Path returns p (an absolute system path such as "/sys/bus/pci") under Root.
func (h *Host) Path(p string) string {
	if h.Root == "" || h.Root == "/" {
		return p
	}
	return filepath.Join(h.Root, p)
}

func (h *Host) write(p string, data string) error {
	w := h.Write
	if w == nil {
		w = func(p string, b []byte) error { return os.WriteFile(p, b, 0o200) }
	}
	return errors.Wrapf(w(p, []byte(data)), "pci: write %q to %s", strings.TrimSpace(data), p)
}

func (h *Host) devDir(a Addr) string { return h.Path("/sys/bus/pci/devices/" + a.String()) }

// Function describes one PCI function as sysfs shows it.
type Function struct {
	Addr   Addr
	Vendor uint16
	Device uint16
	Class  uint32 // 24-bit class code, e.g. ClassNVMe
	// Driver is the bound driver ("nvme", "vfio-pci"), "" if none.
	Driver string
	// DriverOverride is the driver_override attribute, "" if unset.
	DriverOverride string
	// IOMMUGroup is the IOMMU group number, -1 without an IOMMU.
	IOMMUGroup int
	// NUMANode is the function's NUMA node, -1 if unknown.
	NUMANode int
}

// IsNVMe reports whether f is an NVMe I/O controller.
func (f *Function) IsNVMe() bool { return f.Class == ClassNVMe }

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func readHex(p string, bits int) (uint64, error) {
	s, err := readTrim(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, bits)
	return v, errors.Wrapf(err, "pci: %s holds %q", p, s)
}

func linkBase(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// Function reads the sysfs description of the function at a.
func (h *Host) Function(a Addr) (*Function, error) {
	d := h.devDir(a)
	if _, err := os.Stat(d); err != nil {
		return nil, errors.Wrapf(err, "pci: no PCI function %s", a)
	}
	f := &Function{Addr: a, IOMMUGroup: -1, NUMANode: -1}
	v, err := readHex(d+"/vendor", 16)
	if err != nil {
		return nil, errors.Wrapf(err, "pci: %s vendor", a)
	}
	f.Vendor = uint16(v)
	if v, err = readHex(d+"/device", 16); err != nil {
		return nil, errors.Wrapf(err, "pci: %s device", a)
	}
	f.Device = uint16(v)
	if v, err = readHex(d+"/class", 24); err != nil {
		return nil, errors.Wrapf(err, "pci: %s class", a)
	}
	f.Class = uint32(v)
	f.Driver = linkBase(d + "/driver")
	if s, err := readTrim(d + "/driver_override"); err == nil && s != "(null)" {
		f.DriverOverride = s
	}
	if g := linkBase(d + "/iommu_group"); g != "" {
		if n, err := strconv.Atoi(g); err == nil {
			f.IOMMUGroup = n
		}
	}
	if s, err := readTrim(d + "/numa_node"); err == nil {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			f.NUMANode = n
		}
	}
	return f, nil
}

// Functions lists every PCI function, sorted by address.
func (h *Host) Functions() ([]*Function, error) {
	ents, err := os.ReadDir(h.Path("/sys/bus/pci/devices"))
	if err != nil {
		return nil, errors.Wrap(err, "pci: list functions")
	}
	return h.functionsIn(ents)
}

// functionsIn reads the functions named by directory entries (PCI
// addresses; other names are skipped), sorted by address.
func (h *Host) functionsIn(ents []os.DirEntry) ([]*Function, error) {
	var out []*Function
	for _, e := range ents {
		a, err := ParseAddr(e.Name())
		if err != nil {
			continue
		}
		f, err := h.Function(a)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.less(out[j].Addr) })
	return out, nil
}

func (a Addr) less(b Addr) bool {
	if a.Domain != b.Domain {
		return a.Domain < b.Domain
	}
	if a.Bus != b.Bus {
		return a.Bus < b.Bus
	}
	if a.Device != b.Device {
		return a.Device < b.Device
	}
	return a.Function < b.Function
}

// NVMeFunctions lists the NVMe I/O controllers (class 0x010802), sorted by
// address.
func (h *Host) NVMeFunctions() ([]*Function, error) {
	all, err := h.Functions()
	if err != nil {
		return nil, err
	}
	var out []*Function
	for _, f := range all {
		if f.IsNVMe() {
			out = append(out, f)
		}
	}
	return out, nil
}

// GroupMembers lists the functions in IOMMU group g, sorted by address.
func (h *Host) GroupMembers(g int) ([]*Function, error) {
	dir := h.Path("/sys/kernel/iommu_groups/" + strconv.Itoa(g) + "/devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, errors.Wrapf(err, "pci: IOMMU group %d", g)
	}
	return h.functionsIn(ents)
}

// IOMMUGroups returns the number of IOMMU groups; 0 means the kernel runs
// without an IOMMU (none present, disabled in firmware or on the command line).
func (h *Host) IOMMUGroups() int {
	ents, err := os.ReadDir(h.Path("/sys/kernel/iommu_groups"))
	if err != nil {
		return 0
	}
	return len(ents)
}

// VFIOStatus describes what the kernel offers for VFIO.
type VFIOStatus struct {
	IOMMUGroups int  // number of IOMMU groups (0: no IOMMU)
	Driver      bool // the vfio-pci driver is registered
	Container   bool // /dev/vfio/vfio exists
	NoIOMMU     bool // vfio's unsafe no-IOMMU mode is enabled
}

// VFIO reports the kernel's VFIO and IOMMU state.
func (h *Host) VFIO() VFIOStatus {
	var s VFIOStatus
	s.IOMMUGroups = h.IOMMUGroups()
	if _, err := os.Stat(h.Path("/sys/bus/pci/drivers/vfio-pci")); err == nil {
		s.Driver = true
	}
	if _, err := os.Stat(h.Path("/dev/vfio/vfio")); err == nil {
		s.Container = true
	}
	if v, err := readTrim(h.Path("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")); err == nil && (v == "Y" || v == "1") {
		s.NoIOMMU = true
	}
	return s
}

// Problem returns a plain explanation of why VFIO cannot be used, or "" if
// it can.
func (s VFIOStatus) Problem() string {
	switch {
	case s.IOMMUGroups == 0 && !s.NoIOMMU:
		return "no IOMMU: /sys/kernel/iommu_groups is empty. Enable VT-d or AMD-Vi in the firmware and boot with intel_iommu=on (or amd_iommu=on); VFIO needs an IOMMU"
	case !s.Driver:
		return "the vfio-pci driver is not loaded: run 'modprobe vfio-pci'"
	case !s.Container:
		return "/dev/vfio/vfio is missing: the vfio module is not loaded"
	}
	return ""
}
