package tcp

import (
	"sync"
	"sync/atomic"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/internal/cpwire"
	"github.com/pkg/errors"
)

// A Target may export a compute device beside its NVM namespaces: its
// compute namespace (Computational Programs, CSI 4) and its memory
// namespaces (Subsystem Local Memory, CSI 3) become namespaces of the
// subsystem, numbered after the NVM ones (NVM 1..N, compute N+1, memory
// N+2...), and the CAP.CSS, Identify (CNS 1Ch, 05h, 06h, CSI descriptors)
// and I/O Command Set Profile answers advertise the command sets, so a
// remote host discovers them as it does on PCIe.
//
// The target does not run programs: it forwards the CP and SLM commands to
// the device behind ComputeExport (package nvmf hands it the server's
// compute controller), after translating the NSIDs the host uses into the
// device's — in the command, in memory range descriptors and in Memory Copy
// source descriptors, whose NVM namespace becomes the one the device reads
// peer to peer (ComputeExport.Sources), or, for a namespace out of its
// reach, a host copy the channel carries out (ComputeExport.HostCopy). Admin commands run synchronously on
// the worker of the admin queue; I/O commands go through one
// ComputeChannel per worker, polled with the worker, like the namespace
// channels.
//
// Several hosts share the device, so the target keeps them apart: a
// program slot belongs to the controller that loaded it and a memory range
// set to the controller that created it, until that controller unloads or
// deletes it or goes away (its admin connection closes), when the target
// deactivates, unloads and deletes what it still held. Another controller
// loading an owned slot gets Program Active (a host tries the next slot);
// activating, unloading or executing another's program, or using another's
// range set, is refused. Device memory is divided too: each memory namespace
// is cut into ComputeExport.Hosts equal parts, and a controller that uses
// the compute device claims a part (the same one of every memory namespace)
// on first use and keeps it until it goes. It sees the memory namespace as
// its part alone — Identify reports the part's size, its offsets are
// translated and bounded — so hosts never read or overwrite each other's
// memory. A controller that finds every part claimed sees memory
// namespaces of size 0 (a bpfblk host then scans on its own cores).

// ComputeDevice is the compute device a Target forwards CP and SLM commands
// to. NSIDs in what the target hands it are the device's.
type ComputeDevice interface {
	// Identify reads the device's Identify data (CNS cns of device
	// namespace nsid, command set csi) into b (4096 bytes).
	Identify(cns uint8, nsid uint32, csi uint8, b []byte) error
	// Admin runs an admin command on the device and waits for it; data,
	// if not nil, goes to the device. It returns the completion's DW0.
	Admin(sqe *nvme.SQE, data []byte) (uint32, error)
	// Open returns a channel for the calling worker goroutine.
	Open(depth int) (ComputeChannel, error)
}

// ComputeChannel moves one worker's CP and SLM I/O commands to the device.
type ComputeChannel interface {
	// Submit starts sqe (its CID and data pointer are the channel's to
	// set) with data: sent to the device when toDevice, filled from it
	// otherwise (nil: no data). done.Complete(tag, DW0|DW1<<32, err)
	// follows from Poll, never from inside Submit. ErrBusy asks the target
	// to retry later.
	Submit(sqe *nvme.SQE, data []byte, toDevice bool, done nvme.Completer, tag uint64) error
	// Poll completes finished commands and returns how many.
	Poll() int
	// Close releases the channel; no command is in flight.
	Close() error
}

// CopySource is how the compute device names an exported NVM namespace as
// a Memory Copy source: the namespace NSID of controller Controller (0: the
// device's own controller). Reach is false for a namespace the device
// cannot read (a bdev that is no NVMe namespace of its subsystem): a Memory
// Copy from it is handed to the channel as a host copy
// (ComputeExport.HostCopy), or else fails with Memory Namespace Not
// Reachable.
type CopySource struct {
	Controller uint16
	NSID       uint32
	Reach      bool
}

// ComputeExport describes the compute device a Target exports.
type ComputeExport struct {
	// Device runs the commands.
	Device ComputeDevice
	// CP is the device's NSID of its compute namespace.
	CP uint32
	// Memory are the device's NSIDs of its memory namespaces (at least one).
	Memory []uint32
	// MemorySizes are the bytes of each memory namespace.
	MemorySizes []uint64
	// Sources has one entry per exported NVM namespace (index NSID-1).
	Sources []CopySource
	// Hosts is how many controllers may use the device at once, each with
	// its part of every memory namespace (default 1).
	Hosts int
	// HostCopy says the channels carry out Memory Copies the device cannot:
	// a Memory Copy with a source out of the device's reach reaches the
	// channel with every source as HostCopyController and the exported
	// NSID (1..N), to be read through host memory and written to the
	// device.
	HostCopy bool
}

