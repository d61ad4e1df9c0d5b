package tcp

import (
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// handler receives the PDUs a conn decodes.
type handler interface {
	// pduHeader is called once the header of a PDU (and its digest) has
	// arrived. It returns where the PDU's dataLen bytes of data go (nil
	// when dataLen is 0) or an error with the FES to report.
	pduHeader(h pdu.Header, hdr []byte, dataLen int) ([]byte, uint16, error)
	// pduDone is called once the data (and its digest) has arrived too.
	pduDone(h pdu.Header, hdr []byte) (uint16, error)
}

const (
	stHeader = iota // reading the common header, then the rest of the header
	stData          // reading data into dst
	stDigest        // reading the data digest
)

// conn is one NVMe/TCP connection, polled by the goroutine that owns it:
// non-blocking reads and writes, a fixed receive staging buffer and a fixed
// transmit buffer, a PDU decoder that checks every header before it trusts
// a length. Nothing in it allocates once it is set up.
type conn struct {
	nc   *net.TCPConn
	rc   syscall.RawConn
	name string
	side pdu.Side
	lim  pdu.Limits
	init bool // ICReq/ICResp exchanged
	h    handler

	rx         []byte
	rxLo, rxHi int
	st         int
	hb         [256]byte // header, header digest and padding up to PDO
	hgot, hlen int
	hdr        pdu.Header
	dst        []byte
	dgot       int
	crc        uint32
	dg         [pdu.DigestLen]byte
	dggot      int
	rxTotal    uint64

	tx    []byte
	txOff int

	ioBuf   []byte
	ioN     int
	ioErr   error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool

	err    error // sticky: the connection failed
	closed bool

	// unwait takes the socket out of the wait set of the reactor that
	// owns the connection (set once, before the connection is shared);
	// nil: none. It runs before the socket closes, whose number may then
	// be reused.
	unwait func()

	traffic *queueTraffic // byte counters of the queue, or nil
	// aborted is why another goroutine closed the connection (abort); the
	// owner reports it instead of the socket error that follows.
	aborted atomic.Pointer[error]
}

func newConn(nc *net.TCPConn, name string, side pdu.Side, h handler, rxSize, txSize int) (*conn, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return nil, errors.Wrapf(err, "%s: raw connection", name)
	}
	nc.SetNoDelay(true)
	c := &conn{nc: nc, rc: rc, name: name, side: side, h: h, rx: make([]byte, rxSize), tx: make([]byte, 0, txSize)}
	c.readFn = func(fd uintptr) bool {
		c.ioN, c.ioErr = syscall.Read(int(fd), c.ioBuf)
		return true
	}
	c.writeFn = func(fd uintptr) bool {
		c.ioN, c.ioErr = syscall.Write(int(fd), c.ioBuf)
		return true
	}
	return c, nil
}

// fail records the first error of the connection, sends a termination
// request when the error is the peer's fault (fes != 0) and closes it.
func (c *conn) fail(err error, fes uint16) {
	if c.err != nil {
		return
	}
	if a := c.aborted.Load(); a != nil {
		err, fes = *a, 0
	}
	c.err = err
	if fes != 0 && c.init {
		typ := uint8(pdu.TypeH2CTermReq)
		if c.side == pdu.Controller {
			typ = pdu.TypeC2HTermReq
		}
		var b [pdu.TermLen + pdu.MaxTermData]byte
		n := pdu.PutTerm(b[:], typ, fes, 0, c.hb[:min(c.hgot, pdu.MaxTermData)])
		c.tx = c.tx[:0]
		c.txOff = 0
		c.tx = append(c.tx, b[:n]...)
		c.flush()
	}
	c.close()
}

// abort closes the connection from a goroutine that does not own it; the
// owner's next poll fails with err. Only the socket is touched here.
func (c *conn) abort(err error) {
	c.aborted.CompareAndSwap(nil, &err)
	c.closeSocket()
}

func (c *conn) close() {
	if !c.closed {
		c.closed = true
		c.closeSocket()
	}
}

// closeSocket closes the socket, first taking it out of its reactor's wait
// set. It may run on any goroutine, more than once.
func (c *conn) closeSocket() {
	if c.unwait != nil {
		c.unwait()
	}
	if c.nc != nil {
		c.nc.Close()
	}
}

// waitOn adds the socket to the wait set of reactor r, so that r, parked,
// wakes when data arrives (poller.Reactor.AddWaitFD). Best effort: without
// it r wakes at its park limit, as before.
func (c *conn) waitOn(r *poller.Reactor) {
	fd := -1
	if err := c.rc.Control(func(s uintptr) { fd = int(s) }); err != nil || fd < 0 {
		return
	}
	if remove, err := r.AddWaitFD(fd); err == nil {
		c.unwait = remove
	}
}

