package mock

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Mode selects how the controller executes commands.
type Mode int

const (
	// Inline executes commands when the SQ doorbell is written, in the
	// goroutine that wrote it: deterministic, no extra goroutine.
	Inline Mode = iota
	// DeviceCore runs the controller as a poller on its own reactor, in
	// parallel with the host, like hardware.
	DeviceCore
)

// Config describes an emulated controller.
type Config struct {
	// Name is the transport name (default "mockN").
	Name string
	// Serial, Model and Firmware are the Identify Controller strings.
	Serial, Model, Firmware string
	// VID is the PCI vendor ID reported by Identify (default 0xb9f0).
	VID uint16
	// Namespaces get NSIDs 1, 2, ... in order.
	Namespaces []NamespaceConfig
	// MDTS is the maximum data transfer size as a power of two of 4 KiB
	// pages: 0 means 7 (512 KiB, as QEMU), negative means no limit.
	MDTS int
	// MaxQueues is the number of I/O queue pairs offered (default 64).
	MaxQueues int
	// MQES is the largest queue size, 0-based (default 1023).
	MQES int
	// NoCopy, NoWriteZeroes and NoDSM leave those commands out of ONCS.
	NoCopy, NoWriteZeroes, NoDSM bool
	// MSSRL, MCL and MSRC are the Copy limits of every namespace
	// (defaults 4096 blocks, 16384 blocks, 31 (0-based ranges)).
	MSSRL uint16
	MCL   uint32
	MSRC  uint8
	// CMBSize adds a Controller Memory Buffer of this many bytes (rounded up
	// to 1 MiB) in BAR 2; 0 means none.
	CMBSize int
	// CMBReadCost is what a host CPU read of 64 bytes of the CMB costs: an
	// uncached read of a PCIe BAR, one non-posted round trip, which loads
	// do not overlap. 0 means DefaultCMBReadCost; negative means free
	// (DRAM speed, which no real device offers). See CMBReadCost.
	CMBReadCost time.Duration
	// DSTRD is the doorbell stride field of CAP.
	DSTRD uint8
	// TO is CAP.TO in 500 ms units (default 2).
	TO uint8
	// Mode is Inline (default) or DeviceCore.
	Mode Mode
	// Reactor runs the device in DeviceCore mode; nil starts a private
	// unpinned reactor that Close stops.
	Reactor *poller.Reactor
	// Seed makes probabilistic fault injection reproducible.
	Seed uint64
	// Compute sets the limits of compute namespaces (nil: defaults).
	Compute *ComputeConfig
	// Subsystem is the NQN of the NVM subsystem the controller belongs to.
	// Controllers of a bus with the same Subsystem form one subsystem:
	// Identify reports the NQN and CMIC bit 1 (more than one controller),
	// and only they reach each other's namespaces (Memory Copy). Empty
	// means a subsystem of its own, named after the serial number.
	Subsystem string
}

// DefaultCMBReadCost is the default cost of a CPU read of 64 bytes of an
// emulated CMB: about one PCIe round trip of an uncached read (0.5-1 µs on
// common root complexes; a 64-byte load is the widest a core issues), so a
// core reads a BAR at some 60 MiB/s, two orders of magnitude below DRAM.
const DefaultCMBReadCost = time.Microsecond

const (
	defaultVID = 0xb9f0
	pageSize   = nvme.PageSize
	vsNVMe20   = 0x00020000
)

// Controller is an emulated NVMe controller. It implements nvme.Transport
// and nvme.BARMapper.
type Controller struct {
	bus   *Bus
	cfg   Config
	name  string
	nqn   string // the NVM subsystem's NQN (Identify SUBNQN)
	index int
	cap   uint64
	mdts  uint8

	ctl    sync.Mutex // registers, admin queue, queue tables
	cc     atomic.Uint32
	csts   atomic.Uint32
	aqa    atomic.Uint32
	asq    atomic.Uint64
	acq    atomic.Uint64
	cmbmsc atomic.Uint64
	hung   atomic.Bool
	closed atomic.Bool

	sqs        []atomic.Pointer[sq] // by qid, 0 = admin
	cqs        []atomic.Pointer[cq]
	numQueues  int // granted by Set Features, under ctl
	iocsIndex  uint32
	features   map[uint8]uint32
	namespaces []*namespace
	ioCreated  int

	faults atomic.Pointer[[]*faultRule]
	rng    *rand.Rand // admin-side fault randomness, under ctl

	// qc are the per-queue counters by QID; peer counts what other
	// controllers' commands did to this one (device-to-device reads).
	qc   []queueCounters
	peer queueCounters

	// peerQs are the queues on which peers' queues have this controller
	// execute commands (peer.go): copy-on-write under peerMu.
	peerMu sync.Mutex
	peerQs atomic.Pointer[[]*peerQueue]
	// prpPages are, by QID, the pages in which the controller's queues
	// build the PRP lists of their peer Reads.
	prpPages []prpPage

	dmaMu    sync.Mutex
	dmas     map[uint64]*nvme.DMA
	internal []uint64 // bus addresses of the device's own memory (SLM, PRP pages)

	cmb     []byte
	cmbIOVA uint64

	group  *poller.Group
	reacto *poller.Reactor
	poll   *poller.Poller
}