// HostCopyController marks the sources of a Memory Copy the channel
// carries out itself (ComputeExport.HostCopy).
const HostCopyController = 0xffff

// HostCopySources reports whether sqe with data is a host copy, and if so
// appends its sources (NSIDs exported ones, 1..N) to srcs[:0], as many as
// fit in srcs' capacity.
func HostCopySources(sqe *nvme.SQE, data []byte, srcs []nvme.MemCopySource) ([]nvme.MemCopySource, bool) {
	if sqe.OPC != nvme.OpMemCopy || len(data) < nvme.MemCopySourceSize || le.Uint16(data[cpwire.CopyController:]) != HostCopyController {
		return srcs[:0], false
	}
	srcs = srcs[:0]
	for off := 0; off+nvme.MemCopySourceSize <= len(data) && len(srcs) < cap(srcs); off += nvme.MemCopySourceSize {
		d := data[off:]
		srcs = append(srcs, nvme.MemCopySource{Controller: le.Uint16(d[cpwire.CopyController:]), NSID: le.Uint32(d[cpwire.CopyNSID:]),
			LBA: le.Uint64(d[cpwire.CopyLBA:]), Blocks: uint32(le.Uint16(d[cpwire.CopyBlocks:])) + 1})
	}
	return srcs, true
}

// Kinds of exported namespace.
const (
	nsNone = iota
	nsNVM
	nsCP
	nsMem
)

// tcompute is a Target's exported compute device.
type tcompute struct {
	exp ComputeExport
	cp  uint32 // the NSID hosts see for the compute namespace

	mu  sync.Mutex             // admin commands and owner changes
	own atomic.Pointer[owners] // read on the I/O path without a lock

	chans []*wcompute // by worker ID; only that worker touches its entry
}

// wcompute is one worker's way to the device, on cache lines of its own.
type wcompute struct {
	ch   ComputeChannel
	sqe  nvme.SQE            // the command being handed over
	desc [nvme.PageSize]byte // its Memory Copy sources, translated
	_    [64]byte
}

// part returns the part of device memory controller c uses, claiming a
// free one on first use, or -1 when every part is claimed. Caller holds mu
// if locked.
func (cp *tcompute) part(c *tctrl, locked bool) int {
	if p, ok := cp.own.Load().parts[c]; ok {
		return p
	}
	if !locked {
		cp.mu.Lock()
		defer cp.mu.Unlock()
	}
	own := cp.own.Load()
	if p, ok := own.parts[c]; ok {
		return p
	}
	used := make([]bool, cp.exp.Hosts)
	for _, p := range own.parts {
		used[p] = true
	}
	for p, u := range used {
		if !u {
			n := own.clone()
			n.parts[c] = p
			cp.own.Store(n)
			return p
		}
	}
	return -1
}

// window returns where part p of memory namespace mi lies in the device's
// memory namespace: the base offset and the size (0 for no part).
func (cp *tcompute) window(p, mi int) (base, size uint64) {
	if p < 0 {
		return 0, 0
	}
	size = cp.exp.MemorySizes[mi] / uint64(cp.exp.Hosts) &^ 4095
	return uint64(p) * size, size
}

// inWindow translates n bytes at host offset off of memory namespace mi
// for controller c to the device's offset; false if they leave c's part.
func (cp *tcompute) inWindow(c *tctrl, mi int, off, n uint64, locked bool) (uint64, bool) {
	base, size := cp.window(cp.part(c, locked), mi)
	if size == 0 || off > size || n > size-off {
		return 0, false
	}
	return base + off, true
}

// owners records which controller holds each program slot, memory range
// set and part of device memory. It is read-mostly: replaced whole, under
// mu, when it changes.
type owners struct {
	slots map[uint16]*tctrl
	sets  map[uint16]*tctrl
	parts map[*tctrl]int
}

