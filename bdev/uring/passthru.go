//go:build linux

package uring

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	iu "github.com/bpfblk/bpfblk/internal/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// NVMe passthrough ioctl numbers (include/uapi/linux/nvme_ioctl.h): the
// cmd_op of an IORING_OP_URING_CMD, and the synchronous admin ioctl.
const (
	nvmeURingCmdIO    = 0xC0484E80 // _IOWR('N', 0x80, struct nvme_uring_cmd)
	nvmeURingCmdAdmin = 0xC0484E82 // _IOWR('N', 0x82, struct nvme_uring_cmd)
	nvmeIoctlID       = 0x4E40     // _IO('N', 0x40): the namespace's NSID
	nvmeIoctlAdminCmd = 0xC0484E41 // _IOWR('N', 0x41, struct nvme_passthru_cmd)
)

// DefaultPassthruTimeout bounds a passthrough command that sets no
// timeout of its own.
const DefaultPassthruTimeout = 30 * time.Second

// Passthru sends NVMe commands to a namespace that the kernel's nvme
// driver owns, through io_uring's NVMe passthrough (IORING_OP_URING_CMD):
// I/O commands on the namespace's generic character device (/dev/ngXnY),
// admin commands on its controller's (/dev/nvmeX). Commands the block
// layer has no name for — NVM Copy, the Computational Programs and
// Subsystem Local Memory commands — reach the device this way without
// unbinding it. A Passthru is for one goroutine at a time; its commands
// wait for their completion (they are control-path commands, not the data
// path).
type Passthru struct {
	// Path is the namespace's generic device; Controller the controller's
	// character device, or "" when none was found.
	Path, Controller string
	// NSID is the namespace's ID.
	NSID uint32
	// AdminVia says how admin commands travel: "io_uring" or, on kernels
	// without admin passthrough on io_uring, "ioctl".
	AdminVia string

	ns, ctrl int
	ring     *iu.Ring
}

// OpenPassthru opens the generic character device of an NVMe namespace,
// such as /dev/ng0n1.
func OpenPassthru(path string) (*Passthru, error) {
	p := &Passthru{Path: path, ns: -1, ctrl: -1, AdminVia: "io_uring"}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "nvme passthrough %s: open", path)
	}
	p.ns = fd
	id, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nvmeIoctlID, 0)
	if errno != 0 {
		p.Close()
		return nil, errors.Wrapf(errno, "nvme passthrough %s: NVME_IOCTL_ID (not an NVMe namespace?)", path)
	}
	p.NSID = uint32(id)
	// /sys/class/nvme-generic/ngXnY/device is the controller (nvmeX).
	if link, err := os.Readlink(filepath.Join("/sys/class/nvme-generic", filepath.Base(path), "device")); err == nil {
		if c := filepath.Base(link); strings.HasPrefix(c, "nvme") {
			p.Controller = "/dev/" + c
			if fd, err := unix.Open(p.Controller, unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
				p.ctrl = fd
			}
		}
	}
	r, err := iu.New(iu.Options{Entries: 4, Big: true})
	if err != nil {
		p.Close()
		return nil, errors.Wrapf(err, "nvme passthrough %s", path)
	}
	p.ring = r
	return p, nil
}

// Close releases the devices and the ring.
func (p *Passthru) Close() error {
	var first error
	if p.ring != nil {
		first = p.ring.Close()
		p.ring = nil
	}
	for _, fd := range []*int{&p.ns, &p.ctrl} {
		if *fd >= 0 {
			if err := unix.Close(*fd); err != nil && first == nil {
				first = err
			}
			*fd = -1
		}
	}
	return errors.Wrapf(first, "nvme passthrough %s: close", p.Path)
}

// IO sends an I/O command of the namespace's command set (NVM, CP or
// SLM). cmd.NSID 0 means the namespace's own; data, if not nil, is the
// command's data buffer (in or out, as its opcode says). It returns the
// completion's DW0 | DW1<<32, or the NVMe status as an nvme.StatusError.
func (p *Passthru) IO(cmd *nvme.SQE, data []byte, timeout time.Duration) (uint64, error) {
	return p.uringCmd(p.ns, nvmeURingCmdIO, p.nsid(cmd), cmd, data, timeout, "I/O")
}

// Admin sends an admin command to the namespace's controller.
func (p *Passthru) Admin(cmd *nvme.SQE, data []byte, timeout time.Duration) (uint64, error) {
	if p.ctrl >= 0 && p.AdminVia == "io_uring" {
		res, err := p.uringCmd(p.ctrl, nvmeURingCmdAdmin, cmd.NSID, cmd, data, timeout, "admin")
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
			return res, err
		}
	}
	// No controller device, or a kernel without admin commands on
	// io_uring (before 6.0): the synchronous ioctl on the namespace.
	p.AdminVia = "ioctl"
	return p.adminIoctl(cmd, data, timeout)
}

// IdentifyController sends Identify (CNS 1) and decodes the answer.
func (p *Passthru) IdentifyController() (*nvme.IdentifyController, error) {
	buf := make([]byte, nvme.IdentifyDataSize)
	if _, err := p.Admin(&nvme.SQE{OPC: nvme.AdminIdentify, CDW10: nvme.CNSController}, buf, 0); err != nil {
		return nil, errors.Wrap(err, "identify controller")
	}
	return nvme.ParseIdentifyController(buf)
}

// IdentifyNamespace sends Identify (CNS 0) for the namespace.
func (p *Passthru) IdentifyNamespace() (*nvme.IdentifyNamespace, error) {
	buf := make([]byte, nvme.IdentifyDataSize)
	if _, err := p.Admin(&nvme.SQE{OPC: nvme.AdminIdentify, NSID: p.NSID, CDW10: nvme.CNSNamespace}, buf, 0); err != nil {
		return nil, errors.Wrap(err, "identify namespace")
	}
	return nvme.ParseIdentifyNamespace(buf)
}