// room returns how many bytes can be queued for sending.
func (c *conn) room() int {
	if c.txOff > 0 && c.txOff == len(c.tx) {
		c.tx, c.txOff = c.tx[:0], 0
	}
	if c.txOff > 0 && cap(c.tx)-len(c.tx) < cap(c.tx)/4 {
		n := copy(c.tx[:cap(c.tx)], c.tx[c.txOff:])
		c.tx, c.txOff = c.tx[:n], 0
	}
	return cap(c.tx) - len(c.tx)
}

// put appends n bytes to the transmit buffer and returns them to be filled;
// the caller checked room.
func (c *conn) put(n int) []byte {
	l := len(c.tx)
	c.tx = c.tx[:l+n]
	return c.tx[l : l+n]
}

// flush writes as much of the transmit buffer as the socket takes.
func (c *conn) flush() {
	for c.txOff < len(c.tx) && !c.closed && c.rc != nil {
		c.ioBuf = c.tx[c.txOff:]
		if err := c.rc.Write(c.writeFn); err != nil {
			c.ioErr = err
		}
		c.ioBuf = nil
		if c.ioErr != nil {
			if c.ioErr == syscall.EAGAIN || c.ioErr == syscall.EINTR {
				return
			}
			if c.err == nil {
				c.err = errors.Wrapf(c.ioErr, "%s: send", c.name)
				if a := c.aborted.Load(); a != nil {
					c.err = *a
				}
			}
			c.close()
			return
		}
		c.txOff += c.ioN
		if c.traffic != nil {
			c.traffic.tx.Add(uint64(c.ioN))
		}
	}
	if c.txOff == len(c.tx) {
		c.tx, c.txOff = c.tx[:0], 0
	}
}

// pending reports whether queued bytes wait to be sent.
func (c *conn) pending() bool { return c.txOff < len(c.tx) }

// poll sends what is queued, reads what arrived and decodes it. It returns
// whether anything was received.
func (c *conn) poll() bool {
	if c.err != nil {
		return false
	}
	c.flush()
	if c.err != nil {
		return false
	}
	if c.rxLo == c.rxHi {
		c.rxLo, c.rxHi = 0, 0
	}
	if c.rxHi == len(c.rx) {
		n := copy(c.rx, c.rx[c.rxLo:c.rxHi])
		c.rxLo, c.rxHi = 0, n
	}
	c.ioBuf = c.rx[c.rxHi:]
	if err := c.rc.Read(c.readFn); err != nil {
		c.ioErr = err
	}
	c.ioBuf = nil
	switch {
	case c.ioErr == syscall.EAGAIN || c.ioErr == syscall.EINTR:
		return false
	case c.ioErr != nil:
		c.fail(errors.Wrapf(c.ioErr, "%s: receive after %d bytes (%s)", c.name, c.rxTotal, c.where()), 0)
		return false
	case c.ioN == 0:
		c.fail(errors.Errorf("%s: peer closed the connection after %d bytes (%s)", c.name, c.rxTotal, c.where()), 0)
		return false
	}
	c.rxHi += c.ioN
	c.rxTotal += uint64(c.ioN)
	if c.traffic != nil {
		c.traffic.rx.Add(uint64(c.ioN))
	}
	c.decode()
	return true
}

// where describes the decoder state for error messages.
func (c *conn) where() string {
	switch {
	case c.st == stHeader && c.hgot == 0:
		return "between PDUs"
	case c.st == stHeader:
		return "inside a PDU header of type " + pdu.TypeName(c.hb[0])
	default:
		return "inside the data of a " + pdu.TypeName(c.hdr.Type) + " PDU"
	}
}