// sq is a submission queue as the device sees it. The pads keep what the
// core executing its commands writes off the cache lines of other queues.
type sq struct {
	_       [linePad]byte
	id      uint16
	mem     []byte
	size    uint16
	head    uint16        // device side, under cq.mu
	headPub atomic.Uint32 // mirror of head for the device-core poller
	tail    atomic.Uint32 // doorbell
	cq      *cq
	deleted bool
	held    []heldCmd // dropped commands an Abort can still find
	rng     *rand.Rand
	scratch []byte
	st      *queueCounters // the counters of this QID
	cur     nvme.SQE       // the command being executed
	owner   *Controller    // the controller whose queue this is
	peers   []peerLink     // peer queues of source controllers (peer.go)
	_       [linePad]byte
}

type heldCmd struct {
	cid  uint16
	lost bool
}

// cq is a completion queue as the device sees it; mu serialises everything
// that executes commands of the SQs attached to it and posts into it.
type cq struct {
	_        [linePad]byte
	mu       sync.Mutex
	id       uint16
	mem      []byte
	size     uint16
	tail     uint16
	phase    uint32
	head     atomic.Uint32         // doorbell
	sqs      []*sq                 // under mu
	attached atomic.Pointer[[]*sq] // copy of sqs for lock-free reads
	deleted  bool
	_        [linePad]byte
}

func (q *cq) full() bool { return (q.tail+1)%q.size == uint16(q.head.Load()) }

// post writes a CQE: DW0-DW2 first, then DW3 (CID, status and phase) with an
// atomic store, so a host that sees the phase sees the whole entry.
func (q *cq) post(sqid, sqhd, cid uint16, c completion) {
	p := unsafe.Pointer(&q.mem[int(q.tail)*nvme.CQESize])
	*(*uint32)(p) = c.dw0
	*(*uint32)(unsafe.Add(p, 4)) = c.dw1
	*(*uint32)(unsafe.Add(p, 8)) = uint32(sqhd) | uint32(sqid)<<16
	atomic.StoreUint32((*uint32)(unsafe.Add(p, 12)), uint32(cid)|uint32(c.status&^1|uint16(q.phase))<<16)
	q.tail++
	if q.tail == q.size {
		q.tail = 0
		q.phase ^= 1
	}
}

// completion is a command's result as the device posts it.
type completion struct {
	dw0, dw1 uint32
	status   uint16 // CQE status field without the phase tag
	noPost   bool
}

func ok() completion { return completion{} }

func fail(e nvme.StatusError) completion { return completion{status: e.Field()} }

func failDNR(e nvme.StatusError) completion {
	e.DNR = true
	return completion{status: e.Field()}
}

