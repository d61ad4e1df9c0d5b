package nvme

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
)

// Options tune a Controller. The zero value is usable.
type Options struct {
	// AdminDepth is the number of admin queue entries (default 32).
	AdminDepth int
	// MaxIOQueues is the number of I/O queue pairs to request from the
	// controller with Set Features Number of Queues (default 16).
	MaxIOQueues int
	// IOTimeout is the per-command timeout of I/O commands (default 5 s). A
	// command that exceeds it is aborted; if it still does not complete within
	// another IOTimeout the controller is reset.
	IOTimeout time.Duration
	// AdminTimeout bounds every admin command (default 5 s).
	AdminTimeout time.Duration
	// ReadyTimeout bounds every wait for CSTS.RDY; 0 uses CAP.TO.
	ReadyTimeout time.Duration
	// MaxTransfer caps the bytes per command below the controller's MDTS
	// (default and upper bound 2 MiB); larger requests are split.
	MaxTransfer int
}

func (o *Options) fill() {
	if o.AdminDepth <= 1 {
		o.AdminDepth = 32
	}
	if o.MaxIOQueues <= 0 {
		o.MaxIOQueues = 16
	}
	if o.MaxIOQueues > 0xffff {
		o.MaxIOQueues = 0xffff
	}
	if o.IOTimeout <= 0 {
		o.IOTimeout = 5 * time.Second
	}
	if o.AdminTimeout <= 0 {
		o.AdminTimeout = 5 * time.Second
	}
	if o.MaxTransfer <= 0 || o.MaxTransfer > maxTransferCap {
		o.MaxTransfer = maxTransferCap
	}
}

// maxNSListPages bounds namespace discovery against a device that keeps
// returning full active namespace lists.
const maxNSListPages = 256

// maxTransferCap keeps every PRP list within one 4 KiB list page.
const maxTransferCap = 2 << 20

// Namespace is an active namespace of a controller.
type Namespace struct {
	// ID is the namespace identifier (NSID).
	ID uint32
	// CSI is the I/O command set of the namespace (CSINVM, CSISLM, CSICP, ...).
	CSI uint8
	// Blocks is the size in logical blocks (NVM namespaces; 0 otherwise).
	Blocks uint64
	// BlockSize is the logical block data size in bytes (NVM namespaces).
	BlockSize uint32
	// Identify is the NVM Identify Namespace data (nil for other command sets).
	Identify *IdentifyNamespace

	shift uint8 // log2(BlockSize)
}

const (
	stateOK int32 = iota
	stateFatal
	stateClosed
)

// Controller is an initialised NVMe controller reached through a Transport.
// Its methods are safe for concurrent use; each QueuePair belongs to one
// goroutine.
type Controller struct {
	t     Transport
	fab   FabricsTransport // t, when it is a fabrics transport
	opts  Options
	cap   CAP
	vs    uint32
	dstrd uint8
	rdyTO time.Duration
	css   uint32 // CC.CSS programmed

	ident      *IdentifyController
	namespaces []*Namespace
	iocsIndex  int // selected I/O command set combination, -1 if none
	iocsVector uint64
	maxXfer    int
	ioQueues   int // I/O queue pairs granted
	maxQDepth  int

	gen   atomic.Uint32 // incremented by every reset
	state atomic.Int32

	adminMu sync.Mutex // serialises admin commands and resets
	admin   adminQueue
	abuf    *DMA   // admin data buffer
	retired []*DMA // admin buffers of timed-out commands, freed at Close

	qmu    sync.Mutex
	qpairs map[uint16]*QueuePair

	resets atomic.Uint64
	cmb    *DMA
}

const adminBufSize = 64 << 10

