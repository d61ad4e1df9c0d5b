package tcp

import "sync/atomic"

// queueTraffic counts the bytes one queue ID's connections moved: written
// only by the goroutine that owns the queue (one connection at a time),
// alone on its cache line, summed on read.
type queueTraffic struct {
	rx, tx atomic.Uint64
	_      [48]byte
}

// Traffic returns the bytes the transport's connections have received from
// and sent to the network since Dial — NVMe/TCP PDUs with their headers,
// digests and data, on the admin queue and every I/O queue, including
// connections closed since — summed over the per-queue counters.
func (t *Transport) Traffic() (rx, tx uint64) {
	for i := range t.traffic {
		rx += t.traffic[i].rx.Load()
		tx += t.traffic[i].tx.Load()
	}
	return rx, tx
}
