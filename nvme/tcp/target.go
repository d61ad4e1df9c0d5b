package tcp

import (
	"crypto/sha256"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
	"github.com/pkg/errors"
)

// Namespace is a namespace a Target exports. The target declares what it
// needs; package nvmf adapts bdevs to it.
type Namespace interface {
	// BlockSize is the logical block size in bytes (512 or 4096 ...).
	BlockSize() int
	// NumBlocks is the capacity in logical blocks.
	NumBlocks() uint64
	// Open returns a channel for the calling worker goroutine.
	Open(depth int) (NSChannel, error)
}

// NSChannel moves one worker's I/O to a namespace.
type NSChannel interface {
	// Submit starts an NVM Read, Write, Flush or Write Zeroes (nvme.OpRead,
	// ...) of blocks at lba with buf as the data; done.Complete(tag, 0, err)
	// follows from Poll, never from inside Submit. ErrBusy asks the target
	// to retry later.
	Submit(op uint8, lba uint64, blocks uint32, buf []byte, done nvme.Completer, tag uint64) error
	// Poll completes finished I/O and returns how many.
	Poll() int
	// Close releases the channel; no I/O is in flight.
	Close() error
}

// ErrBusy is what an NSChannel's Submit returns when it is full.
var ErrBusy = errors.New("nvme/tcp: namespace channel busy")

// TargetConfig describes the subsystem a Target exports.
type TargetConfig struct {
	// NQN names the subsystem (default "nqn.2024-01.io.bpfblk:subsystem").
	NQN string
	// Namespaces are exported with NSIDs 1, 2, ... in order.
	Namespaces []Namespace
	// Workers is the number of polling workers (one per core; default 1).
	Workers int
	// MaxQueueDepth caps every queue's entries (default and upper bound 128).
	MaxQueueDepth int
	// MaxIOQueues is the number of I/O queues a controller may have (default 64).
	MaxIOQueues int
	// Serial and Model fill Identify Controller.
	Serial, Model string
	// Addr and Port are reported in discovery log entries (default: the
	// listener's address).
	Addr, Port string
	// Compute, if not nil, exports a compute device's compute and memory
	// namespaces after the NVM ones (target_compute.go).
	Compute *ComputeExport
	// MaxH2CData is the largest H2CData PDU the target accepts (ICResp
	// MAXH2CDATA) and the most data one R2T asks for: a larger write is
	// fetched with several R2Ts, as many outstanding at once as the host's
	// MAXR2T allows (at most 8). Default and upper bound 128 KiB, the
	// largest transfer; at least 4 KiB.
	MaxH2CData int
	// Log, if set, is told (from a worker goroutine) about each association
	// the target tears down on its own, such as a host that stopped sending
	// within its Keep Alive Timeout.
	Log func(error)
}

const (
	tgtMDTS     = 5 // 128 KiB transfers
	tgtMaxXfer  = nvme.PageSize << tgtMDTS
	tgtInCap    = 16 << 10 // in-capsule data on I/O queues
	tgtMaxH2C   = 128 << 10
	tgtMaxR2T   = 8 // R2Ts outstanding per command, at most (TTag = slot<<3 | index)
	tgtRxBuf    = 256 << 10
	tgtTxBuf    = 512 << 10
	maxAER      = 4
	tgtAdminBuf = 64 << 10
)

// Target is an NVMe/TCP target: a subsystem of namespaces and its discovery
// controller behind one listener. Connections are spread over workers;
// each worker is polled by one goroutine (one per core), owns its
// connections and its namespace channels, and shares nothing per I/O.
type Target struct {
	cfg     TargetConfig
	workers []*Worker
	ln      net.Listener
	next    atomic.Uint32 // round-robin of connections over workers

	mu     sync.Mutex // controllers: connect and disconnect only
	ctrls  map[uint16]*tctrl
	cntlid uint16
	closed atomic.Bool
	wg     sync.WaitGroup
	stop   chan struct{}
	cp     *tcompute // the exported compute device, or nil

	sleepIdle bool // Run's workers never sleep on their sockets (benchmark baseline)
}

// NewTarget prepares a target; Serve accepts connections and the workers
// must be polled (Run does both on goroutines of its own).
func NewTarget(cfg TargetConfig) (*Target, error) {
	if cfg.NQN == "" {
		cfg.NQN = "nqn.2024-01.io.bpfblk:subsystem"
	}
	if len(cfg.NQN) > 223 {
		return nil, errors.Errorf("nvme/tcp: NQN of %d bytes is over 223", len(cfg.NQN))
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.MaxQueueDepth <= 1 || cfg.MaxQueueDepth > 128 {
		cfg.MaxQueueDepth = 128
	}
	if cfg.MaxH2CData <= 0 || cfg.MaxH2CData > tgtMaxH2C {
		cfg.MaxH2CData = tgtMaxH2C
	}
	cfg.MaxH2CData = max(cfg.MaxH2CData, 4096)
	if cfg.MaxIOQueues <= 0 || cfg.MaxIOQueues > maxQID {
		cfg.MaxIOQueues = 64
	}
	if cfg.Serial == "" {
		cfg.Serial = "BPFBLKTCP"
	}
	if cfg.Model == "" {
		cfg.Model = "bpfblk NVMe/TCP target"
	}
	for i, ns := range cfg.Namespaces {
		bs := ns.BlockSize()
		if bs < 512 || bs&(bs-1) != 0 || bs > tgtMaxXfer || ns.NumBlocks() == 0 {
			return nil, errors.Errorf("nvme/tcp: namespace %d: block size %d, %d blocks", i+1, bs, ns.NumBlocks())
		}
	}
	t := &Target{cfg: cfg, ctrls: map[uint16]*tctrl{}, stop: make(chan struct{})}
	if err := t.initCompute(); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.Workers; i++ {
		t.workers = append(t.workers, &Worker{t: t, id: i, chans: make([]NSChannel, len(cfg.Namespaces))})
	}
	return t, nil
}

// NQN returns the subsystem NQN.
func (t *Target) NQN() string { return t.cfg.NQN }

// Workers returns the workers; each must be polled by one goroutine.
func (t *Target) Workers() []*Worker { return t.workers }

// Serve accepts connections on ln until ln is closed or Close is called,
// handing each to a worker.
func (t *Target) Serve(ln net.Listener) error {
	t.mu.Lock()
	t.ln = ln
	t.mu.Unlock()
	if t.cfg.Addr == "" {
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			t.cfg.Addr, t.cfg.Port = a.IP.String(), fmt.Sprint(a.Port)
		}
	}
	for {
		nc, err := ln.Accept()
		if err != nil {
			if t.closed.Load() {
				return nil
			}
			return errors.Wrap(err, "nvme/tcp: accept")
		}
		w := t.workers[int(t.next.Add(1)-1)%len(t.workers)]
		w.mu.Lock()
		w.incoming = append(w.incoming, nc.(*net.TCPConn))
		w.nIncoming.Store(int32(len(w.incoming)))
		w.mu.Unlock()
		w.wt.kick()
	}
}