func (c *conn) decode() {
	for c.rxLo < c.rxHi && c.err == nil {
		avail := c.rx[c.rxLo:c.rxHi]
		switch c.st {
		case stHeader:
			need := pdu.CommonLen
			if c.hgot >= pdu.CommonLen {
				need = c.hlen
			}
			n := copy(c.hb[c.hgot:need], avail)
			c.hgot += n
			c.rxLo += n
			if c.hgot < need {
				return
			}
			if need == pdu.CommonLen {
				h, _ := pdu.ParseHeader(c.hb[:])
				hl, dl, fes, err := pdu.Check(h, c.side, c.lim, c.init)
				if err != nil {
					c.fail(errors.Wrapf(err, "%s: after %d bytes", c.name, c.rxTotal-uint64(c.rxHi-c.rxLo)), fes)
					return
				}
				c.hdr, c.hlen, c.dgot = h, hl, dl // dgot holds the data length until the header is complete
				if hl > pdu.CommonLen {
					continue
				}
			}
			c.headerDone()
		case stData:
			n := copy(c.dst[c.dgot:], avail)
			if c.lim.DDGST && c.hdr.Type != pdu.TypeH2CTermReq && c.hdr.Type != pdu.TypeC2HTermReq {
				c.crc = pdu.UpdateCRC(c.crc, c.dst[c.dgot:c.dgot+n])
			}
			c.dgot += n
			c.rxLo += n
			if c.dgot < len(c.dst) {
				return
			}
			if c.hdr.Flags&pdu.FlagDDGST != 0 && c.hdr.Type != pdu.TypeH2CTermReq && c.hdr.Type != pdu.TypeC2HTermReq {
				c.st, c.dggot = stDigest, 0
				continue
			}
			c.pduDone()
		case stDigest:
			n := copy(c.dg[c.dggot:], avail)
			c.dggot += n
			c.rxLo += n
			if c.dggot < pdu.DigestLen {
				return
			}
			if got := uint32(c.dg[0]) | uint32(c.dg[1])<<8 | uint32(c.dg[2])<<16 | uint32(c.dg[3])<<24; got != c.crc {
				c.fail(errors.Wrapf(pdu.ErrDigest, "%s: %s data digest %#08x, computed %#08x", c.name, pdu.TypeName(c.hdr.Type), got, c.crc), 0)
				return
			}
			c.pduDone()
		}
	}
}

func (c *conn) headerDone() {
	h := c.hdr
	dataLen := c.dgot
	isTerm := h.Type == pdu.TypeH2CTermReq || h.Type == pdu.TypeC2HTermReq
	if h.Flags&pdu.FlagHDGST != 0 && c.lim.HDGST && !isTerm && c.init {
		if err := pdu.CheckHeaderDigest(c.hb[:c.hlen], int(h.HLen)); err != nil {
			c.fail(errors.Wrapf(err, "%s", c.name), pdu.FESHeaderDigest)
			return
		}
	}
	dst, fes, err := c.h.pduHeader(h, c.hb[:h.HLen], dataLen)
	if err != nil {
		c.fail(err, fes)
		return
	}
	if dataLen == 0 {
		c.pduDone()
		return
	}
	if len(dst) != dataLen {
		c.fail(errors.Errorf("%s: internal: %s data buffer of %d bytes for %d", c.name, pdu.TypeName(h.Type), len(dst), dataLen), 0)
		return
	}
	c.dst, c.dgot, c.crc, c.st = dst, 0, 0, stData
}

func (c *conn) pduDone() {
	h := c.hdr
	c.st, c.hgot, c.dst, c.dgot = stHeader, 0, nil, 0
	if fes, err := c.h.pduDone(h, c.hb[:h.HLen]); err != nil {
		c.fail(err, fes)
	}
}

// putData queues an H2CData or C2HData PDU of data (the whole of it must
// fit: the caller checked room against dataPDUSize).
func (c *conn) putData(typ, flags uint8, d pdu.Data, data []byte) {
	d.Length = uint32(len(data))
	hdr := pdu.DataLen
	if c.lim.HDGST {
		hdr += pdu.DigestLen
	}
	pdu.PutDataPDU(c.put(hdr), typ, flags, d, c.lim.HDGST, c.lim.DDGST)
	copy(c.put(len(data)), data)
	if c.lim.DDGST {
		le.PutUint32(c.put(pdu.DigestLen), pdu.CRC(data))
	}
}

// dataPDUSize is the bytes a data PDU of n bytes takes on the wire.
func (c *conn) dataPDUSize(n int) int {
	s := pdu.DataLen + n
	if c.lim.HDGST {
		s += pdu.DigestLen
	}
	if c.lim.DDGST {
		s += pdu.DigestLen
	}
	return s
}

// waitUntil polls the connection until done reports true, the connection
// fails or the deadline passes. It is for connection setup and the admin
// path, never for I/O.
func (c *conn) waitUntil(done func() bool, deadline time.Time, what string) error {
	for i := 0; ; i++ {
		if done() {
			return nil
		}
		if c.err != nil {
			return errors.Wrapf(c.err, "%s", what)
		}
		if !c.poll() {
			if done() {
				return nil
			}
			if time.Now().After(deadline) {
				return errors.Wrapf(nvme.ErrTimeout, "%s: %s: no answer", c.name, what)
			}
			if i < 64 {
				runtime.Gosched()
			} else {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
}