// NewController resets and initialises the controller behind t: disable,
// admin queue, enable, Identify Controller, I/O command set selection, Number
// of Queues and namespace discovery. On error the transport is left open.
func NewController(t Transport, opts Options) (*Controller, error) {
	opts.fill()
	c := &Controller{t: t, opts: opts, qpairs: map[uint16]*QueuePair{}, iocsIndex: -1}
	c.fab, _ = t.(FabricsTransport)
	c.cap = CAP(t.Read64(RegCAP))
	if uint64(c.cap) == ^uint64(0) {
		return nil, errors.Wrapf(ErrControllerFatal, "%s: CAP reads all ones (device unreachable)", t.Name())
	}
	c.vs = t.Read32(RegVS)
	c.dstrd = c.cap.DSTRD()
	c.rdyTO = opts.ReadyTimeout
	if c.rdyTO <= 0 {
		c.rdyTO = c.cap.TO()
		if c.rdyTO == 0 {
			c.rdyTO = 500 * time.Millisecond
		}
	}
	if c.cap.MPSMIN() != 0 {
		return nil, errors.Errorf("%s: CAP.MPSMIN %d: 4 KiB pages not supported", t.Name(), c.cap.MPSMIN())
	}
	switch {
	case c.cap.CSS()&CSSIOSets != 0:
		c.css = CCCSSAll
	case c.cap.CSS()&CSSNVM != 0:
		c.css = CCCSSNVM
	default:
		return nil, errors.Errorf("%s: CAP.CSS %#x offers no I/O command set", t.Name(), c.cap.CSS())
	}
	c.maxQDepth = int(c.cap.MQES()) + 1
	if c.maxQDepth < 2 {
		return nil, errors.Errorf("%s: CAP.MQES %d too small", t.Name(), c.cap.MQES())
	}
	if c.opts.AdminDepth > c.maxQDepth {
		c.opts.AdminDepth = c.maxQDepth
	}
	if c.opts.AdminDepth > 4096 {
		c.opts.AdminDepth = 4096
	}
	var err error
	if c.abuf, err = t.AllocDMA(adminBufSize + PageSize); err != nil {
		return nil, errors.Wrapf(err, "%s: admin data buffer", t.Name())
	}
	if err := c.admin.alloc(t, c.opts.AdminDepth, c.dstrd); err != nil {
		t.FreeDMA(c.abuf)
		return nil, errors.Wrapf(err, "%s: admin queue", t.Name())
	}
	if err := c.bringUp(); err != nil {
		c.freeAdmin()
		return nil, err
	}
	if err := c.identify(); err != nil {
		c.freeAdmin()
		return nil, err
	}
	return c, nil
}

func (c *Controller) freeAdmin() {
	c.admin.free(c.t)
	c.t.FreeDMA(c.abuf)
	for _, d := range c.retired {
		c.t.FreeDMA(d)
	}
	c.retired = nil
}

