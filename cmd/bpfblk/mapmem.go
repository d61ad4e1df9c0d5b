package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// mapMemoryHelp is the --map-memory paragraph of the help texts.
const mapMemoryHelp = `--map-memory BYTES (suffix k, M, G or T; default 1G) limits the host memory
a program's maps may take over all its instances (one per core that runs
it): a program whose maps exceed it is refused before anything is allocated.
Keys are at most 512 bytes, values at most 4 MiB.
`

// byteSize is a flag value in bytes: a positive number with an optional
// binary suffix k, M, G or T (KiB, MiB, GiB, TiB; "B" and "iB" may follow).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func parseByteSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "B"), "i")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want a positive number of bytes, e.g. 4096, 512M or 2G)", s)
	}
	return n * mult, nil
}

// mapMemoryFlag adds --map-memory to fs.
func mapMemoryFlag(fs *flag.FlagSet) *byteSize {
	v := byteSize(engine.DefaultMapMemory)
	fs.Var(&v, "map-memory", "`BYTES` of host memory (suffix k, M, G, T) the program's maps may take over all its instances")
	return &v
}

// mapMemoryHint names the flag that raises the limit a map memory error
// refers to.
func mapMemoryHint(err error) error {
	var me *engine.MapMemoryError
	if errors.As(err, &me) {
		return fmt.Errorf("%w (raise the limit with --map-memory)", err)
	}
	return err
}
