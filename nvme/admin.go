package nvme

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pkg/errors"
)

// adminQueue is the admin SQ/CQ pair. It is used synchronously, one command
// at a time, under Controller.adminMu.
type adminQueue struct {
	sq, cq      *DMA
	depth       uint16
	tail, head  uint16
	sqHead      uint16
	phase       uint32
	cid         uint16
	sqDB, cqDB  uint32
	outstanding int // commands that timed out and were never completed
}

func (a *adminQueue) alloc(t Transport, depth int, dstrd uint8) error {
	var err error
	if a.sq, err = t.AllocDMA(depth * SQESize); err != nil {
		return err
	}
	if a.cq, err = t.AllocDMA(depth * CQESize); err != nil {
		t.FreeDMA(a.sq)
		return err
	}
	a.depth = uint16(depth)
	a.sqDB = DoorbellOffset(0, false, dstrd)
	a.cqDB = DoorbellOffset(0, true, dstrd)
	return nil
}

func (a *adminQueue) free(t Transport) {
	t.FreeDMA(a.sq)
	t.FreeDMA(a.cq)
}

func (a *adminQueue) reset() {
	clear(a.sq.Buf)
	for i := 0; i+4 <= len(a.cq.Buf); i += 4 {
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&a.cq.Buf[i])), 0)
	}
	a.tail, a.head, a.sqHead, a.phase, a.outstanding = 0, 0, 0, 1, 0
}

