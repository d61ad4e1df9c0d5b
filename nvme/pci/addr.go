// Package pci addresses PCI functions and manages them through sysfs for
// userspace NVMe drivers: parsing "pci:0000:01:00.0" device strings, finding
// NVMe functions (class 0x010802), their drivers, IOMMU groups and block
// devices, binding them to vfio-pci and back, and reserving hugepages.
//
// Every sysfs and procfs path is taken relative to a root (Host.Root), so the
// same code runs against the real system ("" or "/") and against a fake tree
// in tests.
package pci

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// Scheme is the prefix of PCI device strings in the CLI contract
// ("pci:0000:01:00.0"; the contract is cmd/bpfblk's package doc).
const Scheme = "pci:"

// ClassNVMe is the PCI class code of an NVM Express I/O controller
// (mass storage, non-volatile memory, NVMe).
const ClassNVMe = 0x010802

// Addr is a PCI function address: domain, bus, device and function.
type Addr struct {
	Domain   uint32 // 16 bits on most systems, wider behind VMD
	Bus      uint8
	Device   uint8 // 0..31
	Function uint8 // 0..7
}

// String formats a as sysfs names it: "0000:01:00.0".
func (a Addr) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", a.Domain, a.Bus, a.Device, a.Function)
}

// DevString formats a as a device string of the CLI contract: "pci:0000:01:00.0".
func (a Addr) DevString() string { return Scheme + a.String() }

// ParseAddr parses a PCI function address. It accepts "pci:0000:01:00.0",
// "0000:01:00.0" and the short form "01:00.0" (domain 0). Hex digits may be
// upper or lower case.
func ParseAddr(s string) (Addr, error) {
	in := s
	s = strings.TrimPrefix(s, Scheme)
	bad := func(why string) (Addr, error) {
		return Addr{}, errors.Errorf("pci: bad address %q: %s (want [pci:]DDDD:BB:DD.F, e.g. pci:0000:01:00.0)", in, why)
	}
	if s == "" {
		return bad("empty")
	}
	dot := strings.LastIndexByte(s, '.')
	if dot < 0 {
		return bad("missing '.function'")
	}
	fn, err := strconv.ParseUint(s[dot+1:], 16, 8)
	if err != nil || len(s[dot+1:]) != 1 || fn > 7 {
		return bad("function must be one digit 0-7")
	}
	parts := strings.Split(s[:dot], ":")
	var dom uint64
	switch len(parts) {
	case 2:
	case 3:
		if len(parts[0]) < 1 || len(parts[0]) > 8 {
			return bad("domain must be 1-8 hex digits")
		}
		dom, err = strconv.ParseUint(parts[0], 16, 32)
		if err != nil {
			return bad("domain is not hex")
		}
		parts = parts[1:]
	default:
		return bad("want domain:bus:device.function")
	}
	if len(parts[0]) != 2 {
		return bad("bus must be 2 hex digits")
	}
	bus, err := strconv.ParseUint(parts[0], 16, 8)
	if err != nil {
		return bad("bus is not hex")
	}
	if len(parts[1]) != 2 {
		return bad("device must be 2 hex digits")
	}
	dev, err := strconv.ParseUint(parts[1], 16, 8)
	if err != nil || dev > 31 {
		return bad("device must be 00-1f")
	}
	return Addr{Domain: uint32(dom), Bus: uint8(bus), Device: uint8(dev), Function: uint8(fn)}, nil
}

// IsDevString reports whether a device string of the CLI contract names a PCI
// function ("pci:..."), as opposed to "mock" or "file:...".
func IsDevString(s string) bool { return strings.HasPrefix(s, Scheme) }
