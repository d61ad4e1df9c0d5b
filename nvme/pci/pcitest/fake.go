// Package pcitest builds fake sysfs/procfs trees with a fake kernel behind
// them, so that PCI discovery, driver binding and hugepage reservation can be
// tested without hardware, an IOMMU or root.
package pcitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bpfblk/bpfblk/nvme/pci"
)

// Fake is a fake system rooted at a temporary directory.
type Fake struct {
	t    testing.TB
	Root string
	// MaxHugePages caps how many pages a pool accepts (fragmented memory);
	// 0 means no cap.
	MaxHugePages int
	// Writes records every attribute written, as "path=value" relative to
	// Root, in order.
	Writes []string
	mu     sync.Mutex
	disks  int
}

// New creates an empty fake system with the nvme and vfio-pci drivers
// registered, IOMMU groups present and /dev/vfio/vfio.
func New(t testing.TB) *Fake {
	f := &Fake{t: t, Root: t.TempDir()}
	for _, d := range []string{"/sys/bus/pci/devices", "/sys/bus/pci/drivers/nvme", "/sys/bus/pci/drivers/vfio-pci",
		"/sys/kernel/iommu_groups", "/sys/block", "/proc/self", "/dev/vfio"} {
		f.mkdir(d)
	}
	f.file("/sys/bus/pci/drivers_probe", "")
	f.file("/dev/vfio/vfio", "")
	f.file("/proc/self/mountinfo", "")
	f.file("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
	return f
}

func (f *Fake) p(rel string) string { return filepath.Join(f.Root, rel) }

func (f *Fake) mkdir(rel string) {
	if err := os.MkdirAll(f.p(rel), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *Fake) file(rel, content string) {
	f.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(f.p(rel), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *Fake) symlink(rel, target string) {
	f.mkdir(filepath.Dir(rel))
	os.Remove(f.p(rel))
	if err := os.Symlink(f.p(target), f.p(rel)); err != nil {
		f.t.Fatal(err)
	}
}

// NoIOMMU removes the IOMMU groups, vfio-pci and /dev/vfio, as on a host
// without an IOMMU.
func (f *Fake) NoIOMMU() {
	for _, d := range []string{"/sys/kernel/iommu_groups", "/sys/bus/pci/drivers/vfio-pci", "/dev/vfio"} {
		os.RemoveAll(f.p(d))
	}
}

// AddFunction adds a PCI function. class is the 24-bit class code; driver
// may be ""; group < 0 means no IOMMU group.
func (f *Fake) AddFunction(addr string, vendor, device uint16, class uint32, driver string, group, node int) pci.Addr {
	a, err := pci.ParseAddr(addr)
	if err != nil {
		f.t.Fatal(err)
	}
	d := "/sys/bus/pci/devices/" + a.String()
	f.file(d+"/vendor", fmt.Sprintf("0x%04x\n", vendor))
	f.file(d+"/device", fmt.Sprintf("0x%04x\n", device))
	f.file(d+"/class", fmt.Sprintf("0x%06x\n", class))
	f.file(d+"/driver_override", "(null)\n")
	f.file(d+"/numa_node", strconv.Itoa(node)+"\n")
	if driver != "" {
		f.symlink(d+"/driver", "/sys/bus/pci/drivers/"+driver)
	}
	if group >= 0 {
		g := "/sys/kernel/iommu_groups/" + strconv.Itoa(group)
		f.mkdir(g + "/devices")
		f.symlink(g+"/devices/"+a.String(), d)
		f.symlink(d+"/iommu_group", g)
	}
	return a
}

// AddNamespace gives NVMe function a (bound to nvme) a block device
// nvme<ctrl>n<nsid> with the given partitions, and returns the disk name.
func (f *Fake) AddNamespace(a pci.Addr, ctrl, nsid, partitions int) string {
	f.mu.Lock()
	f.disks++
	minor := f.disks * 16
	f.mu.Unlock()
	disk := fmt.Sprintf("nvme%dn%d", ctrl, nsid)
	f.mkdir("/sys/bus/pci/devices/" + a.String() + fmt.Sprintf("/nvme/nvme%d/%s", ctrl, disk))
	f.file("/sys/block/"+disk+"/dev", fmt.Sprintf("259:%d\n", minor))
	f.mkdir("/sys/block/" + disk + "/holders")
	for p := 1; p <= partitions; p++ {
		pd := fmt.Sprintf("/sys/block/%s/%sp%d", disk, disk, p)
		f.file(pd+"/dev", fmt.Sprintf("259:%d\n", minor+p))
		f.mkdir(pd + "/holders")
	}
	return disk
}

// Mount records that block device dev (a disk or partition name) is mounted
// on point.
func (f *Fake) Mount(dev, point string) {
	var devNum []byte
	for _, c := range []string{"/sys/block/" + dev + "/dev", "/sys/block/" + strings.SplitN(dev, "p", 2)[0] + "/" + dev + "/dev"} {
		if b, err := os.ReadFile(f.p(c)); err == nil {
			devNum = b
			break
		}
	}
	if devNum == nil {
		f.t.Fatalf("pcitest: no block device %s", dev)
	}
	mi, _ := os.ReadFile(f.p("/proc/self/mountinfo"))
	line := fmt.Sprintf("%d 1 %s / %s rw,relatime shared:1 - ext4 /dev/%s rw\n", 30+strings.Count(string(mi), "\n"),
		strings.TrimSpace(string(devNum)), point, dev)
	f.file("/proc/self/mountinfo", string(mi)+line)
}

// Hold records that holder (e.g. "dm-0") holds block device disk.
func (f *Fake) Hold(disk, holder string) { f.mkdir("/sys/block/" + disk + "/holders/" + holder) }

// Swap records that partition or disk dev is an active swap area.
func (f *Fake) Swap(dev string) {
	b, _ := os.ReadFile(f.p("/proc/swaps"))
	f.file("/proc/swaps", string(b)+"/dev/"+dev+"\tpartition\t1048572\t0\t-2\n")
}

// HugePages creates hugepage pools of sizeKB with total pages each on the
// given NUMA nodes (none: a kernel without NUMA).
func (f *Fake) HugePages(sizeKB, total int, nodes ...int) {
	g := fmt.Sprintf("/sys/kernel/mm/hugepages/hugepages-%dkB", sizeKB)
	f.file(g+"/nr_hugepages", strconv.Itoa(total*max(1, len(nodes)))+"\n")
	f.file(g+"/free_hugepages", strconv.Itoa(total*max(1, len(nodes)))+"\n")
	for _, n := range nodes {
		d := fmt.Sprintf("/sys/devices/system/node/node%d/hugepages/hugepages-%dkB", n, sizeKB)
		f.file(d+"/nr_hugepages", strconv.Itoa(total)+"\n")
		f.file(d+"/free_hugepages", strconv.Itoa(total)+"\n")
	}
}

// Host returns a pci.Host on the fake tree whose writes go to the fake kernel.
func (f *Fake) Host() *pci.Host { return &pci.Host{Root: f.Root, Write: f.write} }

// Driver returns the driver bound to a in the fake tree ("" if none).
func (f *Fake) Driver(a pci.Addr) string {
	t, err := os.Readlink(f.p("/sys/bus/pci/devices/" + a.String() + "/driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// write is the fake kernel: it gives sysfs attribute writes their effect.
func (f *Fake) write(path string, data []byte) error {
	rel, err := filepath.Rel(f.Root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("pcitest: write outside the fake root: %s", path)
	}
	rel = "/" + rel
	val := strings.TrimSpace(string(data))
	f.mu.Lock()
	f.Writes = append(f.Writes, rel+"="+val)
	f.mu.Unlock()
	dev := func(bdf string) string { return "/sys/bus/pci/devices/" + bdf }
	switch {
	case strings.HasSuffix(rel, "/driver_override"):
		if val == "" {
			val = "(null)"
		}
		f.file(rel, val+"\n")
	case strings.HasSuffix(rel, "/driver/unbind"):
		bdf := filepath.Base(filepath.Dir(filepath.Dir(rel)))
		if bdf != val {
			return fmt.Errorf("pcitest: unbind %s through %s: %w", val, rel, os.ErrInvalid)
		}
		if err := os.Remove(f.p(dev(bdf) + "/driver")); err != nil {
			return fmt.Errorf("pcitest: unbind %s: not bound: %w", val, os.ErrNotExist)
		}
		os.RemoveAll(f.p(dev(bdf) + "/nvme"))
	case rel == "/sys/bus/pci/drivers_probe":
		if _, err := os.Lstat(f.p(dev(val) + "/driver")); err == nil {
			return nil // already bound: probe does nothing
		}
		ov, _ := os.ReadFile(f.p(dev(val) + "/driver_override"))
		drv := strings.TrimSpace(string(ov))
		if drv == "(null)" || drv == "" {
			cl, _ := os.ReadFile(f.p(dev(val) + "/class"))
			if strings.TrimSpace(string(cl)) != fmt.Sprintf("0x%06x", pci.ClassNVMe) {
				return nil
			}
			drv = "nvme"
		}
		if _, err := os.Stat(f.p("/sys/bus/pci/drivers/" + drv)); err != nil {
			return nil // no such driver: the function stays unbound
		}
		f.symlink(dev(val)+"/driver", "/sys/bus/pci/drivers/"+drv)
	case strings.HasSuffix(rel, "/nr_hugepages"):
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return fmt.Errorf("pcitest: %s: %w", rel, os.ErrInvalid)
		}
		if f.MaxHugePages > 0 && n > f.MaxHugePages {
			n = f.MaxHugePages
		}
		f.file(rel, strconv.Itoa(n)+"\n")
		f.file(filepath.Dir(rel)+"/free_hugepages", strconv.Itoa(n)+"\n")
		if strings.HasPrefix(rel, "/sys/devices/system/node/") {
			// The system-wide pool is the sum of the node pools.
			size := filepath.Base(filepath.Dir(rel))
			nodes, _ := filepath.Glob(f.p("/sys/devices/system/node/node*/hugepages/" + size + "/nr_hugepages"))
			sum := 0
			for _, p := range nodes {
				b, _ := os.ReadFile(p)
				v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				sum += v
			}
			g := "/sys/kernel/mm/hugepages/" + size
			f.file(g+"/nr_hugepages", strconv.Itoa(sum)+"\n")
			f.file(g+"/free_hugepages", strconv.Itoa(sum)+"\n")
		}
	default:
		return fmt.Errorf("pcitest: fake kernel has no writable attribute %s: %w", rel, os.ErrPermission)
	}
	return nil
}