// waitReady waits until CSTS.RDY equals want, failing on CSTS.CFS, an
// unreachable device or after the ready timeout.
func (c *Controller) waitReady(want bool) error {
	deadline := time.Now().Add(c.rdyTO)
	for i := 0; ; i++ {
		csts := c.t.Read32(RegCSTS)
		if csts == CSTSUnreachable {
			return errors.Wrapf(ErrControllerFatal, "%s: CSTS reads all ones", c.t.Name())
		}
		if (csts&CSTSReady != 0) == want {
			return nil
		}
		if csts&CSTSFatal != 0 && want {
			return errors.Wrapf(ErrControllerFatal, "%s: CSTS.CFS set while enabling (CSTS %#x)", c.t.Name(), csts)
		}
		if time.Now().After(deadline) {
			return errors.Wrapf(ErrControllerFatal, "%s: CSTS.RDY did not become %v within %v (CSTS %#x)", c.t.Name(), want, c.rdyTO, csts)
		}
		if i < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// disable clears CC.EN and waits for CSTS.RDY to clear.
func (c *Controller) disable() error {
	cc := c.t.Read32(RegCC)
	csts := c.t.Read32(RegCSTS)
	if csts == CSTSUnreachable {
		return errors.Wrapf(ErrControllerFatal, "%s: CSTS reads all ones", c.t.Name())
	}
	if cc&CCEnable == 0 && csts&CSTSReady == 0 {
		return nil
	}
	if cc&CCEnable == 0 && csts&CSTSReady != 0 && csts&CSTSFatal == 0 {
		// CC.EN=0 with RDY=1: a transition in progress; wait it out first.
		if err := c.waitReady(false); err != nil {
			return err
		}
		return nil
	}
	c.t.Write32(RegCC, cc&^CCEnable)
	return errors.Wrap(c.waitReady(false), "disable")
}

// bringUp disables the controller, programs the admin queue and enables it
// again, then negotiates the number of I/O queues. Caller holds adminMu or is
// NewController.
func (c *Controller) bringUp() error {
	if err := c.disable(); err != nil {
		return err
	}
	c.admin.reset()
	a := &c.admin
	c.t.Write32(RegAQA, uint32(a.depth-1)<<16|uint32(a.depth-1))
	c.t.Write64(RegASQ, a.sq.IOVA)
	c.t.Write64(RegACQ, a.cq.IOVA)
	cc := uint32(CCEnable) | c.css | 0<<CCMPSShift | 6<<CCIOSQESShift | 4<<CCIOCQESShift
	c.t.Write32(RegCC, cc)
	if err := c.waitReady(true); err != nil {
		return errors.Wrap(err, "enable")
	}
	return nil
}

func (c *Controller) identify() error {
	name := c.t.Name()
	data, err := c.Identify(CNSController, 0, 0, 0)
	if err != nil {
		return errors.Wrapf(err, "%s: identify controller", name)
	}
	if c.ident, err = ParseIdentifyController(data); err != nil {
		return errors.Wrap(err, name)
	}
	c.maxXfer = c.opts.MaxTransfer
	if m := c.ident.MDTS; m != 0 && m < 20 {
		if lim := PageSize << m; lim < c.maxXfer {
			c.maxXfer = lim
		}
	}
	if c.css == CCCSSAll {
		if err := c.selectCommandSets(); err != nil {
			return errors.Wrapf(err, "%s: I/O command sets", name)
		}
	}
	if err := c.setNumQueues(); err != nil {
		return errors.Wrapf(err, "%s", name)
	}
	if err := c.discover(); err != nil {
		return errors.Wrapf(err, "%s: namespace discovery", name)
	}
	return nil
}

// selectCommandSets reads the I/O Command Set data structure and selects the
// first combination that includes NVM, preferring the one with most sets.
func (c *Controller) selectCommandSets() error {
	var se StatusError
	data, err := c.Identify(CNSIOCommandSetData, 0, 0, 0)
	if err != nil {
		// Controllers without CNS 1Ch run with their default profile.
		if errors.As(err, &se) {
			return nil
		}
		return err
	}
	vecs, err := parseIOCommandSets(data)
	if err != nil {
		return err
	}
	best, bestBits := -1, 0
	for i, v := range vecs {
		if v&1 == 0 {
			continue
		}
		bits := 0
		for x := v; x != 0; x &= x - 1 {
			bits++
		}
		if bits > bestBits {
			best, bestBits = i, bits
		}
	}
	if best < 0 {
		return nil
	}
	if _, err := c.SetFeatures(FeatIOCSProfile, 0, uint32(best)); err != nil {
		if errors.As(err, &se) {
			return nil // the controller keeps its default profile
		}
		return errors.Wrapf(err, "set I/O command set profile %d", best)
	}
	c.iocsIndex, c.iocsVector = best, vecs[best]
	return nil
}

func (c *Controller) setNumQueues() error {
	n := uint32(c.opts.MaxIOQueues - 1)
	dw0, err := c.SetFeatures(FeatNumQueues, 0, n<<16|n)
	if err != nil {
		return errors.Wrap(err, "set features number of queues")
	}
	nsq, ncq := int(dw0&0xffff)+1, int(dw0>>16)+1
	c.ioQueues = min(nsq, ncq, c.opts.MaxIOQueues)
	return nil
}

func (c *Controller) discover() error {
	var ids []uint32
	var start uint32
	for pages := 0; ; pages++ {
		if pages == maxNSListPages {
			return errors.Errorf("active namespace list longer than %d pages", maxNSListPages)
		}
		data, err := c.Identify(CNSActiveNSList, start, 0, 0)
		if err != nil {
			return errors.Wrap(err, "active namespace list")
		}
		page, err := ParseNSList(data)
		if err != nil {
			return err
		}
		if len(page) > 0 && page[0] <= start {
			return errors.Errorf("active namespace list after %d starts at %d", start, page[0])
		}
		ids = append(ids, page...)
		if len(page) < IdentifyDataSize/4 {
			break
		}
		start = page[len(page)-1]
	}
	c.namespaces = c.namespaces[:0]
	for _, id := range ids {
		ns := &Namespace{ID: id, CSI: CSINVM}
		if c.css == CCCSSAll {
			if data, err := c.Identify(CNSNSDescList, id, 0, 0); err == nil {
				d, err := ParseNSDescriptors(data)
				if err != nil {
					return errors.Wrapf(err, "namespace %d", id)
				}
				if d.HasCSI {
					ns.CSI = d.CSI
				}
			}
		}
		if ns.CSI == CSINVM {
			data, err := c.Identify(CNSNamespace, id, 0, 0)
			if err != nil {
				return errors.Wrapf(err, "identify namespace %d", id)
			}
			idn, err := ParseIdentifyNamespace(data)
			if err != nil {
				return errors.Wrapf(err, "namespace %d", id)
			}
			if idn.NSZE == 0 {
				continue
			}
			if idn.MSize != 0 {
				// Metadata (extended LBAs or a separate buffer) is not
				// supported; such namespaces are not offered.
				continue
			}
			ns.Identify, ns.Blocks, ns.BlockSize = idn, idn.NSZE, idn.LBASize
			for ns.shift = 0; 1<<ns.shift < ns.BlockSize; ns.shift++ {
			}
		}
		c.namespaces = append(c.namespaces, ns)
	}
	return nil
}

// Name returns the transport's name for the controller.
func (c *Controller) Name() string { return c.t.Name() }

// Transport returns the transport the controller runs over.
func (c *Controller) Transport() Transport { return c.t }

// CAP returns the Controller Capabilities register read at initialisation.
func (c *Controller) CAP() CAP { return c.cap }

// Version returns the VS register (e.g. 0x00010400 for NVMe 1.4).
func (c *Controller) Version() uint32 { return c.vs }

// IdentifyData returns the Identify Controller data read at initialisation.
func (c *Controller) IdentifyData() *IdentifyController { return c.ident }

// Namespaces returns the active namespaces in NSID order.
func (c *Controller) Namespaces() []*Namespace { return c.namespaces }

// Namespace returns the active namespace with the given NSID, or nil.
func (c *Controller) Namespace(nsid uint32) *Namespace {
	for _, ns := range c.namespaces {
		if ns.ID == nsid {
			return ns
		}
	}
	return nil
}

// ONCS returns the Optional NVM Command Support bits.
func (c *Controller) ONCS() uint16 { return c.ident.ONCS }

// Supports reports whether ONCS advertises the optional NVM command op
// (OpWriteZeroes, OpDSM, OpCopy, OpCompare, OpWriteUncorr). Read, Write and
// Flush are always supported.
func (c *Controller) Supports(op uint8) bool {
	switch op {
	case OpRead, OpWrite, OpFlush:
		return true
	case OpWriteZeroes:
		return c.ident.ONCS&ONCSWriteZeroes != 0
	case OpDSM:
		return c.ident.ONCS&ONCSDSM != 0
	case OpCopy:
		return c.ident.ONCS&ONCSCopy != 0
	case OpCompare:
		return c.ident.ONCS&ONCSCompare != 0
	case OpWriteUncorr:
		return c.ident.ONCS&ONCSWriteUncorr != 0
	}
	return false
}

// MDTS returns the controller's Maximum Data Transfer Size field (0 = none).
func (c *Controller) MDTS() uint8 { return c.ident.MDTS }

// MaxTransfer returns the largest transfer in bytes of a single command; the
// queue pair splits larger reads and writes.
func (c *Controller) MaxTransfer() int { return c.maxXfer }

// IOQueues returns the number of I/O queue pairs the controller granted.
func (c *Controller) IOQueues() int { return c.ioQueues }

// MaxQueueDepth returns the largest queue depth the controller supports.
func (c *Controller) MaxQueueDepth() int { return c.maxQDepth }

// CommandSets returns the selected I/O command set vector (bit i = CSI i) and
// its index, or 0, -1 when the controller runs with the NVM command set only.
func (c *Controller) CommandSets() (uint64, int) { return c.iocsVector, c.iocsIndex }

// Resets returns how many controller resets have happened since init.
func (c *Controller) Resets() uint64 { return c.resets.Load() }

// Failed reports whether the controller is in a fatal state (a reset failed).
func (c *Controller) Failed() bool { return c.state.Load() == stateFatal }

// Close shuts the controller down (CC.SHN normal, then disable), fails every
// queue pair's outstanding commands with ErrClosed and closes the transport.
// Queue pairs must not be used concurrently with Close.
func (c *Controller) Close() error {
	if !c.state.CompareAndSwap(stateOK, stateClosed) && !c.state.CompareAndSwap(stateFatal, stateClosed) {
		return nil
	}
	c.qmu.Lock()
	qps := make([]*QueuePair, 0, len(c.qpairs))
	for _, q := range c.qpairs {
		qps = append(qps, q)
	}
	c.qmu.Unlock()
	for _, q := range qps {
		q.Close()
	}
	c.adminMu.Lock()
	c.shutdown()
	c.adminMu.Unlock()
	return c.t.Close()
}

// shutdown performs a normal shutdown notification, bounded by the ready
// timeout, then disables the controller.
func (c *Controller) shutdown() {
	csts := c.t.Read32(RegCSTS)
	if csts == CSTSUnreachable || csts&CSTSReady == 0 {
		return
	}
	cc := c.t.Read32(RegCC)
	c.t.Write32(RegCC, cc&^(3<<CCSHNShift)|CCSHNNormal)
	deadline := time.Now().Add(c.rdyTO)
	for time.Now().Before(deadline) {
		csts = c.t.Read32(RegCSTS)
		if csts == CSTSUnreachable || csts&CSTSShstMask == CSTSShstDone {
			break
		}
		time.Sleep(50 * time.Microsecond)
	}
	c.disable()
}
