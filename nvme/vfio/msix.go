package vfio

import (
	"time"
	"unsafe"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// IRQ is one MSI-X vector delivered to an eventfd, so that an idle reactor
// can sleep in poll/epoll instead of spinning on completion queues.
type IRQ struct {
	vector int
	fd     int
}

// Vector returns the MSI-X vector number (the IV of a completion queue).
func (q *IRQ) Vector() int { return q.vector }

// Fd returns the eventfd; it becomes readable when the vector fires.
func (q *IRQ) Fd() int { return q.fd }

// Wait blocks until the vector has fired or timeout passes and returns how
// many times it fired since the last Wait (0 on timeout).
func (q *IRQ) Wait(timeout time.Duration) (uint64, error) {
	if n, err := q.take(); n > 0 || err != nil {
		return n, err
	}
	ms := int(timeout / time.Millisecond)
	if timeout > 0 && ms == 0 {
		ms = 1
	}
	pfd := []unix.PollFd{{Fd: int32(q.fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, errors.Wrap(err, "vfio: poll interrupt eventfd")
		}
		return q.take()
	}
}

func (q *IRQ) take() (uint64, error) {
	var b [8]byte
	n, err := unix.Read(q.fd, b[:])
	if err == unix.EAGAIN {
		return 0, nil
	}
	if err != nil || n != 8 {
		return 0, errors.Wrap(err, "vfio: read interrupt eventfd")
	}
	return le64(b[:]), nil
}

// MSIXVectors returns how many MSI-X vectors the device has.
func (d *Device) MSIXVectors() (int, error) {
	ii := irqInfo{argsz: uint32(unsafe.Sizeof(irqInfo{})), index: irqIndexMSIX}
	if _, err := ioctlPtr(d.fd, ioctlDeviceIRQInfo, unsafe.Pointer(&ii)); err != nil {
		return 0, errors.Wrapf(err, "vfio: %s MSI-X info", d.addr)
	}
	return int(ii.count), nil
}

// EnableMSIX routes MSI-X vectors 0..n-1 to eventfds. Enable it before the
// driver enables the controller: some controllers (QEMU's among them) only
// bind a vector to a completion queue that is created while MSI-X is on.
func (d *Device) EnableMSIX(n int) ([]*IRQ, error) {
	max, err := d.MSIXVectors()
	if err != nil {
		return nil, err
	}
	if n <= 0 || n > max {
		return nil, errors.Errorf("vfio: %s has %d MSI-X vectors, asked for %d", d.addr, max, n)
	}
	if err := d.DisableMSIX(); err != nil {
		return nil, err
	}
	irqs := make([]*IRQ, 0, n)
	closeAll := func() {
		for _, q := range irqs {
			unix.Close(q.fd)
		}
	}
	buf := make([]byte, 20+4*n)
	put32(buf[0:], uint32(len(buf)))
	put32(buf[4:], irqSetDataEventfd|irqSetActionTrigger)
	put32(buf[8:], irqIndexMSIX)
	put32(buf[12:], 0)
	put32(buf[16:], uint32(n))
	for i := 0; i < n; i++ {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			closeAll()
			return nil, errors.Wrap(err, "vfio: eventfd")
		}
		irqs = append(irqs, &IRQ{vector: i, fd: fd})
		put32(buf[20+4*i:], uint32(fd))
	}
	if _, err := ioctlPtr(d.fd, ioctlDeviceSetIRQs, unsafe.Pointer(&buf[0])); err != nil {
		closeAll()
		return nil, errors.Wrapf(err, "vfio: %s VFIO_DEVICE_SET_IRQS (MSI-X, %d vectors)", d.addr, n)
	}
	d.mu.Lock()
	d.irqs = irqs
	d.mu.Unlock()
	return irqs, nil
}

// DisableMSIX turns MSI-X off and closes the eventfds.
func (d *Device) DisableMSIX() error {
	d.mu.Lock()
	irqs := d.irqs
	d.irqs = nil
	d.mu.Unlock()
	if irqs == nil {
		return nil
	}
	buf := make([]byte, 20)
	put32(buf[0:], 20)
	put32(buf[4:], irqSetDataNone|irqSetActionTrigger)
	put32(buf[8:], irqIndexMSIX)
	_, err := ioctlPtr(d.fd, ioctlDeviceSetIRQs, unsafe.Pointer(&buf[0]))
	for _, q := range irqs {
		unix.Close(q.fd)
	}
	return errors.Wrapf(err, "vfio: %s disable MSI-X", d.addr)
}