// NewController adds a controller to the bus. The controller starts disabled
// (CC.EN = 0), as after a PCI function reset.
func NewController(b *Bus, cfg Config) (*Controller, error) {
	b.mu.Lock()
	idx := b.nextCtrl
	b.nextCtrl++
	b.mu.Unlock()
	c := &Controller{bus: b, cfg: cfg, index: idx, features: map[uint8]uint32{}, dmas: map[uint64]*nvme.DMA{}}
	c.name = cfg.Name
	if c.name == "" {
		c.name = fmt.Sprintf("mock%d", idx)
	}
	if c.cfg.Serial == "" {
		c.cfg.Serial = fmt.Sprintf("BPFBLKMOCK%04d", idx)
	}
	if c.cfg.Model == "" {
		c.cfg.Model = "bpfblk emulated NVMe controller"
	}
	c.nqn = subsystemNQN(&c.cfg)
	if c.cfg.Firmware == "" {
		c.cfg.Firmware = "1.0"
	}
	if c.cfg.VID == 0 {
		c.cfg.VID = defaultVID
	}
	switch {
	case cfg.MDTS == 0:
		c.mdts = 7
	case cfg.MDTS < 0:
		c.mdts = 0
	case cfg.MDTS > 15:
		return nil, errors.Errorf("mock: %s: MDTS %d too large", c.name, cfg.MDTS)
	default:
		c.mdts = uint8(cfg.MDTS)
	}
	if c.cfg.MaxQueues <= 0 {
		c.cfg.MaxQueues = 64
	}
	if c.cfg.MaxQueues > 1024 {
		return nil, errors.Errorf("mock: %s: MaxQueues %d exceeds 1024", c.name, c.cfg.MaxQueues)
	}
	if c.cfg.MQES <= 0 {
		c.cfg.MQES = 1023
	}
	if c.cfg.MQES > 0xffff {
		c.cfg.MQES = 0xffff
	}
	if c.cfg.MSSRL == 0 {
		c.cfg.MSSRL = 4096
	}
	if c.cfg.MCL == 0 {
		c.cfg.MCL = 16384
	}
	if c.cfg.MSRC == 0 {
		c.cfg.MSRC = 31
	}
	if c.cfg.TO == 0 {
		c.cfg.TO = 2
	}
	if c.cfg.DSTRD > 8 {
		return nil, errors.Errorf("mock: %s: DSTRD %d too large", c.name, c.cfg.DSTRD)
	}
	c.sqs = make([]atomic.Pointer[sq], c.cfg.MaxQueues+1)
	c.cqs = make([]atomic.Pointer[cq], c.cfg.MaxQueues+1)
	c.numQueues = c.cfg.MaxQueues
	c.qc = newQueueCounters(c.cfg.MaxQueues + 1)
	c.prpPages = make([]prpPage, c.cfg.MaxQueues+1)
	c.rng = rand.New(rand.NewPCG(cfg.Seed, uint64(idx)))
	for i, nc := range cfg.Namespaces {
		ns, err := newNamespace(uint32(i+1), nc)
		if err != nil {
			c.closeNamespaces()
			return nil, errors.Wrap(err, c.name)
		}
		c.namespaces = append(c.namespaces, ns)
	}
	c.cap = uint64(c.cfg.MQES) | 1<<16 | uint64(c.cfg.TO)<<24 | uint64(c.cfg.DSTRD)<<32 |
		uint64(nvme.CSSNVM|nvme.CSSIOSets)<<37 | 4<<52
	if cfg.CMBSize > 0 {
		size := (cfg.CMBSize + 1<<20 - 1) &^ (1<<20 - 1)
		c.cmb = alignedAlloc(size)
		c.cap |= 1 << 57
	}
	if cfg.Mode == DeviceCore {
		if err := c.startDeviceCore(); err != nil {
			c.closeNamespaces()
			return nil, err
		}
	}
	b.attach(c)
	return c, nil
}

func (c *Controller) closeNamespaces() {
	for _, ns := range c.namespaces {
		ns.store.close()
	}
}

// alignedAlloc returns zeroed memory whose first byte is 4 KiB aligned.
func alignedAlloc(n int) []byte {
	b := make([]byte, n+pageSize)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & (pageSize - 1))
	return b[off : off+n : off+n]
}

// Bus returns the bus the controller sits on.
func (c *Controller) Bus() *Bus { return c.bus }

// Name implements nvme.Transport.
func (c *Controller) Name() string { return c.name }

// AllocDMA implements nvme.Transport: zeroed host memory mapped on the bus.
func (c *Controller) AllocDMA(size int) (*nvme.DMA, error) {
	if size <= 0 {
		return nil, errors.Errorf("mock: %s: DMA allocation of %d bytes", c.name, size)
	}
	if c.closed.Load() {
		return nil, errors.Wrapf(nvme.ErrClosed, "mock: %s", c.name)
	}
	buf := alignedAlloc(size)
	iova, err := c.bus.Map(buf, HostMemory)
	if err != nil {
		return nil, err
	}
	d := &nvme.DMA{Buf: buf, IOVA: iova}
	c.dmaMu.Lock()
	c.dmas[iova] = d
	c.dmaMu.Unlock()
	return d, nil
}