// Copy sends NVM Copy (descriptor format 0): the source ranges to
// consecutive blocks from dst.
func (p *Passthru) Copy(dst uint64, src []nvme.Range) error {
	if len(src) == 0 || len(src) > 128 {
		return errors.Errorf("nvme passthrough %s: copy of %d ranges (want 1-128)", p.Path, len(src))
	}
	desc := make([]byte, len(src)*nvme.CopyRangeSize)
	for i, r := range src {
		if r.Blocks == 0 || r.Blocks > 65536 {
			return errors.Errorf("nvme passthrough %s: copy source range of %d blocks (want 1-65536)", p.Path, r.Blocks)
		}
		b := desc[i*nvme.CopyRangeSize:]
		binary.LittleEndian.PutUint64(b[8:], r.LBA)
		binary.LittleEndian.PutUint16(b[16:], uint16(r.Blocks-1))
	}
	_, err := p.IO(&nvme.SQE{OPC: nvme.OpCopy, CDW10: uint32(dst), CDW11: uint32(dst >> 32), CDW12: uint32(len(src) - 1)}, desc, 0)
	return errors.Wrap(err, "copy")
}

// uringCmd sends one command through IORING_OP_URING_CMD on fd and waits
// for its completion.
func (p *Passthru) uringCmd(fd int, op, nsid uint32, cmd *nvme.SQE, data []byte, timeout time.Duration, what string) (uint64, error) {
	if p.ring == nil {
		return 0, errors.Errorf("nvme passthrough %s: closed", p.Path)
	}
	if timeout <= 0 {
		timeout = DefaultPassthruTimeout
	}
	sqe := p.ring.GetSQE()
	if sqe == nil {
		return 0, errors.Errorf("nvme passthrough %s: ring full", p.Path)
	}
	sqe.Opcode, sqe.Fd, sqe.UserData = iu.OpUringCmd, int32(fd), 1
	sqe.Off = uint64(op) // cmd_op, with the pad above it zero
	c := iu.Cmd(sqe)
	putUringCmd(c, nsid, cmd, data, timeout)
	if _, err := p.ring.SubmitAndWait(); err != nil {
		return 0, errors.Wrapf(err, "nvme passthrough %s: %s command %#x", p.Path, what, cmd.OPC)
	}
	var cqe *iu.CQE
	for cqe = p.ring.Peek(); cqe == nil; cqe = p.ring.Peek() {
		if _, err := p.ring.SubmitAndWait(); err != nil {
			return 0, errors.Wrapf(err, "nvme passthrough %s: wait", p.Path)
		}
	}
	res, result := cqe.Res, iu.BigCQE(cqe)[0]
	p.ring.Advance()
	runtime.KeepAlive(data)
	switch {
	case res < 0:
		return 0, errors.Wrapf(iu.Errno(res), "nvme passthrough %s: %s command %#x", p.Path, what, cmd.OPC)
	case res > 0:
		// The NVMe status field, without the phase tag.
		return result, errors.Wrapf(nvme.StatusFromField(uint16(res)<<1), "nvme passthrough %s: %s command %#x", p.Path, what, cmd.OPC)
	}
	return result, nil
}

func (p *Passthru) nsid(cmd *nvme.SQE) uint32 {
	if cmd.NSID != 0 {
		return cmd.NSID
	}
	return p.NSID
}

// putUringCmd writes struct nvme_uring_cmd (72 bytes), which is also the
// layout of struct nvme_passthru_cmd but for its last word (result there,
// reserved here).
func putUringCmd(c *[80]byte, nsid uint32, cmd *nvme.SQE, data []byte, timeout time.Duration) {
	le := binary.LittleEndian
	*c = [80]byte{}
	c[0], c[1] = cmd.OPC, cmd.Flags
	le.PutUint32(c[4:], nsid)
	le.PutUint32(c[8:], cmd.CDW2)
	le.PutUint32(c[12:], cmd.CDW3)
	if len(data) > 0 {
		le.PutUint64(c[24:], uint64(uintptr(unsafe.Pointer(&data[0]))))
		le.PutUint32(c[36:], uint32(len(data)))
	}
	for i, v := range []uint32{cmd.CDW10, cmd.CDW11, cmd.CDW12, cmd.CDW13, cmd.CDW14, cmd.CDW15} {
		le.PutUint32(c[40+4*i:], v)
	}
	le.PutUint32(c[64:], uint32(timeout.Milliseconds()))
}

// adminIoctl sends an admin command with NVME_IOCTL_ADMIN_CMD on the
// namespace's device.
func (p *Passthru) adminIoctl(cmd *nvme.SQE, data []byte, timeout time.Duration) (uint64, error) {
	if timeout <= 0 {
		timeout = DefaultPassthruTimeout
	}
	var c [80]byte
	putUringCmd(&c, cmd.NSID, cmd, data, timeout)
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(p.ns), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&c[0])))
	runtime.KeepAlive(data)
	if errno != 0 {
		return 0, errors.Wrapf(errno, "nvme passthrough %s: admin command %#x (ioctl)", p.Path, cmd.OPC)
	}
	result := uint64(binary.LittleEndian.Uint32(c[68:]))
	if r != 0 {
		return result, errors.Wrapf(nvme.StatusFromField(uint16(r)<<1), "nvme passthrough %s: admin command %#x", p.Path, cmd.OPC)
	}
	return result, nil
}
