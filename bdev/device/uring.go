package device

import (
	"fmt"
	"strings"

	"github.com/bpfblk/bpfblk/bdev/uring"
)

// uring:PATH[,...]: a kernel block device or a file through io_uring (bdev
// module bdev/uring), named uring0, uring1, ... in the order given.
func init() {
	Register(Driver{
		Kind: Uring, Usage: "uring:PATH",
		Match: func(a string) bool { return strings.HasPrefix(a, uring.Scheme) },
		Parse: func(s string) (Spec, error) {
			c, err := uring.ParseAddr(strings.TrimPrefix(s, uring.Scheme))
			if err != nil {
				return Spec{}, err
			}
			return Spec{Kind: Uring, Path: c.Path, Uring: c}, nil
		},
		Open: func(o *Opening, s Spec) error {
			n := o.Value("uring", func() any { return new(int) }).(*int)
			d, err := uring.Open(fmt.Sprintf("uring%d", *n), s.Uring)
			if err != nil {
				return err
			}
			*n++
			o.AddBdev(d.Bdev, d.Note)
			return nil
		},
	})
}