// clone returns a copy of o.
func (o *owners) clone() *owners {
	n := &owners{slots: make(map[uint16]*tctrl, len(o.slots)+1), sets: make(map[uint16]*tctrl, len(o.sets)+1),
		parts: make(map[*tctrl]int, len(o.parts)+1)}
	for k, v := range o.slots {
		n.slots[k] = v
	}
	for k, v := range o.sets {
		n.sets[k] = v
	}
	for k, v := range o.parts {
		n.parts[k] = v
	}
	return n
}

// with returns a copy of o with the slot (or set) owned by c (nil: freed).
func (o *owners) with(slot bool, id uint16, c *tctrl) *owners {
	n := o.clone()
	m := n.sets
	if slot {
		m = n.slots
	}
	if c == nil {
		delete(m, id)
	} else {
		m[id] = c
	}
	return n
}

// initCompute checks the exported compute device, if any.
func (t *Target) initCompute() error {
	e := t.cfg.Compute
	if e == nil {
		return nil
	}
	if e.Device == nil || len(e.Memory) == 0 {
		return errors.New("nvme/tcp: compute export without a device or memory namespaces")
	}
	if len(e.MemorySizes) != len(e.Memory) {
		return errors.Errorf("nvme/tcp: compute export has %d sizes for %d memory namespaces", len(e.MemorySizes), len(e.Memory))
	}
	if len(e.Sources) != len(t.cfg.Namespaces) {
		return errors.Errorf("nvme/tcp: compute export has %d copy sources for %d namespaces", len(e.Sources), len(t.cfg.Namespaces))
	}
	if len(t.cfg.Namespaces)+1+len(e.Memory) > 1024 {
		return errors.Errorf("nvme/tcp: %d namespaces with the compute device's: more than one namespace list holds", len(t.cfg.Namespaces)+1+len(e.Memory))
	}
	cp := &tcompute{exp: *e, cp: uint32(len(t.cfg.Namespaces) + 1), chans: make([]*wcompute, t.cfg.Workers)}
	cp.exp.Memory = append([]uint32(nil), e.Memory...)
	cp.exp.MemorySizes = append([]uint64(nil), e.MemorySizes...)
	cp.exp.Sources = append([]CopySource(nil), e.Sources...)
	if cp.exp.Hosts <= 0 {
		cp.exp.Hosts = 1
	}
	if cp.exp.Hosts > 1024 {
		return errors.Errorf("nvme/tcp: compute export for %d hosts (at most 1024)", cp.exp.Hosts)
	}
	cp.own.Store(&owners{slots: map[uint16]*tctrl{}, sets: map[uint16]*tctrl{}, parts: map[*tctrl]int{}})
	t.cp = cp
	return nil
}

// nsCount is the number of namespaces the subsystem exports.
func (t *Target) nsCount() int {
	n := len(t.cfg.Namespaces)
	if t.cp != nil {
		n += 1 + len(t.cp.exp.Memory)
	}
	return n
}

// css is the CAP.CSS field: NVM, and the I/O command sets when a compute
// device is exported.
func (t *Target) css() uint64 {
	if t.cp != nil {
		return nvme.CSSNVM | nvme.CSSIOSets
	}
	return nvme.CSSNVM
}

// nsKind says what namespace nsid is, and for a memory namespace its index.
func (t *Target) nsKind(nsid uint32) (int, int) {
	n := uint32(len(t.cfg.Namespaces))
	switch {
	case nsid == 0:
		return nsNone, 0
	case nsid <= n:
		return nsNVM, int(nsid - 1)
	case t.cp == nil:
		return nsNone, 0
	case nsid == t.cp.cp:
		return nsCP, 0
	case nsid-t.cp.cp <= uint32(len(t.cp.exp.Memory)):
		return nsMem, int(nsid - t.cp.cp - 1)
	}
	return nsNone, 0
}