// FreeDMA implements nvme.Transport.
func (c *Controller) FreeDMA(d *nvme.DMA) error {
	if d == nil {
		return nil
	}
	c.dmaMu.Lock()
	_, mine := c.dmas[d.IOVA]
	delete(c.dmas, d.IOVA)
	c.dmaMu.Unlock()
	if !mine {
		return errors.Errorf("mock: %s: FreeDMA of %#x: not allocated here", c.name, d.IOVA)
	}
	return c.bus.Unmap(d.IOVA)
}

// MapBAR implements nvme.BARMapper for BAR 2, the CMB: it maps the CMB on
// the bus as peer memory and returns its CPU view and bus address.
func (c *Controller) MapBAR(bir int) (*nvme.DMA, error) {
	if bir != 2 || c.cmb == nil {
		return nil, errors.Errorf("mock: %s: BAR %d is not mappable", c.name, bir)
	}
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.cmbIOVA == 0 {
		iova, err := c.bus.Map(c.cmb, PeerMemory)
		if err != nil {
			return nil, err
		}
		c.cmbIOVA = iova
	}
	return &nvme.DMA{Buf: c.cmb, IOVA: c.cmbIOVA}, nil
}

// CMBReadCost returns the emulated cost of a host CPU read of 64 bytes of
// the CMB (Config.CMBReadCost), 0 when reads are free. Host code that runs
// on memory in the CMB charges it with ChargeCMBRead.
func (c *Controller) CMBReadCost() time.Duration {
	switch {
	case c.cfg.CMBReadCost < 0:
		return 0
	case c.cfg.CMBReadCost == 0:
		return DefaultCMBReadCost
	}
	return c.cfg.CMBReadCost
}

