package p2pdma

import (
	"bytes"
	"context"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
)

// ErrMismatch means Compare found differing blocks.
var ErrMismatch = errors.New("p2pdma: data differs")

// Compare reads blocks blocks of a at aLBA and of b at bLBA into host memory
// and reports the first block that differs (an error of kind ErrMismatch).
// It checks a copy after the fact; its reads go through host memory by
// design and are not part of any copy's accounting.
func Compare(ctx context.Context, a *bdev.Bdev, aLBA uint64, b *bdev.Bdev, bLBA, blocks uint64) error {
	if a.BlockSize() != b.BlockSize() {
		return kindf(ErrInvalid, "%s has %d-byte blocks, %s %d-byte blocks", a.Name(), a.BlockSize(), b.Name(), b.BlockSize())
	}
	bs := uint64(a.BlockSize())
	step := max(uint64(1<<20)/bs, 1)
	ra, err := newReader(a)
	if err != nil {
		return err
	}
	defer ra.close()
	rb, err := newReader(b)
	if err != nil {
		return err
	}
	defer rb.close()
	for done := uint64(0); done < blocks; done += step {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(step, blocks-done)
		x, err := ra.read(aLBA+done, n)
		if err != nil {
			return err
		}
		y, err := rb.read(bLBA+done, n)
		if err != nil {
			return err
		}
		if !bytes.Equal(x, y) {
			for i := uint64(0); i < n; i++ {
				if !bytes.Equal(x[i*bs:(i+1)*bs], y[i*bs:(i+1)*bs]) {
					return kindf(ErrMismatch, "block %d of %s differs from block %d of %s", aLBA+done+i, a.Name(), bLBA+done+i, b.Name())
				}
			}
		}
	}
	return nil
}

// reader reads blocks synchronously through one channel.
type reader struct {
	d   *bdev.Desc
	ch  *bdev.Channel
	buf bdev.Buffer
	cur bdev.Buffer // the part of buf the read in flight fills
}

func newReader(b *bdev.Bdev) (*reader, error) {
	d, err := bdev.Open(b, false)
	if err != nil {
		return nil, errors.Wrapf(err, "open %s", b.Name())
	}
	r := &reader{d: d}
	if r.ch, err = d.NewChannel(1); err != nil {
		d.Close()
		return nil, err
	}
	if r.buf, err = d.AllocBuffer(1 << 20); err != nil {
		r.ch.Close()
		d.Close()
		return nil, err
	}
	return r, nil
}

func (r *reader) read(lba, n uint64) ([]byte, error) {
	bs := uint64(r.d.Bdev().BlockSize())
	var done bool
	var ioErr error
	r.cur = r.buf.Slice(0, int(n*bs))
	if err := r.ch.Read(&r.cur, lba, n, func(io *bdev.IO) { done, ioErr = true, io.Err() }, nil); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for !done {
		if r.ch.Poll() == 0 && time.Now().After(deadline) {
			return nil, errors.Errorf("read of %s blocks %d+%d did not complete", r.d.Bdev().Name(), lba, n)
		}
	}
	if ioErr != nil {
		return nil, errors.Wrapf(ioErr, "read %s blocks %d+%d", r.d.Bdev().Name(), lba, n)
	}
	return r.cur.Bytes, nil
}

func (r *reader) close() {
	r.d.FreeBuffer(r.buf)
	r.ch.Close()
	r.d.Close()
}
