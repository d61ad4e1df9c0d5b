package pci

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pkg/errors"
)

// DriverVFIO is the kernel driver that hands a function to userspace.
const DriverVFIO = "vfio-pci"

var nsDisk = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)

// BlockDevices lists the kernel block devices (namespaces, e.g. "nvme0n1")
// that an NVMe function provides while it is bound to the nvme driver,
// including multipath heads that go through it.
func (h *Host) BlockDevices(a Addr) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if nsDisk.MatchString(n) && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	ctrls, _ := os.ReadDir(h.devDir(a) + "/nvme")
	for _, c := range ctrls {
		ents, _ := os.ReadDir(h.devDir(a) + "/nvme/" + c.Name())
		for _, e := range ents {
			add(e.Name())
		}
		// Native multipath: the disk hangs off the subsystem, which lists
		// the controllers it reaches the namespace through.
		subs, _ := os.ReadDir(h.Path("/sys/class/nvme-subsystem"))
		for _, s := range subs {
			sd := h.Path("/sys/class/nvme-subsystem/" + s.Name())
			if _, err := os.Lstat(sd + "/" + c.Name()); err != nil {
				continue
			}
			ents, _ := os.ReadDir(sd)
			for _, e := range ents {
				add(e.Name())
			}
		}
	}
	return out
}

type mountInfo struct{ dev, point string }

func (h *Host) mounts() []mountInfo {
	f, err := os.Open(h.Path("/proc/self/mountinfo"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 {
			out = append(out, mountInfo{dev: fs[2], point: fs[4]})
		}
	}
	return out
}

func (h *Host) swaps() map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile(h.Path("/proc/swaps"))
	if err != nil {
		return out
	}
	for i, l := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(l); i > 0 && len(fs) > 0 {
			out[filepath.Base(fs[0])] = true
		}
	}
	return out
}

// InUse explains why the kernel is using function a's block devices: each
// mounted filesystem, swap area and holder (device-mapper, md, ...) on a
// namespace or a partition. An empty result means the function can be taken.
func (h *Host) InUse(a Addr) []string {
	var why []string
	mounts := h.mounts()
	swaps := h.swaps()
	for _, disk := range h.BlockDevices(a) {
		dd := h.Path("/sys/block/" + disk)
		names := []string{disk}
		dirs := []string{dd}
		ents, _ := os.ReadDir(dd)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), disk+"p") {
				names = append(names, e.Name())
				dirs = append(dirs, dd+"/"+e.Name())
			}
		}
		for i, n := range names {
			dev, _ := readTrim(dirs[i] + "/dev")
			for _, m := range mounts {
				if dev != "" && m.dev == dev {
					why = append(why, n+" is mounted on "+m.point)
				}
			}
			if swaps[n] {
				why = append(why, n+" is an active swap area")
			}
			holders, _ := os.ReadDir(dirs[i] + "/holders")
			for _, ho := range holders {
				why = append(why, n+" is held by "+ho.Name())
			}
		}
	}
	return why
}

// ErrInUse is returned (wrapped) when a function's block devices are in use.
var ErrInUse = errors.New("device in use")

// Bind hands function a to driver (for example DriverVFIO) through
// driver_override: it unbinds the current driver, sets the override and asks
// the kernel to probe. It refuses a function whose block devices are mounted,
// used as swap or held by another device (the error wraps ErrInUse).
func (h *Host) Bind(a Addr, driver string) error {
	f, err := h.Function(a)
	if err != nil {
		return err
	}
	if f.Driver == driver {
		if f.DriverOverride != driver {
			return h.write(h.devDir(a)+"/driver_override", driver)
		}
		return nil
	}
	if why := h.InUse(a); len(why) > 0 {
		return errors.Wrapf(ErrInUse, "pci: %s not taken: %s", a, strings.Join(why, "; "))
	}
	if _, err := os.Stat(h.Path("/sys/bus/pci/drivers/" + driver)); err != nil {
		return errors.Errorf("pci: driver %s is not loaded (modprobe %s)", driver, driver)
	}
	if err := h.write(h.devDir(a)+"/driver_override", driver); err != nil {
		return err
	}
	if f.Driver != "" {
		if err := h.write(h.devDir(a)+"/driver/unbind", a.String()); err != nil {
			return err
		}
	}
	if err := h.write(h.Path("/sys/bus/pci/drivers_probe"), a.String()); err != nil {
		return err
	}
	if h.DryRun {
		return nil
	}
	return h.waitDriver(a, driver)
}

// Release gives function a back to the kernel: it clears driver_override,
// unbinds the current driver and lets the kernel probe its default driver
// (nvme for an NVMe controller). It returns the driver that took the function.
func (h *Host) Release(a Addr) (string, error) {
	f, err := h.Function(a)
	if err != nil {
		return "", err
	}
	if f.DriverOverride != "" {
		if err := h.write(h.devDir(a)+"/driver_override", "\n"); err != nil {
			return "", err
		}
	}
	if f.Driver != "" && f.Driver != DriverVFIO && f.DriverOverride == "" {
		return f.Driver, nil
	}
	if f.Driver != "" {
		if err := h.write(h.devDir(a)+"/driver/unbind", a.String()); err != nil {
			return "", err
		}
	}
	if err := h.write(h.Path("/sys/bus/pci/drivers_probe"), a.String()); err != nil {
		return "", err
	}
	f, err = h.Function(a)
	if err != nil {
		return "", err
	}
	return f.Driver, nil
}

func (h *Host) waitDriver(a Addr, driver string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := h.Function(a)
		if err != nil {
			return err
		}
		if f.Driver == driver {
			return nil
		}
		if time.Now().After(deadline) {
			got := f.Driver
			if got == "" {
				got = "no driver"
			}
			return errors.Errorf("pci: %s did not bind to %s (now: %s); see dmesg", a, driver, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
