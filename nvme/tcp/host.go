package tcp

import (
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Options tune a host's connections to a controller. The zero value is usable.
type Options struct {
	// HostNQN names the host (default: a UUID-based NQN made from a random
	// host identifier).
	HostNQN string
	// HeaderDigest and DataDigest ask for CRC32C digests; the controller
	// may decline them.
	HeaderDigest, DataDigest bool
	// Timeout bounds connection setup, Fabrics Connect and every property
	// access (default 5 s).
	Timeout time.Duration
	// KeepAlive is the Keep Alive Timeout (KATO) the admin queue connects
	// with: the host sends a Keep Alive command every KeepAlive/2, and a
	// controller that leaves one unanswered for KeepAlive is declared dead —
	// every connection is closed and outstanding commands complete with
	// Transient Transport Error. The controller, in turn, tears down the
	// association of a host it hears nothing from for KeepAlive. 0 means
	// 5 s (the Linux host's default); a negative value connects with KATO 0
	// and sends no Keep Alive.
	KeepAlive time.Duration
}

// DefaultKeepAlive is the Keep Alive Timeout a host connects with unless
// Options.KeepAlive says otherwise, as the Linux NVMe/TCP host does.
const DefaultKeepAlive = 5 * time.Second

const (
	maxQID        = 1024
	adminSlots    = 64
	adminInCap    = 8192 // in-capsule data every controller takes on the admin queue
	hostRxBuf     = 256 << 10
	hostTxBuf     = 256 << 10
	maxDataChunk  = 64 << 10 // largest H2CData PDU the host sends
	hostMaxR2T    = 4        // R2Ts a command may have outstanding (ICReq MAXR2T+1)
	maxRegionSize = 1 << 32  // largest DMA allocation: IOVAs are region<<32|offset
)

// Transport is the host side of NVMe/TCP: an nvme.FabricsTransport that
// reaches one controller of a remote subsystem. Register reads and writes
// become Property Get/Set on the admin queue; Create I/O SQ opens a TCP
// connection and sends Fabrics Connect; SQ doorbells send command capsules;
// Poll reads responses, data and R2Ts and writes completions into the CQ.
type Transport struct {
	name, addr, subnqn, hostnqn string
	hostid                      [16]byte
	opts                        Options
	cntlid                      uint16

	amu    sync.Mutex // the admin queue and the fields below
	admin  *hqueue
	cqs    map[uint16]cqRing
	aqa    uint32
	asq    uint64
	acq    uint64
	cc     uint32
	ioccsz uint32 // from Identify Controller, in 16-byte units
	dead   bool   // the admin connection failed

	queues [maxQID + 1]atomic.Pointer[hqueue]
	ioFail atomic.Bool // an I/O connection failed since the last reset

	memMu sync.Mutex
	mem   atomic.Pointer[[]*nvme.DMA]

	errMu   sync.Mutex
	lastErr error

	traffic [maxQID + 1]queueTraffic // by queue ID (host_traffic.go)
	// Keep-alive, under amu: Keep Alive commands outstanding, when the
	// last was sent and when the last answer came.
	kaOut   int
	kaSent  time.Time
	kaAlive time.Time
	kaStop  chan struct{}
	kaDone  chan struct{}
}

type cqRing struct {
	mem   []byte
	depth int
}

// Dial connects to the subsystem subnqn at addr (HOST:PORT): it opens the
// admin queue (ICReq, Fabrics Connect with the dynamic controller ID) and
// returns a transport for nvme.NewController.
func Dial(addr, subnqn string, opts Options) (*Transport, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.KeepAlive > 0 {
		// KATO travels in milliseconds, at least 1.
		opts.KeepAlive = max(opts.KeepAlive.Round(time.Millisecond), time.Millisecond)
	}
	t := &Transport{name: "tcp://" + addr + "/" + subnqn, addr: addr, subnqn: subnqn, opts: opts, cqs: map[uint16]cqRing{}}
	if _, err := rand.Read(t.hostid[:]); err != nil {
		return nil, errors.Wrap(err, "nvme/tcp: host identifier")
	}
	t.hostnqn = opts.HostNQN
	if t.hostnqn == "" {
		h := t.hostid
		t.hostnqn = fmt.Sprintf("nqn.2014-08.org.nvmexpress:uuid:%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
	}
	empty := []*nvme.DMA{}
	t.mem.Store(&empty)
	q, err := t.connect(0, 32, 0xffff)
	if err != nil {
		return nil, err
	}
	t.admin = q
	t.queues[0].Store(q)
	if opts.KeepAlive > 0 {
		t.kaStop, t.kaDone = make(chan struct{}), make(chan struct{})
		t.kaSent = time.Now()
		t.kaAlive = t.kaSent
		go t.keepAlive(opts.KeepAlive)
	}
	return t, nil
}

// Name returns "tcp://ADDR/NQN".
func (t *Transport) Name() string { return t.name }

// HostNQN returns the NQN the host connected with.
func (t *Transport) HostNQN() string { return t.hostnqn }

// ControllerID returns the controller ID the subsystem assigned.
func (t *Transport) ControllerID() uint16 { return t.cntlid }

// Err returns the first connection error since Dial (what arrived and where),
// or nil.
func (t *Transport) Err() error {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.lastErr
}

func (t *Transport) setErr(err error) {
	t.errMu.Lock()
	if t.lastErr == nil {
		t.lastErr = err
	}
	t.errMu.Unlock()
}

// AllocDMA returns size bytes of zeroed host memory; its IOVA names the
// allocation (high 32 bits) and the offset, so that the transport finds the
// bytes an SGL points to. It is called at setup time, never per I/O.
func (t *Transport) AllocDMA(size int) (*nvme.DMA, error) {
	if size <= 0 || size > maxRegionSize {
		return nil, errors.Errorf("%s: allocation of %d bytes: must be 1..%d", t.name, size, maxRegionSize)
	}
	t.memMu.Lock()
	defer t.memMu.Unlock()
	old := *t.mem.Load()
	idx := -1
	for i, d := range old {
		if d == nil {
			idx = i
			break
		}
	}
	next := append([]*nvme.DMA(nil), old...)
	if idx < 0 {
		idx = len(next)
		next = append(next, nil)
	}
	d := &nvme.DMA{Buf: make([]byte, size), IOVA: uint64(idx+1) << 32}
	next[idx] = d
	t.mem.Store(&next)
	return d, nil
}

// FreeDMA releases memory from AllocDMA.
func (t *Transport) FreeDMA(d *nvme.DMA) error {
	if d == nil {
		return nil
	}
	t.memMu.Lock()
	defer t.memMu.Unlock()
	old := *t.mem.Load()
	idx := int(d.IOVA>>32) - 1
	if idx < 0 || idx >= len(old) || old[idx] != d {
		return errors.Errorf("%s: free of unknown memory at IOVA %#x", t.name, d.IOVA)
	}
	next := append([]*nvme.DMA(nil), old...)
	next[idx] = nil
	t.mem.Store(&next)
	return nil
}

// resolve returns the n bytes of host memory at iova.
func (t *Transport) resolve(iova uint64, n int) ([]byte, bool) {
	m := *t.mem.Load()
	idx := int(iova>>32) - 1
	off := iova & (maxRegionSize - 1)
	if idx < 0 || idx >= len(m) || m[idx] == nil || n < 0 || off+uint64(n) > uint64(len(m[idx].Buf)) {
		return nil, false
	}
	return m[idx].Buf[off : off+uint64(n)], true
}

// Read32 reads a controller property: CC, CSTS and VS by Property Get, the
// admin queue registers from the host's copy. An unreachable controller
// reads as all ones; a failed I/O connection shows as CSTS.CFS, which makes
// the driver reset the controller and reconnect.
func (t *Transport) Read32(off uint32) uint32 {
	t.amu.Lock()
	defer t.amu.Unlock()
	switch off {
	case nvme.RegAQA:
		return t.aqa
	case nvme.RegVS, nvme.RegCC, nvme.RegCSTS:
	default:
		return 0
	}
	v, err := t.propertyGet(off, false)
	if err != nil {
		return 0xffffffff
	}
	if off == nvme.RegCSTS && t.ioFail.Load() {
		v |= nvme.CSTSFatal
	}
	return uint32(v)
}

// Read64 reads CAP by Property Get, ASQ and ACQ from the host's copy.
func (t *Transport) Read64(off uint32) uint64 {
	t.amu.Lock()
	defer t.amu.Unlock()
	switch off {
	case nvme.RegASQ:
		return t.asq
	case nvme.RegACQ:
		return t.acq
	case nvme.RegCAP:
		v, err := t.propertyGet(off, true)
		if err != nil {
			return ^uint64(0)
		}
		return v
	}
	return 0
}

// Write64 keeps the admin queue addresses; other 64-bit registers do not
// exist over fabrics.
func (t *Transport) Write64(off uint32, v uint64) {
	t.amu.Lock()
	defer t.amu.Unlock()
	switch off {
	case nvme.RegASQ:
		t.asq = v
	case nvme.RegACQ:
		t.acq = v
	}
}

// Write32 rings doorbells (an SQ tail sends the new commands at once),
// keeps AQA and sends CC by Property Set. Clearing CC.EN resets the
// controller: the I/O connections are closed, as the controller drops them.
func (t *Transport) Write32(off uint32, v uint32) {
	if off >= nvme.RegDoorbell {
		idx := (off - nvme.RegDoorbell) / 4
		qid := idx / 2
		if idx&1 != 0 || qid > maxQID {
			return // CQ head doorbells: completions are written as they arrive
		}
		if qid == 0 {
			t.amu.Lock()
			if q := t.admin; q != nil && int(v) < q.depth {
				q.sqTail = uint16(v)
				q.run()
			}
			t.amu.Unlock()
			return
		}
		if q := t.queues[qid].Load(); q != nil && int(v) < q.depth {
			q.sqTail = uint16(v)
			q.run()
		}
		return
	}
	t.amu.Lock()
	defer t.amu.Unlock()
	switch off {
	case nvme.RegAQA:
		t.aqa = v
	case nvme.RegCC:
		was := t.cc
		if v&nvme.CCEnable != 0 && was&nvme.CCEnable == 0 {
			t.setupAdminRings()
		}
		if err := t.propertySet(off, uint64(v), false); err != nil {
			return
		}
		t.cc = v
		if was&nvme.CCEnable != 0 && v&nvme.CCEnable == 0 {
			t.dropIOQueues()
		}
	}
}

// setupAdminRings points the admin queue at the rings the driver programmed.
func (t *Transport) setupAdminRings() {
	q := t.admin
	if q == nil {
		return
	}
	depth := int(t.aqa&0xfff) + 1
	sq, ok1 := t.resolve(t.asq, depth*nvme.SQESize)
	cq, ok2 := t.resolve(t.acq, depth*nvme.CQESize)
	if !ok1 || !ok2 {
		q.sq, q.cq, q.depth = nil, nil, 0
		return
	}
	q.sq, q.cq, q.depth = sq, cq, depth
	q.sqHead, q.sqTail, q.cqTail, q.phase = 0, 0, 0, 1
	for i := range q.cmds {
		if c := &q.cmds[i]; c.busy && !c.internal {
			c.orphan = true // a command from before the reset: drop its answer
		}
	}
}

// dropIOQueues closes every I/O connection after a controller reset.
// net.Conn.Close is safe while the owner polls; the owner finds its queue
// gone and the driver recreates it.
func (t *Transport) dropIOQueues() {
	for i := 1; i <= maxQID; i++ {
		if q := t.queues[i].Swap(nil); q != nil {
			q.c.closeSocket()
		}
	}
	t.cqs = map[uint16]cqRing{}
	t.ioFail.Store(false)
}

// Poll sends what queue qid has pending and moves arrived completions into
// its CQ.
func (t *Transport) Poll(qid uint16) {
	if qid == 0 {
		t.amu.Lock()
		if t.admin != nil {
			t.admin.pollAll()
		}
		t.amu.Unlock()
		return
	}
	if qid <= maxQID {
		if q := t.queues[qid].Load(); q != nil {
			q.pollAll()
		}
	}
}

// Close stops the keep-alive timer and closes every connection.
func (t *Transport) Close() error {
	if t.kaStop != nil {
		select {
		case <-t.kaStop:
		default:
			close(t.kaStop)
		}
		<-t.kaDone
	}
	t.amu.Lock()
	defer t.amu.Unlock()
	for i := 0; i <= maxQID; i++ {
		if q := t.queues[i].Swap(nil); q != nil {
			q.c.close()
		}
	}
	t.admin = nil
	t.dead = true
	return nil
}

func (t *Transport) propertyGet(off uint32, eight bool) (uint64, error) {
	if t.dead || t.admin == nil {
		return 0, errors.Errorf("%s: admin connection is down", t.name)
	}
	var s [64]byte
	s[0] = opFabrics
	s[4] = fctPropertyGet
	if eight {
		s[40] = 1
	}
	le.PutUint32(s[44:], off)
	cqe, err := t.admin.internal(&s, nil, false)
	if err != nil {
		t.adminFailed(err)
		return 0, err
	}
	if st := le.Uint16(cqe[14:]) >> 1; st != 0 {
		return 0, errors.Wrapf(nvme.StatusFromField(st<<1), "%s: property get %#x", t.name, off)
	}
	return le.Uint64(cqe[0:]), nil
}

func (t *Transport) propertySet(off uint32, v uint64, eight bool) error {
	if t.dead || t.admin == nil {
		return errors.Errorf("%s: admin connection is down", t.name)
	}
	var s [64]byte
	s[0] = opFabrics
	s[4] = fctPropertySet
	if eight {
		s[40] = 1
	}
	le.PutUint32(s[44:], off)
	le.PutUint64(s[48:], v)
	cqe, err := t.admin.internal(&s, nil, false)
	if err != nil {
		t.adminFailed(err)
		return err
	}
	if st := le.Uint16(cqe[14:]) >> 1; st != 0 {
		return errors.Wrapf(nvme.StatusFromField(st<<1), "%s: property set %#x", t.name, off)
	}
	return nil
}

func (t *Transport) adminFailed(err error) {
	t.setErr(err)
	t.dead = true
	if t.admin != nil {
		t.admin.c.close()
	}
}

// connect opens a connection for queue qid with depth entries and sends
// Fabrics Connect.
func (t *Transport) connect(qid uint16, depth int, cntlid uint16) (*hqueue, error) {
	deadline := time.Now().Add(t.opts.Timeout)
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial("tcp", t.addr)
	if err != nil {
		return nil, errors.Wrapf(err, "nvme/tcp: connect queue %d to %s", qid, t.addr)
	}
	q := &hqueue{t: t, qid: qid, depth: depth, phase: 1}
	slots := depth + 1
	if qid == 0 {
		slots = adminSlots
		q.inCap = adminInCap
		q.freeCIDs = make([]uint16, 0, adminSlots)
		for i := adminSlots - 1; i >= 0; i-- {
			q.freeCIDs = append(q.freeCIDs, uint16(i))
		}
	} else if t.ioccsz >= 4 {
		q.inCap = int(t.ioccsz)*16 - 64
	}
	q.cmds = make([]hcmd, slots)
	q.r2tq = make([]uint16, slots*hostMaxR2T)
	name := fmt.Sprintf("%s queue %d", t.name, qid)
	c, err := newConn(nc.(*net.TCPConn), name, pdu.Host, q, hostRxBuf, hostTxBuf)
	if err != nil {
		nc.Close()
		return nil, err
	}
	q.c = c
	c.traffic = &t.traffic[qid]
	var b [pdu.ICLen]byte
	pdu.PutICReq(b[:], pdu.ICReq{HDGST: t.opts.HeaderDigest, DDGST: t.opts.DataDigest, MaxR2T: hostMaxR2T - 1})
	copy(c.put(pdu.ICLen), b[:])
	if err := c.waitUntil(func() bool { return c.init }, deadline, "ICReq"); err != nil {
		c.close()
		return nil, err
	}
	var data [connectDataSize]byte
	copy(data[0:16], t.hostid[:])
	le.PutUint16(data[16:], cntlid)
	putNQN(data[256:512], t.subnqn)
	putNQN(data[512:768], t.hostnqn)
	var s [64]byte
	s[0] = opFabrics
	s[4] = fctConnect
	le.PutUint16(s[42:], qid)
	le.PutUint16(s[44:], uint16(depth-1))
	if qid == 0 && t.opts.KeepAlive > 0 {
		le.PutUint32(s[48:], uint32(t.opts.KeepAlive/time.Millisecond)) // KATO
	}
	cqe, err := q.internal(&s, data[:], true)
	if err != nil {
		c.close()
		return nil, errors.Wrapf(err, "%s: Fabrics Connect", name)
	}
	if st := le.Uint16(cqe[14:]); st>>1 != 0 {
		c.close()
		return nil, errors.Wrapf(nvme.StatusFromField(st), "%s: Fabrics Connect refused (DW0 %#x)", name, le.Uint32(cqe[0:]))
	}
	if qid == 0 {
		t.cntlid = uint16(le.Uint32(cqe[0:]))
	} else if r := poller.Current(); r != nil {
		// An I/O queue is created on the goroutine that will poll it
		// (bdev makes an owner's queue pair there): on a reactor, a
		// response wakes it from a park.
		c.waitOn(r)
	}
	return q, nil
}

// hcmd is one command slot of a host queue, indexed by the CID on the wire.
type hcmd struct {
	busy, internal, write, orphan, identify, done bool
	keepAlive                                     bool   // the transport's Keep Alive
	dcid                                          uint16 // the driver's CID
	data                                          []byte
	recv                                          uint32 // C2H bytes received
	sent                                          uint32 // in-capsule bytes, or H2C bytes sent for the first R2T
	r2tHi                                         uint32 // end of the data the R2Ts so far asked for
	r2ts                                          [hostMaxR2T]r2t
	r2tFirst, r2tN                                uint8    // ring of the outstanding R2Ts, oldest first
	cqe                                           [16]byte // internal commands: the response
}

// r2t is one outstanding Ready to Transfer of a command.
type r2t struct {
	ttag     uint16
	off, end uint32
}

// hqueue is one host queue: an SQ and a CQ in host memory (the driver's
// rings) and the connection that carries them.
type hqueue struct {
	t      *Transport
	qid    uint16
	depth  int
	c      *conn
	sq, cq []byte
	sqHead uint16
	sqTail uint16
	cqTail uint16
	phase  uint16
	inCap  int
	maxH2C uint32 // the controller's MAXH2CDATA

	cmds     []hcmd
	freeCIDs []uint16 // admin queue: free wire CIDs
	r2tq     []uint16 // ring of CIDs, one per R2T received, in arrival order
	r2tHead  int
	r2tN     int
	failed   bool
	term     [pdu.MaxTermData]byte
}

// pollAll is one poll of the queue: send, receive, send what the received
// R2Ts ask for.
func (q *hqueue) pollAll() {
	q.run()
	q.c.poll()
	q.run()
}

// run issues new SQ entries and queued H2C data, then flushes.
func (q *hqueue) run() {
	if q.c.err != nil {
		q.fail()
		return
	}
	q.sendData()
	for q.sqHead != q.sqTail && q.sq != nil {
		if q.c.room() < pdu.CapsuleCmdLen+2*pdu.DigestLen+q.inCap {
			break
		}
		e := q.sq[int(q.sqHead)*nvme.SQESize:][:nvme.SQESize]
		q.sqHead++
		if int(q.sqHead) == q.depth {
			q.sqHead = 0
		}
		q.issue(e)
	}
	q.c.flush()
	if q.c.err != nil {
		q.fail()
	}
}

// localComplete writes a completion the transport makes up itself.
func (q *hqueue) localComplete(dcid uint16, dw0 uint32, status uint16) {
	if q.cq == nil {
		return
	}
	off := int(q.cqTail) * nvme.CQESize
	b := q.cq[off : off+nvme.CQESize]
	le.PutUint32(b[0:], dw0)
	le.PutUint32(b[4:], 0)
	le.PutUint16(b[8:], q.sqHead)
	le.PutUint16(b[10:], q.qid)
	atomic.StoreUint32((*uint32)(unsafePointer(b[12:])), uint32(dcid)|uint32(status|q.phase)<<16)
	q.cqTail++
	if int(q.cqTail) == q.depth {
		q.cqTail = 0
		q.phase ^= 1
	}
}

// issue turns one SQE of the driver into a command capsule.
func (q *hqueue) issue(e []byte) {
	opc, dcid := e[0], le.Uint16(e[2:])
	if q.qid == 0 {
		switch opc {
		case adminCreateCQ, adminCreateSQ, adminDeleteSQ, adminDeleteCQ:
			q.localComplete(dcid, 0, q.t.queueCommand(e))
			return
		}
	}
	if q.failed {
		q.localComplete(dcid, 0, statusField(0, scTransientTransp))
		return
	}
	var wcid uint16
	if q.qid == 0 {
		if len(q.freeCIDs) == 0 {
			q.localComplete(dcid, 0, statusField(0, scCIDConflict))
			return
		}
		wcid = q.freeCIDs[len(q.freeCIDs)-1]
		q.freeCIDs = q.freeCIDs[:len(q.freeCIDs)-1]
	} else {
		if int(dcid) >= q.depth || q.cmds[dcid].busy {
			q.localComplete(dcid, 0, statusField(0, scCIDConflict))
			return
		}
		wcid = dcid
	}
	cmd := &q.cmds[wcid]
	*cmd = hcmd{busy: true, dcid: dcid}
	dir := opc & 3
	n := 0
	if dir != 0 && e[1]>>6 == 1 && e[sglTypeOffset] == sglDataBlock {
		n = int(le.Uint32(e[32:]))
		if n > 0 {
			data, ok := q.t.resolve(le.Uint64(e[24:]), n)
			if !ok || dir == 3 {
				q.release(wcid)
				q.localComplete(dcid, 0, statusField(0, scDataXferError))
				return
			}
			cmd.data = data
			cmd.write = dir == 1
		}
	} else if dir != 0 && e[1]>>6 == 0 && le.Uint64(e[24:]) != 0 {
		// PRPs cannot cross a fabric.
		q.release(wcid)
		q.localComplete(dcid, 0, statusField(0, scInvalidField))
		return
	}
	cmd.identify = q.qid == 0 && opc == adminIdentify && e[40] == 1 && n >= 4096
	q.capsule(wcid, e, cmd.data, cmd.write)
}

// capsule queues a CapsuleCmd for sqe with the wire CID wcid.
func (q *hqueue) capsule(wcid uint16, e []byte, data []byte, write bool) {
	var s [64]byte
	copy(s[:], e)
	le.PutUint16(s[2:], wcid)
	clear(s[24:40])
	n := len(data)
	inData := 0
	if n > 0 {
		s[1] = s[1]&0x3f | nvme.PSDTSGL
		le.PutUint32(s[32:], uint32(n))
		if write && n <= q.inCap {
			s[sglTypeOffset] = sglInCapsule
			inData = n
		} else {
			s[sglTypeOffset] = sglTransport
		}
	} else {
		s[1] = s[1]&0x3f | nvme.PSDTSGL
		s[sglTypeOffset] = sglTransport
	}
	hdr := pdu.CapsuleCmdLen
	if q.c.lim.HDGST {
		hdr += pdu.DigestLen
	}
	pdu.PutCapsuleCmd(q.c.put(hdr), s[:], inData, q.c.lim.HDGST, q.c.lim.DDGST)
	if inData > 0 {
		copy(q.c.put(inData), data)
		if q.c.lim.DDGST {
			le.PutUint32(q.c.put(pdu.DigestLen), pdu.CRC(data))
		}
		q.cmds[wcid].sent = uint32(n)
		q.cmds[wcid].r2tHi = uint32(n) // no R2T may ask for any of it
	}
}

// internal sends a command of the transport's own (Fabrics Connect,
// Property Get/Set) and waits for its response.
func (q *hqueue) internal(s *[64]byte, data []byte, write bool) ([16]byte, error) {
	var wcid uint16
	if q.qid == 0 {
		if len(q.freeCIDs) == 0 {
			return [16]byte{}, errors.Errorf("%s: no free admin command identifier", q.c.name)
		}
		wcid = q.freeCIDs[len(q.freeCIDs)-1]
		q.freeCIDs = q.freeCIDs[:len(q.freeCIDs)-1]
	} else {
		wcid = uint16(q.depth) // above every CID the driver uses
	}
	cmd := &q.cmds[wcid]
	*cmd = hcmd{busy: true, internal: true, data: data, write: write}
	need := pdu.CapsuleCmdLen + 2*pdu.DigestLen + len(data)
	if err := q.c.waitUntil(func() bool { return q.c.room() >= need }, time.Now().Add(q.t.opts.Timeout), "send"); err != nil {
		return [16]byte{}, err
	}
	q.capsule(wcid, s[:], data, write)
	err := q.c.waitUntil(func() bool {
		q.sendData()
		q.c.flush()
		return cmd.done
	}, time.Now().Add(q.t.opts.Timeout), fmt.Sprintf("fabrics command %#x", s[4]))
	if err != nil {
		cmd.internal = false
		cmd.orphan = true // the answer, if it ever comes, is dropped
		return [16]byte{}, err
	}
	return cmd.cqe, nil
}

func (q *hqueue) release(wcid uint16) {
	q.cmds[wcid].busy = false
	q.cmds[wcid].data = nil
	if q.qid == 0 {
		q.freeCIDs = append(q.freeCIDs, wcid)
	}
}

// fail completes every outstanding command with a transport error once the
// connection broke; later commands fail at once.
func (q *hqueue) fail() {
	if q.failed {
		return
	}
	q.failed = true
	q.t.setErr(q.c.err)
	if q.qid != 0 {
		if q.t.queues[q.qid].Load() == q {
			// Not a connection a reset already dropped: make the driver
			// see CSTS.CFS, reset the controller and reconnect.
			q.t.ioFail.Store(true)
		}
	} else {
		q.t.dead = true
	}
	for i := range q.cmds {
		c := &q.cmds[i]
		if !c.busy {
			continue
		}
		if !c.internal && !c.orphan {
			q.localComplete(c.dcid, 0, statusField(0, scTransientTransp))
		}
		c.busy = c.internal // an internal waiter sees the connection error
	}
	q.r2tN = 0
	for q.sqHead != q.sqTail && q.sq != nil {
		e := q.sq[int(q.sqHead)*nvme.SQESize:]
		q.sqHead++
		if int(q.sqHead) == q.depth {
			q.sqHead = 0
		}
		q.localComplete(le.Uint16(e[2:]), 0, statusField(0, scTransientTransp))
	}
}

// sendData sends H2CData PDUs for the R2Ts received, in the order they
// arrived, as room allows: each command's R2Ts are served oldest first,
// in chunks no larger than the controller's MAXH2CDATA.
func (q *hqueue) sendData() {
	for q.r2tN > 0 {
		wcid := q.r2tq[q.r2tHead]
		cmd := &q.cmds[wcid]
		if !cmd.busy || cmd.r2tN == 0 {
			q.r2tHead = (q.r2tHead + 1) % len(q.r2tq)
			q.r2tN--
			continue
		}
		r := &cmd.r2ts[cmd.r2tFirst]
		pos := r.off + cmd.sent
		chunk := min(int(r.end-pos), maxDataChunk, int(q.maxH2C))
		if q.c.room() < q.c.dataPDUSize(chunk) {
			q.c.flush()
			if q.c.room() < q.c.dataPDUSize(chunk) {
				return
			}
		}
		flags := uint8(0)
		if pos+uint32(chunk) == r.end {
			flags = pdu.FlagLast
		}
		q.c.putData(pdu.TypeH2CData, flags, pdu.Data{CCCID: wcid, TTag: r.ttag, Offset: pos}, cmd.data[pos:int(pos)+chunk])
		cmd.sent += uint32(chunk)
		if flags != 0 {
			cmd.sent = 0
			cmd.r2tFirst = (cmd.r2tFirst + 1) % hostMaxR2T
			cmd.r2tN--
			q.r2tHead = (q.r2tHead + 1) % len(q.r2tq)
			q.r2tN--
		}
	}
}

func (q *hqueue) lookup(wcid uint16, what string) (*hcmd, error) {
	if int(wcid) >= len(q.cmds) || !q.cmds[wcid].busy {
		return nil, errors.Errorf("%s: %s for command %d, which is not outstanding", q.c.name, what, wcid)
	}
	return &q.cmds[wcid], nil
}

// pduHeader implements handler.
func (q *hqueue) pduHeader(h pdu.Header, hdr []byte, dataLen int) ([]byte, uint16, error) {
	switch h.Type {
	case pdu.TypeC2HData:
		d, _ := pdu.ParseData(hdr)
		cmd, err := q.lookup(d.CCCID, "C2HData")
		if err != nil {
			return nil, pdu.FESInvalidHeader, err
		}
		if cmd.write || cmd.data == nil {
			return nil, pdu.FESInvalidHeader, errors.Errorf("%s: C2HData for command %d, which reads no data", q.c.name, d.CCCID)
		}
		if int(d.Length) != dataLen || d.Offset != cmd.recv || uint64(d.Offset)+uint64(d.Length) > uint64(len(cmd.data)) {
			return nil, pdu.FESOutOfRange, errors.Errorf("%s: C2HData for command %d at offset %d, %d bytes (PDU carries %d): expected offset %d within %d bytes",
				q.c.name, d.CCCID, d.Offset, d.Length, dataLen, cmd.recv, len(cmd.data))
		}
		return cmd.data[d.Offset : d.Offset+d.Length], 0, nil
	case pdu.TypeC2HTermReq:
		return q.term[:dataLen], 0, nil
	}
	return nil, 0, nil
}

// pduDone implements handler.
func (q *hqueue) pduDone(h pdu.Header, hdr []byte) (uint16, error) {
	switch h.Type {
	case pdu.TypeICResp:
		r, err := pdu.ParseICResp(hdr)
		if err != nil {
			return 0, errors.Wrapf(err, "%s", q.c.name)
		}
		if (r.HDGST && !q.t.opts.HeaderDigest) || (r.DDGST && !q.t.opts.DataDigest) {
			return 0, errors.Errorf("%s: ICResp enables digests the host did not ask for", q.c.name)
		}
		if r.MaxH2CData < 4096 {
			return 0, errors.Errorf("%s: ICResp MAXH2CDATA %d, under the 4096 the specification requires", q.c.name, r.MaxH2CData)
		}
		// MAXH2CDATA bounds what the host sends; what it receives is
		// bounded by each command's buffer (pduHeader).
		q.maxH2C = r.MaxH2CData
		q.c.lim = pdu.Limits{HDGST: r.HDGST, DDGST: r.DDGST, Align: (r.CPDA + 1) * 4}
		q.c.init = true
	case pdu.TypeCapsuleResp:
		b := hdr[pdu.CommonLen:]
		wcid := le.Uint16(b[12:])
		cmd, err := q.lookup(wcid, "CapsuleResp")
		if err != nil {
			return pdu.FESInvalidHeader, err
		}
		q.finish(wcid, cmd, le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint16(b[14:]))
	case pdu.TypeC2HData:
		d, _ := pdu.ParseData(hdr)
		cmd := &q.cmds[d.CCCID]
		cmd.recv += d.Length
		if h.Flags&pdu.FlagSuccess != 0 {
			if h.Flags&pdu.FlagLast == 0 || int(cmd.recv) != len(cmd.data) {
				return pdu.FESInvalidHeader, errors.Errorf("%s: C2HData for command %d with SUCCESS before its last byte (%d of %d)", q.c.name, d.CCCID, cmd.recv, len(cmd.data))
			}
			q.finish(d.CCCID, cmd, 0, 0, 0)
		}
	case pdu.TypeR2T:
		d, _ := pdu.ParseData(hdr)
		cmd, err := q.lookup(d.CCCID, "R2T")
		if err != nil {
			return pdu.FESInvalidHeader, err
		}
		// R2Ts ask for the data in order, without gaps or overlaps; up to
		// hostMaxR2T of them (ICReq MAXR2T) may be outstanding.
		switch {
		case !cmd.write:
			return pdu.FESInvalidHeader, errors.Errorf("%s: R2T for command %d, which writes no data", q.c.name, d.CCCID)
		case int(cmd.r2tN) == hostMaxR2T || q.r2tN == len(q.r2tq):
			return pdu.FESLimitExceeded, errors.Errorf("%s: R2T for command %d (offset %d, %d bytes) while %d are outstanding, over the MAXR2T of %d",
				q.c.name, d.CCCID, d.Offset, d.Length, cmd.r2tN, hostMaxR2T)
		case d.Length == 0 || d.Offset != cmd.r2tHi || uint64(d.Offset)+uint64(d.Length) > uint64(len(cmd.data)):
			return pdu.FESOutOfRange, errors.Errorf("%s: R2T for command %d: offset %d, %d bytes; expected offset %d within %d bytes", q.c.name, d.CCCID, d.Offset, d.Length, cmd.r2tHi, len(cmd.data))
		}
		cmd.r2ts[(int(cmd.r2tFirst)+int(cmd.r2tN))%hostMaxR2T] = r2t{ttag: d.TTag, off: d.Offset, end: d.Offset + d.Length}
		cmd.r2tN++
		cmd.r2tHi = d.Offset + d.Length
		q.r2tq[(q.r2tHead+q.r2tN)%len(q.r2tq)] = d.CCCID
		q.r2tN++
	case pdu.TypeC2HTermReq:
		tr, _ := pdu.ParseTerm(hdr)
		return 0, errors.Errorf("%s: controller terminated the connection: %s (FES %#x, FEI %d)", q.c.name, pdu.FESName(tr.FES), tr.FES, tr.FEI)
	}
	return 0, nil
}

// finish completes a command: internal ones wake their waiter, the driver's
// get a CQE in their CQ.
func (q *hqueue) finish(wcid uint16, cmd *hcmd, dw0, dw1 uint32, status uint16) {
	if cmd.keepAlive {
		q.t.kaOut--
		q.t.kaAlive = time.Now()
		q.release(wcid)
		return
	}
	if cmd.internal {
		putCQE(cmd.cqe[:], dw0, dw1, 0, q.qid, wcid, status)
		cmd.done = true
		q.release(wcid)
		cmd.busy = false
		return
	}
	if cmd.identify && status>>1 == 0 && len(cmd.data) >= 1796 {
		q.t.ioccsz = le.Uint32(cmd.data[1792:])
	}
	orphan, dcid := cmd.orphan, cmd.dcid
	q.release(wcid)
	if orphan || q.cq == nil {
		return
	}
	off := int(q.cqTail) * nvme.CQESize
	b := q.cq[off : off+nvme.CQESize]
	le.PutUint32(b[0:], dw0)
	le.PutUint32(b[4:], dw1)
	le.PutUint16(b[8:], q.sqHead)
	le.PutUint16(b[10:], q.qid)
	atomic.StoreUint32((*uint32)(unsafePointer(b[12:])), uint32(dcid)|uint32(status&^1|q.phase)<<16)
	q.cqTail++
	if int(q.cqTail) == q.depth {
		q.cqTail = 0
		q.phase ^= 1
	}
}

// queueCommand carries out Create/Delete I/O CQ/SQ on the admin queue:
// queues over fabrics are connections. It runs under amu.
func (t *Transport) queueCommand(e []byte) uint16 {
	qid := uint16(le.Uint32(e[40:]))
	size := int(le.Uint32(e[40:])>>16) + 1
	switch e[0] {
	case adminCreateCQ:
		if qid == 0 || qid > maxQID {
			return statusField(sctCommandSpecific, scInvalidQueueID)
		}
		mem, ok := t.resolve(le.Uint64(e[24:]), size*nvme.CQESize)
		if !ok {
			return statusField(0, scDataXferError)
		}
		t.cqs[qid] = cqRing{mem: mem, depth: size}
	case adminDeleteCQ:
		delete(t.cqs, qid)
	case adminCreateSQ:
		cqid := uint16(le.Uint32(e[44:]) >> 16)
		cq, ok := t.cqs[cqid]
		if qid == 0 || qid > maxQID || !ok || cqid != qid || t.queues[qid].Load() != nil {
			return statusField(sctCommandSpecific, scInvalidQueueID)
		}
		if cq.depth != size {
			return statusField(sctCommandSpecific, scInvalidQueueSize)
		}
		sq, ok := t.resolve(le.Uint64(e[24:]), size*nvme.SQESize)
		if !ok {
			return statusField(0, scDataXferError)
		}
		// After a reset the controller may still be tearing down the
		// connection this queue had (Linux nvmet answers "already set up"
		// for a while): a refused Connect is retried until the timeout.
		var q *hqueue
		var err error
		deadline := time.Now().Add(t.opts.Timeout)
		for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
			q, err = t.connect(qid, size, t.cntlid)
			var se nvme.StatusError
			if err == nil || !errors.As(err, &se) || time.Now().Add(wait).After(deadline) {
				break
			}
			time.Sleep(wait)
		}
		if err != nil {
			t.setErr(err)
			return statusField(0, scTransientTransp)
		}
		q.sq, q.cq = sq, cq.mem
		t.queues[qid].Store(q)
	case adminDeleteSQ:
		if qid == 0 || qid > maxQID {
			return statusField(sctCommandSpecific, scInvalidQueueID)
		}
		if q := t.queues[qid].Swap(nil); q != nil {
			q.c.close()
		}
	}
	return 0
}