// Run serves ln and polls every worker on a goroutine of its own, locked
// to an OS thread, until Close. A worker that finds nothing to do for a few
// polls, with no I/O in progress, sleeps until one of its sockets is
// readable; one waiting for its namespaces backs off to short sleeps.
func (t *Target) Run(ln net.Listener) {
	for _, w := range t.workers {
		if err := w.wt.init(); err != nil && t.cfg.Log != nil {
			t.cfg.Log(errors.Wrapf(err, "nvme/tcp: worker %d polls without sleeping on its sockets", w.id))
		}
	}
	t.wg.Add(1 + len(t.workers))
	go func() {
		defer t.wg.Done()
		t.Serve(ln)
	}()
	for _, w := range t.workers {
		go func() {
			defer t.wg.Done()
			runtime.LockOSThread()
			idle := 0
			for {
				select {
				case <-t.stop:
					w.Close()
					return
				default:
				}
				if w.Poll() > 0 {
					idle = 0
					continue
				}
				idle++
				switch {
				case idle < runSpin:
				case !w.wt.ioActive && w.wt.ready && !t.sleepIdle:
					// Serve and Close kick the eventfd after they
					// hand over a connection or stop: no wake-up is lost.
					if w.nIncoming.Load() == 0 && !t.closed.Load() {
						w.wt.sleep(runSleep)
						w.wt.slept = true // keep-alive checks at the next poll
					}
					idle = 0
				case idle < 512:
					runtime.Gosched()
				default:
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()
	}
}

// Close stops accepting, stops the goroutines of Run and closes every
// connection.
func (t *Target) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.mu.Lock()
	ln := t.ln
	t.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	// Kick sleeping workers: they see closed and do not sleep again.
	for _, w := range t.workers {
		w.wt.kick()
	}
	close(t.stop)
	t.wg.Wait()
	return nil
}

// tctrl is a controller of the subsystem (or of the discovery subsystem),
// created by an admin queue Connect.
type tctrl struct {
	t         *Target
	cntlid    uint16
	hostnqn   string
	discovery bool
	cc        uint32 // admin queue's worker only
	csts      atomic.Uint32
	gen       atomic.Uint32 // bumped by a reset: I/O queues of older generations close
	dead      atomic.Bool
	kato      uint32 // Keep Alive Timeout in ms, 0: none; admin queue's worker only

	mu     sync.Mutex
	queues map[uint16]*tqueue
}

func (t *Target) newCtrl(hostnqn string, discovery bool) (*tctrl, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < 0xffef; i++ {
		t.cntlid = t.cntlid%0xffef + 1
		if _, used := t.ctrls[t.cntlid]; !used {
			c := &tctrl{t: t, cntlid: t.cntlid, hostnqn: hostnqn, discovery: discovery, queues: map[uint16]*tqueue{}}
			t.ctrls[c.cntlid] = c
			return c, nil
		}
	}
	return nil, errors.New("nvme/tcp: no free controller ID")
}

func (t *Target) dropCtrl(c *tctrl) {
	c.dead.Store(true)
	t.mu.Lock()
	delete(t.ctrls, c.cntlid)
	t.mu.Unlock()
	t.releaseCompute(c)
}

// stats sums the counters of every queue of the controller.
func (c *tctrl) stats() (reads, writes, rbytes, wbytes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.queues {
		reads += q.nReads.Load()
		writes += q.nWrites.Load()
		rbytes += q.bRead.Load()
		wbytes += q.bWritten.Load()
	}
	return
}

// Worker polls a share of the target's connections. Poll must be called
// from one goroutine.
type Worker struct {
	t         *Target
	id        int
	mu        sync.Mutex
	incoming  []*net.TCPConn
	nIncoming atomic.Int32
	queues    []*tqueue
	chans     []NSChannel
	chanErr   []error
	wt        waiter
}

// Poll accepts handed-over connections, polls the namespace channels and
// every connection, and returns the amount of work done.
func (w *Worker) Poll() int {
	work := 0
	if w.nIncoming.Load() > 0 {
		w.mu.Lock()
		in := w.incoming
		w.incoming = nil
		w.nIncoming.Store(0)
		w.mu.Unlock()
		for _, nc := range in {
			if q, err := w.newQueue(nc); err == nil {
				w.queues = append(w.queues, q)
				w.wt.watch(q.c)
			} else {
				nc.Close()
			}
			work++
		}
	}
	for _, ch := range w.chans {
		if ch != nil {
			work += ch.Poll()
		}
	}
	work += w.pollCompute()
	active := false
	for i := 0; i < len(w.queues); {
		q := w.queues[i]
		work += q.poll()
		active = active || q.inflight > 0 || len(q.work) > 0 || q.c.pending()
		if q.finished() {
			q.release()
			last := len(w.queues) - 1
			w.queues[i] = w.queues[last]
			w.queues[last] = nil
			w.queues = w.queues[:last]
			continue
		}
		i++
	}
	w.wt.ioActive = active
	w.wt.slept = false
	w.wt.idlePoll(work)
	return work
}

// Close closes the worker's connections, waits (bounded) for their namespace
// I/O and closes its namespace channels. It runs on the goroutine that
// polls the worker, once that has stopped polling it.
func (w *Worker) Close() {
	for _, q := range w.queues {
		q.c.close()
		q.closing = true
	}
	for i := 0; i < 1000; i++ {
		busy := false
		for _, ch := range w.chans {
			if ch != nil {
				ch.Poll()
			}
		}
		w.pollCompute()
		for _, q := range w.queues {
			busy = busy || q.inflight > 0
		}
		if !busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for _, q := range w.queues {
		q.release()
	}
	w.queues = nil
	for i, ch := range w.chans {
		if ch != nil {
			ch.Close()
			w.chans[i] = nil
		}
	}
	w.closeCompute()
	w.wt.close()
}

func (w *Worker) channel(nsid uint32) (NSChannel, error) {
	i := int(nsid) - 1
	if w.chans[i] == nil {
		ch, err := w.t.cfg.Namespaces[i].Open(4 * w.t.cfg.MaxQueueDepth)
		if err != nil {
			return nil, err
		}
		w.chans[i] = ch
	}
	return w.chans[i], nil
}

// Target command states.
const (
	tFree    = iota
	tRecv    // receiving in-capsule or H2C data
	tNeedR2T // an R2T is to be sent
	tExec    // with the namespace
	tRetry   // Submit said busy
	tSend    // response (and data) to be sent
	tHeld    // an Asynchronous Event Request, never answered
)

type tcmd struct {
	state  int
	sqe    [64]byte
	cid    uint16
	buf    []byte // the slot's data buffer, allocated at first use
	n      int    // data length
	got    int    // data bytes received
	sent   int    // C2H bytes sent
	c2h    bool   // data goes to the host
	dw0    uint32
	dw1    uint32
	status uint16

	r2tNext int               // the offset the next R2T asks for
	r2tOut  int               // R2Ts outstanding
	r2ts    [tgtMaxR2T]tgtR2T // by TTag&7
}

// tgtR2T is an R2T the target sent: the data range it asked for and how
// much of it has arrived.
type tgtR2T struct {
	off, end, got int
	live          bool
}

// tqueue is one connection: an admin or I/O queue of a controller.
type tqueue struct {
	w        *Worker
	c        *conn
	ctrl     *tctrl
	gen      uint32
	qid      uint16
	depth    int
	sqhd     uint16
	cmds     []tcmd
	free     []uint16
	work     []uint16 // slots in tNeedR2T, tRetry or tSend, in order
	spare    []uint16
	inflight int
	cur      uint16 // the slot of the capsule being received
	maxR2T   int    // R2Ts per command the host takes (ICReq MAXR2T+1, at most tgtMaxR2T)
	closing  bool
	aers     int
	adminBuf []byte
	term     [pdu.MaxTermData]byte

	// Keep-alive (admin queue): the controller's command count when it
	// last changed, and when.
	kaPolls uint32
	kaSum   uint64
	kaLast  time.Time

	// cmdsRx counts the capsules received; the admin queue's keep-alive
	// check sums it over the controller's queues.
	cmdsRx                           atomic.Uint64
	nReads, nWrites, bRead, bWritten atomic.Uint64
}

func (w *Worker) newQueue(nc *net.TCPConn) (*tqueue, error) {
	q := &tqueue{w: w}
	c, err := newConn(nc, "nvme/tcp target "+nc.RemoteAddr().String(), pdu.Controller, q, tgtRxBuf, tgtTxBuf)
	if err != nil {
		return nil, err
	}
	c.lim.MaxData = uint32(w.t.cfg.MaxH2CData)
	q.c = c
	q.maxR2T = 1
	// Until Connect sizes the queue, one slot takes the Connect command.
	q.setDepth(1)
	return q, nil
}

func (q *tqueue) setDepth(n int) {
	q.depth = n
	q.cmds = make([]tcmd, n+maxAER)
	q.free = make([]uint16, 0, n+maxAER)
	for i := n + maxAER - 1; i >= 0; i-- {
		q.free = append(q.free, uint16(i))
	}
	q.work = make([]uint16, 0, n+maxAER)
	q.spare = make([]uint16, 0, n+maxAER)
}

// finished reports whether the connection is gone and nothing is in flight.
func (q *tqueue) finished() bool { return q.closing && q.inflight == 0 }

func (q *tqueue) release() {
	q.c.close()
	if q.ctrl != nil {
		q.ctrl.mu.Lock()
		if q.ctrl.queues[q.qid] == q {
			delete(q.ctrl.queues, q.qid)
		}
		q.ctrl.mu.Unlock()
		if q.qid == 0 {
			q.w.t.dropCtrl(q.ctrl)
		}
	}
}

// poll is one round on the connection.
func (q *tqueue) poll() int {
	if q.closing {
		return 0
	}
	if q.ctrl != nil && q.qid != 0 && (q.ctrl.dead.Load() || q.ctrl.gen.Load() != q.gen) {
		q.c.close()
		q.closing = true
		return 1
	}
	work := 0
	if q.c.poll() {
		work++
	}
	if q.c.err != nil {
		q.closing = true
		return work + 1
	}
	work += q.progress()
	q.c.flush()
	if q.c.err != nil {
		q.closing = true
	}
	if q.qid == 0 && q.ctrl != nil && q.ctrl.kato != 0 {
		if q.kaPolls++; q.kaPolls&kaCheckEvery == 0 || q.w.wt.slept {
			q.checkKeepAlive(time.Now())
		}
	}
	return work
}

// kaCheckEvery+1 is how many polls of an admin queue pass between its
// keep-alive checks (or one, after the worker slept); kasUnit is the granularity (KAS) of the target's Keep
// Alive Timer.
const (
	kaCheckEvery = 63
	kasUnit      = 100 * time.Millisecond
)

// checkKeepAlive enforces the controller's Keep Alive Timeout: any command
// on any of its queues restarts the timer (traffic-based keep-alive, as
// Identify Controller advertises); a host silent for KATO, rounded up to
// the KAS granularity, has its association torn down — the controller
// fails (CSTS.CFS), its admin connection closes, and its I/O queues close
// and are freed once their namespace I/O has finished.
func (q *tqueue) checkKeepAlive(now time.Time) {
	c := q.ctrl
	var sum uint64
	c.mu.Lock()
	for _, x := range c.queues {
		sum += x.cmdsRx.Load()
	}
	c.mu.Unlock()
	if sum != q.kaSum || q.kaLast.IsZero() {
		q.kaSum, q.kaLast = sum, now
		return
	}
	kato := time.Duration(c.kato) * time.Millisecond
	limit := (kato + kasUnit - 1) / kasUnit * kasUnit
	if idle := now.Sub(q.kaLast); idle > limit {
		err := errors.Errorf("%s: keep-alive timeout: nothing from host %s (controller %d) for %v, KATO %v: association torn down",
			q.c.name, c.hostnqn, c.cntlid, idle.Round(time.Millisecond), kato)
		c.csts.Store(c.csts.Load() | nvme.CSTSFatal)
		q.w.t.dropCtrl(c) // its I/O queues close at their next poll
		q.c.fail(err, 0)
		q.closing = true
		if log := q.w.t.cfg.Log; log != nil {
			log(err)
		}
	}
}

// progress sends R2Ts, retries busy submissions and sends responses, in
// order, as far as the transmit buffer allows.
func (q *tqueue) progress() int {
	if len(q.work) == 0 {
		return 0
	}
	done := 0
	keep := q.spare[:0]
	blocked := false
	n := len(q.work) // a retried submission that fails appends its response
	for _, slot := range q.work[:n] {
		cmd := &q.cmds[slot]
		if blocked {
			keep = append(keep, slot)
			continue
		}
		switch cmd.state {
		case tNeedR2T:
			if !q.sendR2Ts(slot) {
				blocked = true
				keep = append(keep, slot)
				continue
			}
			done++
		case tRetry:
			q.submitIO(slot)
			if cmd.state == tRetry {
				keep = append(keep, slot)
			}
			done++
		case tSend:
			if !q.sendResponse(slot) {
				blocked = true
				keep = append(keep, slot)
				continue
			}
			done++
		}
	}
	keep = append(keep, q.work[n:]...)
	q.spare = q.work[:0]
	q.work = keep
	return done
}

// sendR2Ts sends slot's next R2Ts, each for at most MaxH2CData bytes, until
// the host's MAXR2T are outstanding or the whole transfer is asked for; false
// if the transmit buffer filled first (progress is kept).
func (q *tqueue) sendR2Ts(slot uint16) bool {
	cmd := &q.cmds[slot]
	hl := pdu.R2TLen
	if q.c.lim.HDGST {
		hl += pdu.DigestLen
	}
	for cmd.r2tOut < q.maxR2T && cmd.r2tNext < cmd.n {
		if q.c.room() < hl {
			return false
		}
		k := 0
		for cmd.r2ts[k].live {
			k++
		}
		n := min(cmd.n-cmd.r2tNext, q.w.t.cfg.MaxH2CData)
		cmd.r2ts[k] = tgtR2T{off: cmd.r2tNext, end: cmd.r2tNext + n, live: true}
		pdu.PutR2T(q.c.put(hl), pdu.Data{CCCID: cmd.cid, TTag: slot<<3 | uint16(k), Offset: uint32(cmd.r2tNext), Length: uint32(n)}, q.c.lim.HDGST)
		cmd.r2tNext += n
		cmd.r2tOut++
	}
	cmd.state = tRecv
	return true
}

// sendResponse queues the data and the CapsuleResp of slot; false if the
// transmit buffer is full (progress is kept).
func (q *tqueue) sendResponse(slot uint16) bool {
	cmd := &q.cmds[slot]
	for cmd.c2h && cmd.status>>1 == 0 && cmd.sent < cmd.n {
		chunk := min(cmd.n-cmd.sent, maxDataChunk)
		if q.c.room() < q.c.dataPDUSize(chunk) {
			q.c.flush()
			if q.c.room() < q.c.dataPDUSize(chunk) {
				return false
			}
		}
		flags := uint8(0)
		if cmd.sent+chunk == cmd.n {
			flags = pdu.FlagLast
		}
		q.c.putData(pdu.TypeC2HData, flags, pdu.Data{CCCID: cmd.cid, Offset: uint32(cmd.sent)}, cmd.buf[cmd.sent:cmd.sent+chunk])
		cmd.sent += chunk
	}
	if q.c.room() < pdu.CapsuleRespLen+pdu.DigestLen {
		return false
	}
	var cqe [16]byte
	putCQE(cqe[:], cmd.dw0, cmd.dw1, q.sqhd, q.qid, cmd.cid, cmd.status)
	n := pdu.CapsuleRespLen
	if q.c.lim.HDGST {
		n += pdu.DigestLen
	}
	pdu.PutCapsuleResp(q.c.put(n), cqe[:], q.c.lim.HDGST)
	cmd.state = tFree
	q.free = append(q.free, slot)
	return true
}

// respond finishes slot with a status (and, for c2h commands, its data).
func (q *tqueue) respond(slot uint16, dw0 uint32, status uint16) {
	cmd := &q.cmds[slot]
	cmd.dw0, cmd.status, cmd.state = dw0, status, tSend
	q.work = append(q.work, slot)
}

// Complete implements nvme.Completer for the namespace channels.
func (q *tqueue) Complete(tag uint64, res uint64, err error) {
	slot := uint16(tag)
	q.inflight--
	if q.closing {
		q.cmds[slot].state = tFree
		return
	}
	q.cmds[slot].dw1 = uint32(res >> 32)
	q.respond(slot, uint32(res), errStatus(err))
}

func errStatus(err error) uint16 {
	if err == nil {
		return 0
	}
	var se nvme.StatusError
	if errors.As(err, &se) {
		return statusField(se.SCT, se.SC)
	}
	return statusField(0, scInternal)
}

// pduHeader implements handler.
func (q *tqueue) pduHeader(h pdu.Header, hdr []byte, dataLen int) ([]byte, uint16, error) {
	switch h.Type {
	case pdu.TypeCapsuleCmd:
		if len(q.free) == 0 {
			return nil, pdu.FESInvalidHeader, errors.Errorf("%s: more commands outstanding than the queue's %d entries", q.c.name, q.depth)
		}
		slot := q.free[len(q.free)-1]
		q.free = q.free[:len(q.free)-1]
		cmd := &q.cmds[slot]
		*cmd = tcmd{state: tRecv, buf: cmd.buf}
		q.cmdsRx.Store(q.cmdsRx.Load() + 1)
		copy(cmd.sqe[:], hdr[pdu.CommonLen:pdu.CapsuleCmdLen])
		cmd.cid = le.Uint16(cmd.sqe[2:])
		q.sqhd++
		if int(q.sqhd) == q.depth {
			q.sqhd = 0
		}
		q.cur = slot
		if dataLen == 0 {
			return nil, 0, nil
		}
		limit := tgtInCap
		if q.qid == 0 {
			limit = adminInCap
		}
		n := int(le.Uint32(cmd.sqe[32:]))
		if cmd.sqe[sglTypeOffset] != sglInCapsule || n != dataLen || dataLen > limit || le.Uint64(cmd.sqe[24:]) != 0 {
			return nil, pdu.FESInvalidHeader, errors.Errorf("%s: command %d carries %d bytes in its capsule, its SGL says type %#x, %d bytes at offset %d (in-capsule limit %d)",
				q.c.name, cmd.cid, dataLen, cmd.sqe[sglTypeOffset], n, le.Uint64(cmd.sqe[24:]), limit)
		}
		cmd.n = n
		return q.slotBuf(slot, n), 0, nil
	case pdu.TypeH2CData:
		// The transfer tag names the slot and the R2T; within an R2T the
		// data comes in order, so overlaps and gaps are refused.
		d, _ := pdu.ParseData(hdr)
		slot, k := int(d.TTag>>3), int(d.TTag&7)
		if slot >= len(q.cmds) || (q.cmds[slot].state != tRecv && q.cmds[slot].state != tNeedR2T) || q.cmds[slot].cid != d.CCCID ||
			q.cmds[slot].c2h || !q.cmds[slot].r2ts[k].live {
			return nil, pdu.FESInvalidHeader, errors.Errorf("%s: H2CData for command %d, transfer tag %d, which awaits no data", q.c.name, d.CCCID, d.TTag)
		}
		cmd := &q.cmds[slot]
		r := &cmd.r2ts[k]
		if int(d.Length) != dataLen || int(d.Offset) != r.off+r.got || int(d.Offset)+dataLen > r.end {
			return nil, pdu.FESOutOfRange, errors.Errorf("%s: H2CData for command %d at offset %d, %d bytes (PDU carries %d): expected offset %d within the R2T for bytes %d..%d",
				q.c.name, d.CCCID, d.Offset, d.Length, dataLen, r.off+r.got, r.off, r.end)
		}
		return cmd.buf[d.Offset : int(d.Offset)+dataLen], 0, nil
	case pdu.TypeH2CTermReq:
		return q.term[:dataLen], 0, nil
	}
	return nil, 0, nil
}

// slotBuf returns n bytes of the slot's buffer, allocating it on first use.
func (q *tqueue) slotBuf(slot uint16, n int) []byte {
	cmd := &q.cmds[slot]
	if cap(cmd.buf) < n {
		size := tgtMaxXfer
		if q.qid == 0 || q.ctrl == nil {
			size = tgtAdminBuf
		}
		cmd.buf = make([]byte, max(size, n))
	}
	return cmd.buf[:n]
}

// pduDone implements handler.
func (q *tqueue) pduDone(h pdu.Header, hdr []byte) (uint16, error) {
	switch h.Type {
	case pdu.TypeICReq:
		r, err := pdu.ParseICReq(hdr)
		if err != nil {
			return 0, errors.Wrapf(err, "%s", q.c.name)
		}
		q.c.lim.HDGST, q.c.lim.DDGST, q.c.lim.Align = r.HDGST, r.DDGST, (r.HPDA+1)*4
		var b [pdu.ICLen]byte
		q.maxR2T = int(min(r.MaxR2T, tgtMaxR2T-1)) + 1
		pdu.PutICResp(b[:], pdu.ICResp{HDGST: r.HDGST, DDGST: r.DDGST, MaxH2CData: uint32(q.w.t.cfg.MaxH2CData)})
		copy(q.c.put(pdu.ICLen), b[:])
		q.c.init = true
	case pdu.TypeCapsuleCmd:
		slot := q.cur
		cmd := &q.cmds[slot]
		cmd.got = cmd.n
		if cmd.n > 0 {
			q.execute(slot)
			return 0, nil
		}
		// Data to come by R2T, data to send, or none: decide from the SGL.
		n := int(le.Uint32(cmd.sqe[32:]))
		typ := cmd.sqe[sglTypeOffset]
		dir := cmd.sqe[0] & 3
		if cmd.sqe[0] == opFabrics {
			dir = 0
			if cmd.sqe[4] == fctConnect {
				dir = 1
			}
		}
		switch {
		case n == 0 || dir == 0:
			cmd.n = 0
		case typ != sglTransport:
			q.respond(slot, 0, statusField(0, scSGLTypeInval))
			return 0, nil
		case n > tgtMaxXfer || (q.qid == 0 && n > tgtAdminBuf):
			q.respond(slot, 0, statusField(0, scSGLLengthInval))
			return 0, nil
		case dir == 1:
			cmd.n, cmd.got, cmd.r2tNext, cmd.r2tOut = n, 0, 0, 0
			clear(cmd.r2ts[:])
			q.slotBuf(slot, n)
			cmd.state = tNeedR2T
			q.work = append(q.work, slot)
			return 0, nil
		default:
			cmd.n, cmd.c2h = n, true
			clear(q.slotBuf(slot, n))
		}
		q.execute(slot)
	case pdu.TypeH2CData:
		d, _ := pdu.ParseData(hdr)
		slot := d.TTag >> 3
		cmd := &q.cmds[slot]
		r := &cmd.r2ts[d.TTag&7]
		r.got += int(d.Length)
		cmd.got += int(d.Length)
		last := r.off+r.got == r.end
		if last != (h.Flags&pdu.FlagLast != 0) {
			return pdu.FESInvalidHeader, errors.Errorf("%s: H2CData for command %d ends at offset %d with LAST %v; its R2T asked for bytes %d..%d",
				q.c.name, d.CCCID, r.off+r.got, !last, r.off, r.end)
		}
		if !last {
			return 0, nil
		}
		r.live = false
		cmd.r2tOut--
		switch {
		case cmd.got == cmd.n:
			q.execute(slot)
		case cmd.state == tRecv && cmd.r2tNext < cmd.n:
			cmd.state = tNeedR2T
			q.work = append(q.work, slot)
		}
	case pdu.TypeH2CTermReq:
		tr, _ := pdu.ParseTerm(hdr)
		return 0, errors.Errorf("%s: host terminated the connection: %s (FES %#x, FEI %d)", q.c.name, pdu.FESName(tr.FES), tr.FES, tr.FEI)
	}
	return 0, nil
}

// execute runs a command whose data (if any) has arrived.
func (q *tqueue) execute(slot uint16) {
	cmd := &q.cmds[slot]
	cmd.state = tExec
	opc := cmd.sqe[0]
	if opc == opFabrics {
		q.fabrics(slot)
		return
	}
	if q.ctrl == nil {
		q.respond(slot, 0, statusField(0, 0x0c)) // Command Sequence Error: Connect first
		return
	}
	if q.qid == 0 {
		q.admin(slot)
		return
	}
	q.submitIO(slot)
}

// submitIO hands an NVM command to its namespace channel.
func (q *tqueue) submitIO(slot uint16) {
	cmd := &q.cmds[slot]
	opc := cmd.sqe[0]
	nsid := le.Uint32(cmd.sqe[4:])
	nss := q.w.t.cfg.Namespaces
	if kind, mi := q.w.t.nsKind(nsid); kind == nsCP || kind == nsMem {
		q.submitCompute(slot, kind, mi)
		return
	}
	if nsid == 0 || int(nsid) > len(nss) {
		q.respond(slot, 0, statusField(0, scInvalidNS))
		return
	}
	ns := nss[nsid-1]
	lba := le.Uint64(cmd.sqe[40:])
	blocks := uint32(le.Uint16(cmd.sqe[48:])) + 1
	switch opc {
	case nvme.OpRead, nvme.OpWrite:
		if lba >= ns.NumBlocks() || uint64(blocks) > ns.NumBlocks()-lba {
			q.respond(slot, 0, statusField(0, scLBAOutOfRange))
			return
		}
		if int(blocks)*ns.BlockSize() != cmd.n {
			q.respond(slot, 0, statusField(0, scSGLLengthInval))
			return
		}
	case nvme.OpWriteZeroes:
		if lba >= ns.NumBlocks() || uint64(blocks) > ns.NumBlocks()-lba {
			q.respond(slot, 0, statusField(0, scLBAOutOfRange))
			return
		}
	case nvme.OpFlush:
	default:
		q.respond(slot, 0, statusField(0, scInvalidOpcode))
		return
	}
	ch, err := q.w.channel(nsid)
	if err != nil {
		q.respond(slot, 0, statusField(0, scInternal))
		return
	}
	var buf []byte
	if cmd.n > 0 {
		buf = cmd.buf[:cmd.n]
	}
	err = ch.Submit(opc, lba, blocks, buf, q, uint64(slot))
	switch {
	case err == nil:
		q.inflight++
		cmd.state = tExec
		if opc == nvme.OpRead {
			q.nReads.Store(q.nReads.Load() + 1)
			q.bRead.Store(q.bRead.Load() + uint64(cmd.n))
		} else if opc == nvme.OpWrite {
			q.nWrites.Store(q.nWrites.Load() + 1)
			q.bWritten.Store(q.bWritten.Load() + uint64(cmd.n))
		}
	case errors.Is(err, ErrBusy):
		if cmd.state != tRetry {
			cmd.state = tRetry
			q.work = append(q.work, slot)
		}
	default:
		q.respond(slot, 0, errStatus(err))
	}
}

// fabrics runs Connect, Property Get/Set and Disconnect.
func (q *tqueue) fabrics(slot uint16) {
	cmd := &q.cmds[slot]
	s := cmd.sqe[:]
	fct := s[4]
	if fct != fctConnect && q.ctrl == nil {
		q.respond(slot, 0, statusField(0, 0x0c))
		return
	}
	switch fct {
	case fctConnect:
		q.connect(slot)
	case fctPropertyGet:
		if q.qid != 0 {
			q.respond(slot, 0, statusField(0, scInvalidField))
			return
		}
		var v uint64
		switch le.Uint32(s[44:]) {
		case nvme.RegCAP:
			mqes := uint64(q.w.t.cfg.MaxQueueDepth - 1)
			v = mqes | 1<<16 | 10<<24 | q.w.t.css()<<37
		case nvme.RegVS:
			v = 0x00010400
		case nvme.RegCC:
			v = uint64(q.ctrl.cc)
		case nvme.RegCSTS:
			v = uint64(q.ctrl.csts.Load())
		}
		cmd.dw1 = uint32(v >> 32)
		q.respond(slot, uint32(v), 0)
	case fctPropertySet:
		if q.qid != 0 || le.Uint32(s[44:]) != nvme.RegCC {
			q.respond(slot, 0, statusField(0, scInvalidField))
			return
		}
		q.setCC(uint32(le.Uint64(s[48:])))
		q.respond(slot, 0, 0)
	case fctDisconnect:
		q.respond(slot, 0, 0)
	default:
		q.respond(slot, 0, statusField(0, scInvalidOpcode))
	}
}

func (q *tqueue) setCC(v uint32) {
	c := q.ctrl
	was := c.cc
	c.cc = v
	csts := c.csts.Load()
	if was&nvme.CCEnable != 0 && v&nvme.CCEnable == 0 {
		c.gen.Add(1) // the I/O queues go
		csts &^= nvme.CSTSReady | nvme.CSTSShstMask
	}
	if v&nvme.CCEnable != 0 {
		csts |= nvme.CSTSReady
	}
	if v>>14&3 != 0 {
		csts = csts&^nvme.CSTSShstMask | nvme.CSTSShstDone
	}
	c.csts.Store(csts)
}

func (q *tqueue) connect(slot uint16) {
	cmd := &q.cmds[slot]
	s := cmd.sqe[:]
	bad := func(ipo uint32) { q.respond(slot, 1<<16|ipo, statusField(sctCommandSpecific, scConnectInvalidPar)) }
	if q.ctrl != nil {
		q.respond(slot, 0, statusField(0, 0x0c))
		return
	}
	if cmd.n < connectDataSize {
		q.respond(slot, 0, statusField(0, scSGLLengthInval))
		return
	}
	data := cmd.buf[:connectDataSize]
	qid := le.Uint16(s[42:])
	size := int(le.Uint16(s[44:])) + 1
	cntlid := le.Uint16(data[16:])
	subnqn, hostnqn := getNQN(data[256:512]), getNQN(data[512:768])
	t := q.w.t
	if size < 2 || size > t.cfg.MaxQueueDepth {
		q.respond(slot, 0, statusField(sctCommandSpecific, scInvalidQueueSize))
		return
	}
	if qid == 0 {
		disc := subnqn == DiscoveryNQN
		if subnqn != t.cfg.NQN && !disc {
			bad(256)
			return
		}
		c, err := t.newCtrl(hostnqn, disc)
		if err != nil {
			q.respond(slot, 0, statusField(0, scInternal))
			return
		}
		c.kato = le.Uint32(s[48:])
		c.queues[0] = q
		q.ctrl = c
		q.adminBuf = make([]byte, tgtAdminBuf)
	} else {
		t.mu.Lock()
		c := t.ctrls[cntlid]
		t.mu.Unlock()
		if c == nil || c.hostnqn != hostnqn || c.discovery || subnqn != t.cfg.NQN {
			bad(16)
			return
		}
		if c.csts.Load()&nvme.CSTSReady == 0 {
			q.respond(slot, 0, statusField(0, 0x0c))
			return
		}
		if int(qid) > t.cfg.MaxIOQueues {
			q.respond(slot, 0, statusField(sctCommandSpecific, scInvalidQueueID))
			return
		}
		c.mu.Lock()
		_, used := c.queues[qid]
		if !used {
			c.queues[qid] = q
		}
		c.mu.Unlock()
		if used {
			q.respond(slot, 0, statusField(sctCommandSpecific, scInvalidQueueID))
			return
		}
		q.ctrl = c
		q.gen = c.gen.Load()
	}
	q.qid = qid
	cid := cmd.cid
	cntl := q.ctrl.cntlid
	// Resize: the Connect slot is the only one in use.
	q.setDepth(size)
	q.free = q.free[:len(q.free)-1] // slot 0 answers the Connect
	q.cmds[0] = tcmd{state: tSend, cid: cid, dw0: uint32(cntl)}
	q.sqhd = 1
	q.work = append(q.work, 0)
}

// admin runs an admin command on the admin queue.
func (q *tqueue) admin(slot uint16) {
	cmd := &q.cmds[slot]
	s := cmd.sqe[:]
	c := q.ctrl
	cdw10, cdw11 := le.Uint32(s[40:]), le.Uint32(s[44:])
	switch s[0] {
	case adminIdentify:
		if !cmd.c2h || cmd.n < 4096 {
			q.respond(slot, 0, statusField(0, scSGLLengthInval))
			return
		}
		b := cmd.buf[:cmd.n]
		clear(b)
		if done, st := q.identifyCompute(uint8(cdw10), le.Uint32(s[4:]), uint8(cdw11>>24), b); done {
			q.respond(slot, 0, st)
			return
		}
		if !q.identify(uint8(cdw10), le.Uint32(s[4:]), b) {
			q.respond(slot, 0, statusField(0, scInvalidField))
			return
		}
		q.respond(slot, 0, 0)
	case adminGetLogPage:
		q.getLogPage(slot, cdw10, cdw11)
	case adminSetFeatures, adminGetFeatures:
		n := uint32(q.w.t.cfg.MaxIOQueues - 1)
		switch uint8(cdw10) {
		case 0x07: // Number of Queues
			q.respond(slot, n|n<<16, 0)
		case 0x0b, 0x0e: // Async Event Configuration, Timestamp
			q.respond(slot, 0, 0)
		case nvme.FeatIOCSProfile: // the one combination of CNS 1Ch
			if s[0] == adminSetFeatures && (cdw11&0x1ff != 0 || q.w.t.cp == nil) {
				q.respond(slot, 0, statusField(0, scInvalidField))
				return
			}
			q.respond(slot, 0, 0)
		case 0x0f: // Keep Alive Timer
			if s[0] == adminSetFeatures {
				c.kato = le.Uint32(s[44:])
			}
			q.respond(slot, c.kato, 0)
		default:
			q.respond(slot, 0, statusField(0, scInvalidField))
		}
	case adminKeepAlive:
		q.respond(slot, 0, 0)
	case adminAbort:
		q.respond(slot, 1, 0) // not aborted: commands run to completion
	case nvme.AdminLoadProgram, nvme.AdminProgActMgmt, nvme.AdminMemRangeSetMg:
		q.computeAdmin(slot)
	case adminAsyncEvent:
		if q.aers >= maxAER {
			q.respond(slot, 0, statusField(sctCommandSpecific, 0x05)) // AER limit exceeded
			return
		}
		q.aers++
		cmd.state = tHeld
	default:
		q.respond(slot, 0, statusField(0, scInvalidOpcode))
	}
}

func padded(b []byte, s string) {
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func (q *tqueue) nguid(nsid uint32) [16]byte {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", q.w.t.cfg.NQN, nsid)))
	var g [16]byte
	copy(g[:], h[:16])
	return g
}

// identify fills b with the Identify data of CNS cns.
func (q *tqueue) identify(cns uint8, nsid uint32, b []byte) bool {
	t := q.w.t
	c := q.ctrl
	nss := t.cfg.Namespaces
	switch cns {
	case 0x01: // controller
		padded(b[4:24], t.cfg.Serial)
		padded(b[24:64], t.cfg.Model)
		padded(b[64:72], "0.1")
		b[72] = 6
		b[77] = tgtMDTS
		le.PutUint16(b[78:], c.cntlid)
		le.PutUint32(b[80:], 0x00010400)
		le.PutUint32(b[92:], 0)
		le.PutUint32(b[96:], 1<<6) // CTRATT: traffic-based keep-alive
		b[111] = 1                 // I/O controller
		if c.discovery {
			b[111] = 2
			b[77] = 0
		}
		b[258] = 3                                                    // ACL
		b[259] = maxAER - 1                                           // AERL
		b[261] = 1 << 2                                               // LPA: extended data for Get Log Page
		le.PutUint16(b[320:], uint16(kasUnit/(100*time.Millisecond))) // KAS
		b[512], b[513] = 0x66, 0x44                                   // SQES, CQES
		le.PutUint16(b[514:], uint16(t.cfg.MaxQueueDepth))
		if !c.discovery {
			le.PutUint32(b[516:], uint32(t.nsCount()))
			le.PutUint16(b[520:], nvme.ONCSWriteZeroes)
		}
		le.PutUint32(b[536:], 1|1<<20) // SGLS: SGLs, offsets (in-capsule data)
		nqn := t.cfg.NQN
		if c.discovery {
			nqn = DiscoveryNQN
		}
		copy(b[768:1024], nqn)
		le.PutUint32(b[1792:], (tgtInCap+64)/16) // IOCCSZ
		le.PutUint32(b[1796:], 1)                // IORCSZ
		b[1803] = 1                              // MSDBD (ICDOFF, 1800-1801, stays 0)
		return true
	case 0x00: // namespace
		if nsid == 0 || nsid == 0xffffffff {
			return false
		}
		if c.discovery || int(nsid) > len(nss) {
			return true // inactive: zeroes
		}
		ns := nss[nsid-1]
		n := ns.NumBlocks()
		le.PutUint64(b[0:], n)
		le.PutUint64(b[8:], n)
		le.PutUint64(b[16:], n)
		le.PutUint32(b[92:], 0)
		g := q.nguid(nsid)
		copy(b[104:120], g[:])
		shift := uint8(0)
		for 1<<shift < ns.BlockSize() {
			shift++
		}
		b[130] = shift // LBAF0.LBADS
		return true
	case 0x02: // active namespace list
		if c.discovery {
			return true
		}
		j := 0
		for i := 0; i < t.nsCount(); i++ {
			if id := uint32(i + 1); id > nsid && j < 1024 {
				le.PutUint32(b[4*j:], id)
				j++
			}
		}
		return true
	case 0x03: // namespace identification descriptors
		if c.discovery || nsid == 0 || int(nsid) > len(nss) {
			return false
		}
		g := q.nguid(nsid)
		b[0], b[1] = 2, 16
		copy(b[4:20], g[:])
		return true
	}
	return false
}

// getLogPage answers Get Log Page: error information, SMART, firmware
// slots and, on a discovery controller, the discovery log.
func (q *tqueue) getLogPage(slot uint16, cdw10, cdw11 uint32) {
	cmd := &q.cmds[slot]
	s := cmd.sqe[:]
	lid := uint8(cdw10)
	numd := (cdw10>>16 | (cdw11&0xffff)<<16) + 1
	off := uint64(le.Uint32(s[48:])) | uint64(le.Uint32(s[52:]))<<32
	n := int(numd) * 4
	if !cmd.c2h || n > cmd.n {
		q.respond(slot, 0, statusField(0, scSGLLengthInval))
		return
	}
	page := q.adminBuf
	clear(page)
	size := 0
	c := q.ctrl
	switch {
	case lid == 0x01 && !c.discovery:
		size = 64 * 4
	case lid == 0x02 && !c.discovery:
		size = 512
		reads, writes, rb, wb := c.stats()
		le.PutUint64(page[32:], (rb/512+999)/1000)
		le.PutUint64(page[48:], (wb/512+999)/1000)
		le.PutUint64(page[64:], reads)
		le.PutUint64(page[80:], writes)
	case lid == 0x03 && !c.discovery:
		size = 512
		copy(page[8:16], "0.1     ")
	case lid == logDiscovery && c.discovery:
		size = q.discoveryLog(page)
	default:
		q.respond(slot, 0, statusField(sctCommandSpecific, scInvalidLogPage))
		return
	}
	if off&3 != 0 || off > uint64(size) {
		q.respond(slot, 0, statusField(0, scInvalidField))
		return
	}
	b := cmd.buf[:cmd.n]
	clear(b)
	copy(b[:n], page[off:size])
	q.respond(slot, 0, 0)
}

// discoveryLog writes the discovery log page: the NVM subsystem and the
// discovery subsystem itself, at the listener's address.
func (q *tqueue) discoveryLog(page []byte) int {
	t := q.w.t
	fam := uint8(adrfamIPv4)
	if ip := net.ParseIP(t.cfg.Addr); ip != nil && ip.To4() == nil {
		fam = adrfamIPv6
	}
	entries := []DiscoveryEntry{
		{TrType: trtypeTCP, AdrFam: fam, SubType: subtypeNVM, CntlID: 0xffff, TrSvcID: t.cfg.Port, SubNQN: t.cfg.NQN, TrAddr: t.cfg.Addr},
		{TrType: trtypeTCP, AdrFam: fam, SubType: subtypeDiscovery, CntlID: 0xffff, TrSvcID: t.cfg.Port, SubNQN: DiscoveryNQN, TrAddr: t.cfg.Addr},
	}
	le.PutUint64(page[0:], 1) // GENCTR
	le.PutUint64(page[8:], uint64(len(entries)))
	for i, e := range entries {
		putDiscoveryEntry(page[discHeaderSize+i*discEntrySize:], e)
	}
	return discHeaderSize + len(entries)*discEntrySize
}
