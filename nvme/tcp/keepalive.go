package tcp

import (
	"time"

	"github.com/bpfblk/bpfblk/nvme/tcp/internal/pdu"
	"github.com/pkg/errors"
)

// keepAlive is the host's keep-alive timer, one goroutine per controller
// (never one per command): every kato/4 it polls the admin queue and sends
// a Keep Alive when kato/2 has passed since the last — whether or not that
// one was answered, so that the controller keeps hearing from a live host —
// and declares the controller dead when Keep Alives are outstanding and
// none has been answered for kato. It ends when the transport closes or the
// admin connection dies.
func (t *Transport) keepAlive(kato time.Duration) {
	defer close(t.kaDone)
	tick := time.NewTicker(max(kato/4, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-t.kaStop:
			return
		case <-tick.C:
		}
		if !t.keepAliveTick(kato, time.Now()) {
			return
		}
	}
}

// keepAliveTick is one round of the keep-alive timer; it reports whether
// the timer should go on.
func (t *Transport) keepAliveTick(kato time.Duration, now time.Time) bool {
	t.amu.Lock()
	defer t.amu.Unlock()
	q := t.admin
	if t.dead || q == nil {
		return false
	}
	q.pollAll() // the answer may be waiting: nobody else polls an idle admin queue
	if t.dead || q.c.err != nil {
		return false
	}
	if silent := now.Sub(t.kaAlive); t.kaOut > 0 && silent >= kato {
		t.kill(errors.Errorf("%s: keep-alive timeout: %d Keep Alive commands unanswered, none answered for %v, KATO is %v: controller presumed dead, every connection closed",
			t.name, t.kaOut, silent.Round(time.Millisecond), kato))
		return false
	}
	if now.Sub(t.kaSent) >= kato/2 && t.kaOut < maxKeepAlives {
		t.sendKeepAlive(now)
	}
	return true
}

// maxKeepAlives bounds the Keep Alive commands outstanding (a dead
// controller is declared after about three).
const maxKeepAlives = 4

// sendKeepAlive queues a Keep Alive command on the admin queue without
// waiting for its answer. It runs under amu.
func (t *Transport) sendKeepAlive(now time.Time) {
	q := t.admin
	if q.failed || len(q.freeCIDs) == 0 || q.c.room() < pdu.CapsuleCmdLen+2*pdu.DigestLen {
		return // tried again at the next tick; a busy admin queue is alive
	}
	wcid := q.freeCIDs[len(q.freeCIDs)-1]
	q.freeCIDs = q.freeCIDs[:len(q.freeCIDs)-1]
	// orphan: no driver CID, no CQE in the driver's CQ, even if the
	// connection fails with it outstanding.
	q.cmds[wcid] = hcmd{busy: true, orphan: true, keepAlive: true}
	var s [64]byte
	s[0] = adminKeepAlive
	q.capsule(wcid, s[:], nil, false)
	q.c.flush()
	t.kaOut++
	t.kaSent = now
	if q.c.err != nil {
		q.fail()
	}
}

// kill closes every connection of the transport after a keep-alive
// timeout: the admin queue's outstanding commands complete here (under
// amu), and each I/O queue's owner finds its connection closed with err at
// its next poll and completes its commands with Transient Transport Error.
func (t *Transport) kill(err error) {
	t.setErr(err)
	for i := 1; i <= maxQID; i++ {
		if q := t.queues[i].Load(); q != nil {
			q.c.abort(err)
			t.ioFail.Store(true)
		}
	}
	if q := t.admin; q != nil {
		q.c.fail(err, 0)
		q.fail()
	}
	t.dead = true
}