// adminCmd submits sqe on the admin queue and waits for its completion.
// Caller holds adminMu.
func (c *Controller) adminCmd(sqe *SQE) (CQE, error) {
	a := &c.admin
	name := c.t.Name()
	if (a.tail+1)%a.depth == a.sqHead || a.outstanding >= int(a.depth)-2 {
		return CQE{}, errors.Wrapf(ErrQueueFull, "%s: admin queue full of unanswered commands", name)
	}
	a.cid++
	sqe.CID = a.cid
	sqe.MarshalTo(a.sq.Buf[int(a.tail)*SQESize:])
	a.tail = (a.tail + 1) % a.depth
	c.t.Write32(a.sqDB, uint32(a.tail))
	deadline := time.Now().Add(c.opts.AdminTimeout)
	for i := 0; ; i++ {
		off := int(a.head) * CQESize
		dw3 := atomic.LoadUint32((*uint32)(unsafe.Pointer(&a.cq.Buf[off+12])))
		if dw3>>16&1 == a.phase {
			cqe, _ := ParseCQE(a.cq.Buf[off:])
			a.head++
			if a.head == a.depth {
				a.head, a.phase = 0, a.phase^1
			}
			c.t.Write32(a.cqDB, uint32(a.head))
			if cqe.SQHD < a.depth {
				a.sqHead = cqe.SQHD
			}
			if cqe.CID != sqe.CID || cqe.SQID != 0 {
				// A late completion of a timed-out command, or garbage.
				if a.outstanding > 0 {
					a.outstanding--
				}
				continue
			}
			return cqe, cqe.Err()
		}
		if i&63 == 63 {
			now := time.Now()
			if csts := c.t.Read32(RegCSTS); csts == CSTSUnreachable || csts&CSTSFatal != 0 {
				// Not counted as outstanding: a controller with fatal
				// status answers nothing until it is reset, and the reset
				// (see AdminCommand) starts the admin queue afresh.
				return CQE{}, errors.Wrapf(errFatalStatus{csts}, "%s: admin opcode %#x", name, sqe.OPC)
			}
			if now.After(deadline) {
				a.outstanding++
				return CQE{}, errors.Wrapf(ErrTimeout, "%s: admin opcode %#x after %v", name, sqe.OPC, c.opts.AdminTimeout)
			}
		}
		if i < 256 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// AdminCommand submits one admin command and waits for its completion (bounded
// by Options.AdminTimeout). data, if not nil, is the command's data buffer of
// at most MaxAdminData bytes: when toDevice it is sent to the controller, otherwise the
// controller's data is copied into it. The driver fills CID and PRPs. It is
// the building block for command sets the driver does not wrap (e.g. the
// Computational Programs admin commands).
func (c *Controller) AdminCommand(sqe *SQE, data []byte, toDevice bool) (CQE, error) {
	if len(data) > MaxAdminData {
		return CQE{}, errors.Errorf("%s: admin data of %d bytes exceeds %d", c.t.Name(), len(data), MaxAdminData)
	}
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	if s := c.state.Load(); s != stateOK {
		return CQE{}, c.stateErr(s)
	}
	// A controller that reports fatal status (it may have done so while
	// idle) or whose admin queue filled up with commands it never answered
	// is reset first: the command then runs on a fresh admin queue.
	if err := c.recoverLocked(); err != nil {
		return CQE{}, err
	}
	cmd := *sqe
	if data != nil {
		if toDevice {
			copy(c.abuf.Buf, data)
		} else {
			clear(c.abuf.Buf[:len(data)])
		}
		cmd.PRP1, cmd.PRP2 = c.adminPRPs(len(data))
	}
	cqe, err := c.adminCmd(&cmd)
	if err == nil && data != nil && !toDevice {
		copy(data, c.abuf.Buf)
	}
	if errors.As(err, &errFatalStatus{}) {
		// The command failed because the controller did: reset it now, so
		// that the next command (and the queue pairs) find it working.
		if rerr := c.resetLocked(); rerr != nil {
			return cqe, errors.Wrapf(err, "reset failed: %v", rerr)
		}
		return cqe, errors.Wrap(err, "controller reset")
	}
	if data != nil && errors.Is(err, ErrTimeout) {
		// The controller may still DMA into the buffer later: retire it
		// (until Close) and use a fresh one for the next command.
		if nb, aerr := c.t.AllocDMA(adminBufSize + PageSize); aerr == nil {
			c.retired = append(c.retired, c.abuf)
			c.abuf = nb
		}
	}
	return cqe, err
}

// MaxAdminData is the largest data buffer of one admin command.
const MaxAdminData = adminBufSize

// adminPRPs builds PRPs for n bytes at the start of the admin buffer; the PRP
// list for transfers over two pages sits in the page after the data.
func (c *Controller) adminPRPs(n int) (uint64, uint64) {
	base := c.abuf.IOVA
	switch {
	case n <= PageSize:
		return base, 0
	case n <= 2*PageSize:
		return base, base + PageSize
	}
	listOff := adminBufSize
	pages := (n + PageSize - 1) / PageSize
	for i := 1; i < pages; i++ {
		le.PutUint64(c.abuf.Buf[listOff+8*(i-1):], base+uint64(i*PageSize))
	}
	return base, base + uint64(listOff)
}

// errFatalStatus is an admin command's failure on a controller that reports
// CSTS.CFS or reads as all ones; it matches ErrControllerFatal.
type errFatalStatus struct{ csts uint32 }

// Error names the status register.
func (e errFatalStatus) Error() string {
	return fmt.Sprintf("nvme: controller fatal status (CSTS %#x)", e.csts)
}

// Is matches ErrControllerFatal.
func (e errFatalStatus) Is(target error) bool { return target == ErrControllerFatal }

// fatalStatus reports whether CSTS says the controller needs a reset: fatal
// status, or all ones (unreachable, which a reset then reports as failed).
func (c *Controller) fatalStatus() (uint32, bool) {
	csts := c.t.Read32(RegCSTS)
	return csts, csts == CSTSUnreachable || csts&CSTSFatal != 0
}

// recoverLocked resets a working controller that reports fatal status or
// whose admin queue is full of commands it never answered. Caller holds
// adminMu.
func (c *Controller) recoverLocked() error {
	if c.state.Load() != stateOK {
		return nil
	}
	a := &c.admin
	csts, fatal := c.fatalStatus()
	if !fatal && a.outstanding < int(a.depth)-2 {
		return nil
	}
	if err := c.resetLocked(); err != nil {
		if fatal {
			return errors.Wrapf(err, "%s: recovery from fatal status (CSTS %#x)", c.t.Name(), csts)
		}
		return errors.Wrapf(err, "%s: recovery from %d unanswered admin commands", c.t.Name(), a.outstanding)
	}
	return nil
}

// Check is the controller's health check, for whoever polls an idle
// controller (every queue pair's timeout scan does the same on its own):
// a controller that reports fatal status (CSTS.CFS) is reset. It returns an
// error if the reset fails (the controller is then Failed) or the controller
// is closed or failed already.
func (c *Controller) Check() error {
	if s := c.state.Load(); s != stateOK {
		return c.stateErr(s)
	}
	if _, fatal := c.fatalStatus(); !fatal {
		return nil
	}
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	if s := c.state.Load(); s != stateOK {
		return c.stateErr(s)
	}
	return c.recoverLocked()
}

func (c *Controller) stateErr(s int32) error {
	if s == stateClosed {
		return errors.Wrapf(ErrClosed, "%s", c.t.Name())
	}
	return errors.Wrapf(ErrControllerFatal, "%s: controller failed", c.t.Name())
}

// Identify issues Identify with the given CNS, NSID, controller ID and CSI and
// returns the 4096-byte data structure.
func (c *Controller) Identify(cns uint8, nsid uint32, cntid uint16, csi uint8) ([]byte, error) {
	buf := make([]byte, IdentifyDataSize)
	sqe := SQE{OPC: AdminIdentify, NSID: nsid, CDW10: uint32(cns) | uint32(cntid)<<16, CDW11: uint32(csi) << 24}
	if _, err := c.AdminCommand(&sqe, buf, false); err != nil {
		return nil, err
	}
	return buf, nil
}

// SetFeatures sets feature fid (CDW11 = value) and returns CQE DW0.
func (c *Controller) SetFeatures(fid uint8, nsid uint32, value uint32) (uint32, error) {
	sqe := SQE{OPC: AdminSetFeatures, NSID: nsid, CDW10: uint32(fid), CDW11: value}
	cqe, err := c.AdminCommand(&sqe, nil, false)
	return cqe.DW0, err
}

// GetFeatures reads the current value of feature fid (CQE DW0).
func (c *Controller) GetFeatures(fid uint8, nsid uint32, cdw11 uint32) (uint32, error) {
	sqe := SQE{OPC: AdminGetFeatures, NSID: nsid, CDW10: uint32(fid), CDW11: cdw11}
	cqe, err := c.AdminCommand(&sqe, nil, false)
	return cqe.DW0, err
}

// GetLogPage reads n bytes (a multiple of 4, at most MaxAdminData) of log page lid
// for nsid starting at byte offset off.
func (c *Controller) GetLogPage(lid uint8, nsid uint32, off uint64, n int) ([]byte, error) {
	if n <= 0 || n%4 != 0 || n > MaxAdminData {
		return nil, errors.Errorf("%s: get log page %#x: length %d must be a positive multiple of 4 up to %d", c.t.Name(), lid, n, MaxAdminData)
	}
	numd := uint32(n/4 - 1)
	sqe := SQE{OPC: AdminGetLogPage, NSID: nsid,
		CDW10: uint32(lid) | (numd&0xffff)<<16, CDW11: numd >> 16,
		CDW12: uint32(off), CDW13: uint32(off >> 32)}
	buf := make([]byte, n)
	if _, err := c.AdminCommand(&sqe, buf, false); err != nil {
		return nil, errors.Wrapf(err, "get log page %#x", lid)
	}
	return buf, nil
}

// SMART reads the controller-wide SMART / Health Information log page.
func (c *Controller) SMART() (*SMARTLog, error) {
	b, err := c.GetLogPage(LogSMART, NSIDBroadcast, 0, SMARTLogSize)
	if err != nil {
		return nil, err
	}
	return ParseSMARTLog(b)
}

// ErrorLog reads the Error Information log page (all ELPE+1 entries, at most
// MaxAdminData bytes) and returns the used entries.
func (c *Controller) ErrorLog() ([]ErrorLogEntry, error) {
	n := (int(c.ident.ELPE) + 1) * ErrorLogEntrySize
	n = min(n, MaxAdminData)
	b, err := c.GetLogPage(LogErrorInfo, 0, 0, n)
	if err != nil {
		return nil, err
	}
	return ParseErrorLog(b)
}

// abort issues Abort for (sqid, cid) and reports whether the controller says
// it aborted the command (CQE DW0 bit 0 clear).
func (c *Controller) abort(sqid, cid uint16) (bool, error) {
	sqe := SQE{OPC: AdminAbort, CDW10: uint32(sqid) | uint32(cid)<<16}
	cqe, err := c.AdminCommand(&sqe, nil, false)
	if err != nil {
		return false, err
	}
	return cqe.DW0&1 == 0, nil
}

// Reset performs a controller reset: CC.EN cleared and set again, the admin
// queue recreated and the number of queues negotiated again. Every queue
// pair notices the reset on its next Process or submission, completes all its
// outstanding commands with ErrReset (ErrTimeout for those that timed out) and
// recreates its queues. If the controller cannot be brought back it is marked
// failed and commands complete with ErrControllerFatal.
func (c *Controller) Reset() error {
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	return c.resetLocked()
}

func (c *Controller) resetLocked() error {
	if s := c.state.Load(); s == stateClosed {
		return c.stateErr(s)
	}
	c.gen.Add(1)
	c.resets.Add(1)
	err := c.bringUp()
	if err == nil && c.iocsIndex >= 0 {
		sqe := SQE{OPC: AdminSetFeatures, CDW10: FeatIOCSProfile, CDW11: uint32(c.iocsIndex)}
		_, err = c.adminCmd(&sqe)
	}
	if err == nil {
		n := uint32(c.ioQueues - 1)
		sqe := SQE{OPC: AdminSetFeatures, CDW10: FeatNumQueues, CDW11: n<<16 | n}
		_, err = c.adminCmd(&sqe)
	}
	if err == nil && c.cmb != nil && c.cap.CMBS() {
		c.t.Write64(RegCMBMSC, CMBMSCCRE)
		c.t.Write64(RegCMBMSC, c.cmb.IOVA&^0xfff|CMBMSCCMSE|CMBMSCCRE)
	}
	if err != nil {
		c.state.CompareAndSwap(stateOK, stateFatal)
		return errors.Wrapf(err, "%s: reset", c.t.Name())
	}
	c.state.CompareAndSwap(stateFatal, stateOK)
	return nil
}

// createQueues creates the I/O CQ and SQ of q on the controller. Caller holds
// adminMu.
func (c *Controller) createQueues(q *QueuePair) error {
	qs := uint32(q.depth-1) << 16
	cq := SQE{OPC: AdminCreateCQ, PRP1: q.cq.IOVA, CDW10: qs | uint32(q.qid), CDW11: 1}
	if _, err := c.adminCmd(&cq); err != nil {
		return errors.Wrapf(err, "%s: create I/O CQ %d", c.t.Name(), q.qid)
	}
	sq := SQE{OPC: AdminCreateSQ, PRP1: q.sq.IOVA, CDW10: qs | uint32(q.qid), CDW11: uint32(q.qid)<<16 | 1}
	if _, err := c.adminCmd(&sq); err != nil {
		del := SQE{OPC: AdminDeleteCQ, CDW10: uint32(q.qid)}
		c.adminCmd(&del)
		return errors.Wrapf(err, "%s: create I/O SQ %d", c.t.Name(), q.qid)
	}
	return nil
}

// deleteQueues deletes the SQ then the CQ of q. Caller holds adminMu.
func (c *Controller) deleteQueues(q *QueuePair) error {
	sq := SQE{OPC: AdminDeleteSQ, CDW10: uint32(q.qid)}
	_, err1 := c.adminCmd(&sq)
	cq := SQE{OPC: AdminDeleteCQ, CDW10: uint32(q.qid)}
	_, err2 := c.adminCmd(&cq)
	if err1 != nil {
		return errors.Wrapf(err1, "%s: delete I/O SQ %d", c.t.Name(), q.qid)
	}
	return errors.Wrapf(err2, "%s: delete I/O CQ %d", c.t.Name(), q.qid)
}