// identifyCompute answers the Identify CNS values that depend on the
// exported compute device; handled is false for the others (and for every
// CNS when no device is exported).
func (q *tqueue) identifyCompute(cns uint8, nsid uint32, csi uint8, b []byte) (handled bool, status uint16) {
	t := q.w.t
	cp := t.cp
	if cp == nil || q.ctrl.discovery {
		return false, 0
	}
	invalid := statusField(0, scInvalidField)
	switch cns {
	case nvme.CNSIOCommandSetData:
		le.PutUint64(b, 1<<nvme.CSINVM|1<<nvme.CSISLM|1<<nvme.CSICP)
	case nvme.CNSCSIController:
		if csi != nvme.CSINVM && csi != nvme.CSISLM && csi != nvme.CSICP {
			return true, invalid
		}
	case nvme.CNSNSDescList:
		var set uint8 // the namespace's command set
		switch kind, _ := t.nsKind(nsid); kind {
		case nsNVM:
			set = nvme.CSINVM
		case nsCP:
			set = nvme.CSICP
		case nsMem:
			set = nvme.CSISLM
		default:
			return true, invalid
		}
		g := q.nguid(nsid)
		b[0], b[1] = nvme.NSDescTypeNGUID, 16
		copy(b[4:20], g[:])
		b[20], b[21] = nvme.NSDescTypeCSI, 1
		b[24] = set
	case nvme.CNSCSINamespace:
		kind, i := t.nsKind(nsid)
		var dev uint32
		switch {
		case kind == nsNVM && csi == nvme.CSINVM:
			return true, 0 // no NVM command set specific fields
		case kind == nsCP && csi == nvme.CSICP:
			dev = cp.exp.CP
		case kind == nsMem && csi == nvme.CSISLM:
			dev = cp.exp.Memory[i]
		default:
			return true, invalid
		}
		cp.mu.Lock()
		defer cp.mu.Unlock()
		if err := cp.exp.Device.Identify(cns, dev, csi, b); err != nil {
			return true, errStatus(err)
		}
		if kind == nsMem {
			// The host sees its part of the memory namespace.
			_, size := cp.window(cp.part(q.ctrl, true), i)
			le.PutUint64(b[cpwire.SLMISize:], size)
		}
		return true, 0
	default:
		return false, 0
	}
	return true, 0
}

