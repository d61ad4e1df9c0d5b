package bdev

import (
	"context"

	"github.com/bpfblk/bpfblk/poller"
	"github.com/pkg/errors"
)

// Sync is a blocking facade over a bdev for simple library users: ReadAt and
// WriteAt from any goroutine, with the I/O handed to a reactor that owns the
// channel. Data is staged through a few bounce buffers of the bdev's own I/O
// memory, so callers may pass ordinary slices. Sync suits tools and tests;
// applications that care about speed use Channel on their reactors.
type Sync struct {
	desc   *Desc
	r      *poller.Reactor
	ch     *Channel
	poll   *poller.Poller
	free   chan Buffer // idle bounce buffers
	all    []Buffer
	chunk  int
	bs     int64
	blocks uint64
}

const (
	syncBuffers = 4
	syncChunk   = 1 << 20
)

// NewSync makes a Sync that runs its I/O on reactor r.
func NewSync(desc *Desc, r *poller.Reactor) (*Sync, error) {
	info := desc.bdev.info
	s := &Sync{desc: desc, r: r, free: make(chan Buffer, syncBuffers), bs: int64(info.BlockSize), blocks: info.NumBlocks}
	s.chunk = syncChunk / info.BlockSize * info.BlockSize
	if s.chunk == 0 {
		s.chunk = info.BlockSize
	}
	for i := 0; i < syncBuffers; i++ {
		b, err := desc.AllocBuffer(s.chunk)
		if err != nil {
			s.freeBuffers()
			return nil, err
		}
		s.all = append(s.all, b)
		s.free <- b
	}
	err := r.Call(func() error {
		ch, err := desc.NewChannelOn(r, syncBuffers)
		if err != nil {
			return err
		}
		p, err := r.Register("bdev-sync:"+info.Name, func() poller.Status {
			if ch.Poll() > 0 {
				return poller.Busy
			}
			return poller.Idle
		}, 0)
		if err != nil {
			ch.Close()
			return err
		}
		s.ch, s.poll = ch, p
		return nil
	})
	if err != nil {
		s.freeBuffers()
		return nil, errors.Wrapf(err, "bdev %s: sync channel", info.Name)
	}
	return s, nil
}

func (s *Sync) freeBuffers() {
	for _, b := range s.all {
		s.desc.FreeBuffer(b)
	}
	s.all = nil
}

type syncReq struct {
	s     *Sync
	t     IOType
	buf   Buffer
	lba   uint64
	count uint64
	done  chan error
}

func syncDone(io *IO) {
	req := io.Arg.(*syncReq)
	req.done <- io.Err()
}

// submit runs on the reactor.
func (req *syncReq) submit() {
	ch := req.s.ch
	var err error
	switch req.t {
	case Read:
		err = ch.Read(&req.buf, req.lba, req.count, syncDone, req)
	case Write:
		err = ch.Write(&req.buf, req.lba, req.count, syncDone, req)
	case Flush:
		err = ch.Flush(syncDone, req)
	}
	if err != nil {
		req.done <- err
	}
}

// do runs one I/O of at most one chunk and waits for it. If ctx ends first it
// returns ctx's error at once; the bounce buffer goes back to the pool when
// the device is done with it, so nothing the device still writes is reused.
func (s *Sync) do(ctx context.Context, t IOType, p []byte, lba uint64) error {
	// A context that has already ended fails at once: below, a ready buffer
	// or completion could otherwise win the select against ctx.Done.
	if err := ctx.Err(); err != nil {
		return err
	}
	var buf Buffer
	select {
	case buf = <-s.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := len(p)
	req := &syncReq{s: s, t: t, buf: buf.Slice(0, n), lba: lba, count: uint64(n) / uint64(s.bs), done: make(chan error, 1)}
	if t == Write {
		copy(buf.Bytes, p)
	}
	if err := s.r.Send(req.submit); err != nil {
		s.free <- buf
		return errors.Wrapf(err, "bdev %s", s.desc.bdev.info.Name)
	}
	select {
	case err := <-req.done:
		if err == nil && t == Read {
			copy(p, buf.Bytes[:n])
		}
		s.free <- buf
		return err
	case <-ctx.Done():
		go func() {
			<-req.done
			s.free <- buf
		}()
		return ctx.Err()
	}
}

func (s *Sync) check(p []byte, off int64) error {
	name := s.desc.bdev.info.Name
	if off < 0 || off%s.bs != 0 || int64(len(p))%s.bs != 0 {
		return errors.Errorf("bdev %s: offset %d and length %d must be multiples of the %d-byte block", name, off, len(p), s.bs)
	}
	if uint64(off/s.bs)+uint64(int64(len(p))/s.bs) > s.blocks {
		return errors.Wrapf(ErrOutOfRange, "bdev %s: %d bytes at offset %d", name, len(p), off)
	}
	return nil
}

func (s *Sync) rw(ctx context.Context, t IOType, p []byte, off int64) (int, error) {
	if err := s.check(p, off); err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n := min(s.chunk, len(p)-done)
		if err := s.do(ctx, t, p[done:done+n], uint64((off+int64(done))/s.bs)); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// ReadAt reads len(p) bytes at byte offset off; both must be multiples of the
// block size.
func (s *Sync) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return s.rw(ctx, Read, p, off)
}

// WriteAt writes p at byte offset off; both must be multiples of the block
// size.
func (s *Sync) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	return s.rw(ctx, Write, p, off)
}

// Flush makes completed writes durable.
func (s *Sync) Flush(ctx context.Context) error {
	return s.do(ctx, Flush, nil, 0)
}

// Close waits for I/O in flight, then releases the channel and buffers.
func (s *Sync) Close() error {
	for i := 0; i < syncBuffers; i++ {
		<-s.free
	}
	err := s.r.Call(func() error {
		s.poll.Unregister()
		return s.ch.Close()
	})
	if err != nil {
		return errors.Wrapf(err, "bdev %s: close sync channel", s.desc.bdev.info.Name)
	}
	s.freeBuffers()
	return nil
}