// ChargeCMBRead spends what a host CPU read of n bytes of the CMB costs on
// the calling core: it spins, as a core stalled on uncached loads does
// (sleeping would free the core, which a stalled one is not).
func (c *Controller) ChargeCMBRead(n int) {
	d := time.Duration((n+63)/64) * c.CMBReadCost()
	if d <= 0 {
		return
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// Close implements nvme.Transport: the controller is disabled, its device
// core stopped and all its DMA memory unmapped.
func (c *Controller) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.stopDeviceCore()
	c.ctl.Lock()
	c.disableLocked()
	c.ctl.Unlock()
	c.dmaMu.Lock()
	for iova := range c.dmas {
		c.bus.Unmap(iova)
	}
	clear(c.dmas)
	for _, iova := range c.internal {
		c.bus.Unmap(iova)
	}
	c.internal = nil
	c.dmaMu.Unlock()
	if c.cmbIOVA != 0 {
		c.bus.Unmap(c.cmbIOVA)
	}
	c.closeNamespaces()
	return nil
}

// Read32 implements nvme.Transport. A closed controller reads as all ones,
// like a removed PCIe function.
func (c *Controller) Read32(off uint32) uint32 {
	if c.closed.Load() {
		return 0xffffffff
	}
	switch off {
	case nvme.RegCAP:
		return uint32(c.cap)
	case nvme.RegCAP + 4:
		return uint32(c.cap >> 32)
	case nvme.RegVS:
		return vsNVMe20
	case nvme.RegCC:
		return c.cc.Load()
	case nvme.RegCSTS:
		return c.csts.Load()
	case nvme.RegAQA:
		return c.aqa.Load()
	case nvme.RegASQ:
		return uint32(c.asq.Load())
	case nvme.RegASQ + 4:
		return uint32(c.asq.Load() >> 32)
	case nvme.RegACQ:
		return uint32(c.acq.Load())
	case nvme.RegACQ + 4:
		return uint32(c.acq.Load() >> 32)
	case nvme.RegCMBLOC:
		if c.cmb != nil && c.cmbmsc.Load()&nvme.CMBMSCCRE != 0 {
			return 2 // BIR 2, offset 0
		}
	case nvme.RegCMBSZ:
		if c.cmb != nil && c.cmbmsc.Load()&nvme.CMBMSCCRE != 0 {
			return nvme.CMBSZSQS | nvme.CMBSZLISTS | nvme.CMBSZRDS | nvme.CMBSZWDS | 2<<8 | uint32(len(c.cmb)>>20)<<12
		}
	case nvme.RegCMBMSC:
		return uint32(c.cmbmsc.Load())
	case nvme.RegCMBMSC + 4:
		return uint32(c.cmbmsc.Load() >> 32)
	}
	return 0
}

// Read64 implements nvme.Transport.
func (c *Controller) Read64(off uint32) uint64 {
	return uint64(c.Read32(off)) | uint64(c.Read32(off+4))<<32
}

// Write64 implements nvme.Transport.
func (c *Controller) Write64(off uint32, v uint64) {
	switch off {
	case nvme.RegASQ:
		c.asq.Store(v)
	case nvme.RegACQ:
		c.acq.Store(v)
	case nvme.RegCMBMSC:
		c.writeCMBMSC(v)
	default:
		c.Write32(off, uint32(v))
		c.Write32(off+4, uint32(v>>32))
	}
}

// Write32 implements nvme.Transport.
func (c *Controller) Write32(off uint32, v uint32) {
	if off >= nvme.RegDoorbell {
		c.doorbell(off, v)
		return
	}
	switch off {
	case nvme.RegCC:
		c.writeCC(v)
	case nvme.RegAQA:
		c.aqa.Store(v & 0x0fff0fff)
	case nvme.RegASQ:
		c.asq.Store(c.asq.Load()&^0xffffffff | uint64(v))
	case nvme.RegASQ + 4:
		c.asq.Store(c.asq.Load()&0xffffffff | uint64(v)<<32)
	case nvme.RegACQ:
		c.acq.Store(c.acq.Load()&^0xffffffff | uint64(v))
	case nvme.RegACQ + 4:
		c.acq.Store(c.acq.Load()&0xffffffff | uint64(v)<<32)
	case nvme.RegCMBMSC:
		c.writeCMBMSC(c.cmbmsc.Load()&^0xffffffff | uint64(v))
	case nvme.RegCMBMSC + 4:
		c.writeCMBMSC(c.cmbmsc.Load()&0xffffffff | uint64(v)<<32)
	}
}

func (c *Controller) writeCMBMSC(v uint64) {
	if c.cmb == nil {
		return
	}
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.cmbmsc.Store(v & (^uint64(0xfff) | nvme.CMBMSCCRE | nvme.CMBMSCCMSE))
	if v&nvme.CMBMSCCMSE == 0 {
		return
	}
	cba := v &^ 0xfff
	if cba == c.cmbIOVA {
		return
	}
	// The host placed the CMB at a bus address of its choice.
	if c.cmbIOVA != 0 {
		c.bus.Unmap(c.cmbIOVA)
		c.cmbIOVA = 0
	}
	if c.bus.MapAt(cba, c.cmb, PeerMemory) == nil {
		c.cmbIOVA = cba
	}
}

func (c *Controller) writeCC(v uint32) {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.hung.Load() || c.closed.Load() {
		c.cc.Store(v)
		return
	}
	old := c.cc.Swap(v)
	switch {
	case old&nvme.CCEnable != 0 && v&nvme.CCEnable == 0:
		c.disableLocked()
		c.csts.Store(0)
		return
	case old&nvme.CCEnable == 0 && v&nvme.CCEnable != 0:
		if !c.enableLocked(v) {
			c.csts.Store(nvme.CSTSFatal)
			return
		}
		c.csts.Store(nvme.CSTSReady)
	}
	if v&(3<<nvme.CCSHNShift) != 0 && c.csts.Load()&nvme.CSTSReady != 0 {
		c.csts.Store(c.csts.Load()&^nvme.CSTSShstMask | nvme.CSTSShstDone)
	}
}

// enableLocked validates CC and the admin queue registers and creates the
// admin queue pair.
func (c *Controller) enableLocked(cc uint32) bool {
	if cc>>nvme.CCMPSShift&0xf != 0 {
		return false
	}
	switch cc >> nvme.CCCSSShift & 7 {
	case 0, 6:
	default:
		return false
	}
	aqa := c.aqa.Load()
	sqs, cqs := aqa&0xfff+1, aqa>>16&0xfff+1
	if sqs < 2 || cqs < 2 {
		return false
	}
	asq, acq := c.asq.Load(), c.acq.Load()
	if asq&0xfff != 0 || acq&0xfff != 0 {
		return false
	}
	sm, _, ok1 := c.bus.Translate(asq, int(sqs)*nvme.SQESize)
	cm, _, ok2 := c.bus.Translate(acq, int(cqs)*nvme.CQESize)
	if !ok1 || !ok2 {
		c.qc[0].busFaults.Add(1)
		return false
	}
	acqq := &cq{id: 0, mem: cm, size: uint16(cqs), phase: 1}
	asqq := &sq{id: 0, mem: sm, size: uint16(sqs), cq: acqq, rng: c.rng, scratch: make([]byte, 4096), st: &c.qc[0], owner: c}
	acqq.sqs = []*sq{asqq}
	acqq.attached.Store(&acqq.sqs)
	c.cqs[0].Store(acqq)
	c.sqs[0].Store(asqq)
	c.numQueues = c.cfg.MaxQueues
	c.iocsIndex = 0
	c.ioCreated = 0
	return true
}

// disableLocked is the controller reset of CC.EN 1->0: every queue is
// deleted and nothing is completed any more.
func (c *Controller) disableLocked() {
	for i := range c.sqs {
		s := c.sqs[i].Load()
		if s == nil {
			continue
		}
		s.cq.mu.Lock()
		s.deleted = true
		s.held = nil
		s.cq.mu.Unlock()
		c.sqs[i].Store(nil)
	}
	for i := range c.cqs {
		if q := c.cqs[i].Load(); q != nil {
			q.mu.Lock()
			q.deleted = true
			q.mu.Unlock()
			c.cqs[i].Store(nil)
		}
	}
	c.ioCreated = 0
}

// doorbell handles a write in the doorbell area.
func (c *Controller) doorbell(off, v uint32) {
	stride := uint32(4) << c.cfg.DSTRD
	rel := off - nvme.RegDoorbell
	if rel%stride != 0 || c.hung.Load() {
		return
	}
	idx := rel / stride
	qid := int(idx / 2)
	if qid >= len(c.sqs) {
		return
	}
	if idx&1 == 0 {
		s := c.sqs[qid].Load()
		if s == nil || v >= uint32(s.size) {
			return // no such queue, or an invalid doorbell value
		}
		s.tail.Store(v)
		if c.cfg.Mode == Inline {
			c.run(s, false)
		} else {
			c.kick()
		}
		return
	}
	q := c.cqs[qid].Load()
	if q == nil || v >= uint32(q.size) {
		return
	}
	q.head.Store(v)
	if c.cfg.Mode != Inline {
		c.kick()
	} else {
		// Resume SQs that stalled on a full CQ.
		for _, s := range c.sqsOf(q) {
			if uint16(s.tail.Load()) != uint16(s.headPub.Load()) {
				c.run(s, false)
			}
		}
	}
}

// sqsOf returns the SQs attached to q (a snapshot).
func (c *Controller) sqsOf(q *cq) []*sq {
	if l := q.attached.Load(); l != nil {
		return *l
	}
	return nil
}

// run executes the commands between the device's head and the doorbell tail.
// The device core passes try: it skips a queue whose CQ is busy (a compute
// core executing one of its Memory Copies, or posting a completion) and
// comes back on its next poll, rather than wait and hold up the others.
func (c *Controller) run(s *sq, try bool) bool {
	if s.id == 0 {
		c.ctl.Lock()
		defer c.ctl.Unlock()
	}
	q := s.cq
	if !try {
		q.mu.Lock()
	} else if !q.mu.TryLock() {
		return true
	}
	defer q.mu.Unlock()
	if s.deleted || c.hung.Load() || c.csts.Load()&nvme.CSTSFatal != 0 {
		return false
	}
	busy := false
	for {
		tail := uint16(s.tail.Load())
		if s.head == tail || q.full() {
			break
		}
		// The entry is copied out of host memory once, into the SQ's own
		// command buffer, so handlers see a stable command.
		s.cur = *(*nvme.SQE)(unsafe.Pointer(&s.mem[int(s.head)*nvme.SQESize]))
		if c.coreFull(s, &s.cur) {
			// The command's compute core has no room: leave it in the
			// SQ, as a device that stops fetching does.
			break
		}
		s.head++
		if s.head == s.size {
			s.head = 0
		}
		s.headPub.Store(uint32(s.head))
		busy = true
		c.execute(s, &s.cur)
		if s.deleted || c.hung.Load() || c.csts.Load()&nvme.CSTSFatal != 0 {
			break
		}
	}
	return busy
}

// execute runs one command and posts its completion (unless a fault drops
// it). Caller holds s.cq.mu (and ctl for the admin queue).
func (c *Controller) execute(s *sq, e *nvme.SQE) {
	var r completion
	if rules := c.faults.Load(); rules != nil && len(*rules) > 0 {
		var done bool
		if r, done = c.applyFaults(*rules, s, e); done {
			if !r.noPost {
				s.cq.post(s.id, s.head, e.CID, r)
				c.noteError(s, e, r)
			}
			return
		}
	}
	if s.id == 0 {
		r = c.admin(s, e)
	} else {
		r = c.io(s, e)
	}
	if r.noPost {
		return
	}
	s.cq.post(s.id, s.head, e.CID, r)
	if r.status != 0 {
		c.noteError(s, e, r)
	}
}

// io dispatches an I/O command through the namespace's command set.
func (c *Controller) io(s *sq, e *nvme.SQE) completion {
	if e.Fuse() != 0 {
		return fail(nvme.ErrInvalidField)
	}
	if e.PSDT() != 0 {
		return failDNR(nvme.ErrInvalidField) // SGLs are not supported
	}
	if e.NSID == 0 || int(e.NSID) > len(c.namespaces) {
		if e.OPC == nvme.OpFlush && e.NSID == nvme.NSIDBroadcast {
			for _, ns := range c.namespaces {
				if ns.store.flush() != nil {
					return fail(nvme.ErrWriteFault)
				}
			}
			return ok()
		}
		return failDNR(nvme.ErrInvalidNamespace)
	}
	ns := c.namespaces[e.NSID-1]
	h := ns.ops.handlers[e.OPC]
	if h == nil {
		return failDNR(nvme.ErrInvalidOpcode)
	}
	return h(c, s, ns, e)
}

// noteError records a failed command in the queue's share of the Error
// Information log (the log page numbers the entries when it is read).
func (c *Controller) noteError(s *sq, e *nvme.SQE, r completion) {
	if r.status == 0 {
		return
	}
	ent := nvme.ErrorLogEntry{SQID: s.id, CID: e.CID, Status: r.status, ParamLoc: 0xffff, NSID: e.NSID}
	if s.id != 0 && (e.OPC == nvme.OpRead || e.OPC == nvme.OpWrite) {
		ent.LBA = uint64(e.CDW10) | uint64(e.CDW11)<<32
	}
	s.st.note(ent)
}

const errLogEntries = 64

// deviceCore support ---------------------------------------------------------

func (c *Controller) startDeviceCore() error {
	r := c.cfg.Reactor
	if r == nil {
		g, err := poller.Start(poller.Config{NoPin: true})
		if err != nil {
			return errors.Wrapf(err, "mock: %s: device reactor", c.name)
		}
		c.group = g
		r = g.Reactors()[0]
	}
	p, err := r.Register("nvme-mock-"+c.name, c.pollDevice, 0)
	if err != nil {
		if c.group != nil {
			c.group.Stop()
		}
		return errors.Wrapf(err, "mock: %s: register device poller", c.name)
	}
	c.reacto, c.poll = r, p
	return nil
}

// kick wakes the device reactor if it is parked, so that a parked device
// core answers a doorbell at once, as hardware would. A running device core
// sees the doorbell on its next poll: then kick only reads.
func (c *Controller) kick() {
	if c.reacto != nil {
		c.reacto.Wake()
	}
}

func (c *Controller) stopDeviceCore() {
	if c.poll == nil {
		return
	}
	if c.reacto.OnReactor() {
		// Closed from the device's own reactor: no poll is running now.
		c.poll.Unregister()
		if c.group != nil {
			c.group.Stop()
		}
		return
	}
	done := make(chan struct{})
	if err := c.reacto.Send(func() { c.poll.Unregister(); close(done) }); err == nil {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	} else {
		c.poll.Unregister()
	}
	if c.group != nil {
		c.group.Stop()
	}
}

// pollDevice is the device-core poller: it executes every SQ whose doorbell
// moved past the device's head.
func (c *Controller) pollDevice() poller.Status {
	if c.hung.Load() || c.closed.Load() || c.csts.Load()&nvme.CSTSReady == 0 {
		return poller.Idle
	}
	busy := false
	for i := range c.sqs {
		s := c.sqs[i].Load()
		if s == nil || uint16(s.tail.Load()) == uint16(s.headPub.Load()) {
			continue
		}
		if c.run(s, true) {
			busy = true
		}
	}
	if busy {
		return poller.Busy
	}
	return poller.Idle
}