// computeAdmin forwards Load Program, Program Activation Management and
// Memory Range Set Management to the compute device, keeping track of who
// owns what.
func (q *tqueue) computeAdmin(slot uint16) {
	cmd := &q.cmds[slot]
	cp := q.w.t.cp
	c := q.ctrl
	if cp == nil || c.discovery {
		q.respond(slot, 0, statusField(0, scInvalidOpcode))
		return
	}
	e, _ := nvme.ParseSQE(cmd.sqe[:])
	if e.NSID != cp.cp {
		q.respond(slot, 0, errStatus(nvme.ErrInvalidNamespace))
		return
	}
	e.NSID, e.CID, e.PRP1, e.PRP2, e.Flags = cp.exp.CP, 0, 0, 0, 0
	var data []byte
	if cmd.n > 0 && !cmd.c2h {
		data = cmd.buf[:cmd.n]
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	// own is for reading: a part claimed below replaces the table, so
	// changes start from cp.own.Load().
	own := cp.own.Load()
	dev := cp.exp.Device
	var dw0 uint32
	var err error
	switch e.OPC {
	case nvme.AdminLoadProgram:
		ps := uint16(e.CDW10)
		if o := own.slots[ps]; o != nil && o != c {
			err = nvme.ErrProgramActive // another host's: try the next slot
			break
		}
		unload := e.CDW10>>24&1 == nvme.LoadSelUnload
		if dw0, err = dev.Admin(&e, data); err == nil {
			owner := c
			if unload {
				owner = nil
			}
			cp.own.Store(cp.own.Load().with(true, ps, owner))
		}
	case nvme.AdminProgActMgmt:
		if own.slots[uint16(e.CDW10)] != c {
			err = nvme.ErrInvalidProgramIndex
			break
		}
		dw0, err = dev.Admin(&e, data)
	case nvme.AdminMemRangeSetMg:
		switch e.CDW10 & 0xf {
		case nvme.RangeSetSelDelete:
			rs := uint16(e.CDW10 >> 16)
			if own.sets[rs] != c {
				err = nvme.ErrInvalidRangeSet
				break
			}
			if dw0, err = dev.Admin(&e, data); err == nil {
				cp.own.Store(cp.own.Load().with(false, rs, nil))
			}
		case nvme.RangeSetSelCreate:
			n := int(e.CDW11&0xff) + 1
			if len(data) < n*nvme.MemRangeSize {
				q.respond(slot, 0, statusField(0, scSGLLengthInval))
				return
			}
			for i := 0; i < n; i++ {
				d := data[i*nvme.MemRangeSize:]
				kind, mi := q.w.t.nsKind(le.Uint32(d[cpwire.RangeNSID:]))
				if kind != nsMem {
					err = nvme.ErrMemoryUnreachable
					break
				}
				off, ok := cp.inWindow(c, mi, le.Uint64(d[cpwire.RangeOffset:]), uint64(le.Uint32(d[cpwire.RangeLength:])), true)
				if !ok {
					err = nvme.ErrInvalidField // outside the host's memory
					break
				}
				le.PutUint32(d[cpwire.RangeNSID:], cp.exp.Memory[mi])
				le.PutUint64(d[cpwire.RangeOffset:], off)
			}
			if err != nil {
				break
			}
			if dw0, err = dev.Admin(&e, data[:n*nvme.MemRangeSize]); err == nil {
				cp.own.Store(cp.own.Load().with(false, uint16(dw0), c))
			}
		default:
			err = nvme.ErrInvalidField
		}
	default:
		err = nvme.ErrInvalidOpcode
	}
	q.respond(slot, dw0, errStatus(err))
}

// releaseCompute deletes the range sets and unloads the programs that
// controller c still holds on the compute device; it runs when c goes.
func (t *Target) releaseCompute(c *tctrl) {
	cp := t.cp
	if cp == nil {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	own := cp.own.Load()
	for rs, o := range own.sets {
		if o == c {
			e := nvme.SQE{OPC: nvme.AdminMemRangeSetMg, NSID: cp.exp.CP, CDW10: nvme.RangeSetSelDelete | uint32(rs)<<16}
			cp.exp.Device.Admin(&e, nil) // gone already is as good
			own = own.with(false, rs, nil)
		}
	}
	for ps, o := range own.slots {
		if o == c {
			e := nvme.SQE{OPC: nvme.AdminProgActMgmt, NSID: cp.exp.CP, CDW10: uint32(ps) | nvme.ProgSelDeactivate<<16}
			cp.exp.Device.Admin(&e, nil) // not active is as good
			e = nvme.SQE{OPC: nvme.AdminLoadProgram, NSID: cp.exp.CP, CDW10: uint32(ps) | nvme.LoadSelUnload<<24}
			cp.exp.Device.Admin(&e, nil)
			own = own.with(true, ps, nil)
		}
	}
	if _, ok := own.parts[c]; ok {
		own = own.clone()
		delete(own.parts, c)
	}
	cp.own.Store(own)
}

// submitCompute hands a CP or SLM I/O command to the worker's compute
// channel, with NSIDs and memory offsets translated to the device's. The
// command's own bytes stay as the host sent them, so that a retry
// translates them again.
func (q *tqueue) submitCompute(slot uint16, kind, mi int) {
	cmd := &q.cmds[slot]
	cp := q.w.t.cp
	wc, err := q.w.computeChannel()
	if err != nil {
		q.respond(slot, 0, statusField(0, scInternal))
		return
	}
	e := &wc.sqe
	*e, _ = nvme.ParseSQE(cmd.sqe[:])
	var data []byte
	toDevice := false
	switch {
	case kind == nsCP && e.OPC == nvme.OpExecProgram:
		own := cp.own.Load()
		if own.slots[uint16(e.CDW2)] != q.ctrl {
			q.respond(slot, 0, errStatus(nvme.ErrProgramNotActive))
			return
		}
		if own.sets[uint16(e.CDW2>>16)] != q.ctrl {
			q.respond(slot, 0, errStatus(nvme.ErrInvalidRangeSet))
			return
		}
		e.NSID = cp.exp.CP
	case kind == nsMem:
		e.NSID = cp.exp.Memory[mi]
		off := uint64(e.CDW10) | uint64(e.CDW11)<<32
		var n uint64
		switch e.OPC {
		case nvme.OpMemRead, nvme.OpMemWrite:
			if cmd.n != int(e.CDW12) || cmd.n == 0 || cmd.c2h != (e.OPC == nvme.OpMemRead) {
				q.respond(slot, 0, statusField(0, scSGLLengthInval))
				return
			}
			data, toDevice, n = cmd.buf[:cmd.n], e.OPC == nvme.OpMemWrite, uint64(cmd.n)
		case nvme.OpMemFill:
			n = uint64(e.CDW12)
		case nvme.OpMemCopy:
			if e.CDW12>>8&0xf != nvme.MemCopyFormatLBA {
				q.respond(slot, 0, errStatus(nvme.ErrInvalidField))
				return
			}
			k := int(e.CDW12&0xff) + 1
			if k*nvme.MemCopySourceSize > len(wc.desc) {
				q.respond(slot, 0, errStatus(nvme.ErrInvalidField)) // more sources than a page holds
				return
			}
			if cmd.c2h || cmd.n < k*nvme.MemCopySourceSize {
				q.respond(slot, 0, statusField(0, scSGLLengthInval))
				return
			}
			data, toDevice = wc.desc[:k*nvme.MemCopySourceSize], true
			copy(data, cmd.buf)
			if n, err = q.copySources(data); err != nil {
				q.respond(slot, 0, errStatus(err))
				return
			}
		default:
			q.respond(slot, 0, statusField(0, scInvalidOpcode))
			return
		}
		dev, ok := cp.inWindow(q.ctrl, mi, off, n, false)
		if !ok {
			q.respond(slot, 0, errStatus(nvme.ErrInvalidField)) // outside the host's memory
			return
		}
		e.CDW10, e.CDW11 = uint32(dev), uint32(dev>>32)
	default:
		q.respond(slot, 0, statusField(0, scInvalidOpcode))
		return
	}
	e.CID, e.PRP1, e.PRP2, e.Flags = 0, 0, 0, 0
	err = wc.ch.Submit(e, data, toDevice, q, uint64(slot))
	switch {
	case err == nil:
		q.inflight++
		cmd.state = tExec
	case errors.Is(err, ErrBusy):
		if cmd.state != tRetry {
			cmd.state = tRetry
			q.work = append(q.work, slot)
		}
	default:
		q.respond(slot, 0, errStatus(err))
	}
}

// copySources rewrites Memory Copy source descriptors from the host's
// names of NVM namespaces (this controller, the target's NSIDs) to the
// device's, and returns the bytes they copy.
func (q *tqueue) copySources(d []byte) (uint64, error) {
	t := q.w.t
	var total uint64
	reach := true
	for off := 0; off < len(d); off += nvme.MemCopySourceSize {
		s := d[off:]
		if ctl := le.Uint16(s[cpwire.CopyController:]); ctl != 0 && ctl != q.ctrl.cntlid {
			return 0, nvme.ErrMemoryUnreachable // a controller of another subsystem
		}
		kind, i := t.nsKind(le.Uint32(s[cpwire.CopyNSID:]))
		if kind != nsNVM {
			return 0, nvme.ErrInvalidNamespace
		}
		reach = reach && t.cp.exp.Sources[i].Reach
		total += (uint64(le.Uint16(s[cpwire.CopyBlocks:])) + 1) * uint64(t.cfg.Namespaces[i].BlockSize())
	}
	if !reach && !t.cp.exp.HostCopy {
		return 0, nvme.ErrMemoryUnreachable
	}
	for off := 0; off < len(d); off += nvme.MemCopySourceSize {
		s := d[off:]
		if !reach {
			le.PutUint16(s[cpwire.CopyController:], HostCopyController) // the exported NSID stays
			continue
		}
		src := t.cp.exp.Sources[nsIndex(le.Uint32(s[cpwire.CopyNSID:]))]
		le.PutUint16(s[cpwire.CopyController:], src.Controller)
		le.PutUint32(s[cpwire.CopyNSID:], src.NSID)
	}
	return total, nil
}

// nsIndex is the index of NVM namespace nsid (checked by nsKind).
func nsIndex(nsid uint32) int { return int(nsid) - 1 }

// computeChannel returns the worker's channel to the compute device,
// opening it on first use.
func (w *Worker) computeChannel() (*wcompute, error) {
	cp := w.t.cp
	if cp.chans[w.id] == nil {
		ch, err := cp.exp.Device.Open(4 * w.t.cfg.MaxQueueDepth)
		if err != nil {
			return nil, err
		}
		cp.chans[w.id] = &wcompute{ch: ch}
	}
	return cp.chans[w.id], nil
}

// pollCompute polls the worker's compute channel.
func (w *Worker) pollCompute() int {
	if cp := w.t.cp; cp != nil && cp.chans[w.id] != nil {
		return cp.chans[w.id].ch.Poll()
	}
	return 0
}

// closeCompute closes the worker's compute channel.
func (w *Worker) closeCompute() {
	if cp := w.t.cp; cp != nil && cp.chans[w.id] != nil {
		cp.chans[w.id].ch.Close()
		cp.chans[w.id] = nil
	}
}
