package device

import (
	"os"
	"strconv"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme/mock"
)

// file:PATH[,lba=512|4096]: the files of one Open become the namespaces of
// one emulated controller, made after every other address is opened.
func init() {
	Register(Driver{
		Kind: File, Usage: "file:PATH[,lba=512|4096]",
		Match: func(a string) bool { return strings.HasPrefix(a, "file:") },
		Parse: parseFile,
		Open:  openFile,
	})
}

func parseFile(s string) (Spec, error) {
	rest := strings.TrimPrefix(s, "file:")
	path, opts, _ := strings.Cut(rest, ",")
	if path == "" {
		return Spec{}, errors.Errorf("device %q: file: needs a path", s)
	}
	spec := Spec{Kind: File, Path: path, LBASize: 512}
	if opts != "" {
		k, v, ok := strings.Cut(opts, "=")
		n, err := strconv.Atoi(v)
		if !ok || k != "lba" || err != nil || (n != 512 && n != 4096) {
			return Spec{}, errors.Errorf("device %q: option %q: want lba=512 or lba=4096", s, opts)
		}
		spec.LBASize = n
	}
	return spec, nil
}

// fileGroup is the files of one Open and their sizes.
type fileGroup struct {
	ns    []mock.NamespaceConfig
	sizes []uint64
}

func openFile(o *Opening, s Spec) error {
	fi, err := os.Stat(s.Path)
	if err != nil {
		return errors.Wrapf(err, "device file:%s", s.Path)
	}
	if !fi.Mode().IsRegular() {
		return errors.Errorf("device file:%s: not a regular file", s.Path)
	}
	if fi.Size() == 0 {
		return errors.Errorf("device file:%s: the file is empty", s.Path)
	}
	g := o.Value("file", func() any { return &fileGroup{} }).(*fileGroup)
	g.ns = append(g.ns, mock.NamespaceConfig{Kind: mock.File, Path: s.Path, LBASize: s.LBASize})
	g.sizes = append(g.sizes, uint64(fi.Size()))
	o.Finally(0, "file", func() error { return g.open(o) })
	return nil
}

// open makes the controller of the files, one NVM namespace per file in
// order, and records the lengths of those whose last block is partial.
func (g *fileGroup) open(o *Opening) error {
	cfg := mock.Config{Serial: "BPFBLKFILE", Model: "bpfblk file-backed controller", Namespaces: g.ns, Mode: o.opts.Mode}
	set := o.Set
	first := len(set.Bdevs)
	if err := o.AddMock(cfg); err != nil {
		return err
	}
	for i, b := range set.Bdevs[first:] {
		if i < len(g.sizes) && g.sizes[i]%uint64(b.BlockSize()) != 0 {
			if set.Lengths == nil {
				set.Lengths = map[*bdev.Bdev]uint64{}
			}
			set.Lengths[b] = g.sizes[i]
		}
	}
	return nil
}
