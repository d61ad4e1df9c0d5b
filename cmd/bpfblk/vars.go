package main

import (
	"encoding/binary"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
)

// loadCollection parses a clang-built object, with the path in the error.
func loadCollection(path string) (*ebpf.CollectionSpec, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, errors.Wrapf(err, "%s: not a BPF ELF object", path)
	}
	return spec, nil
}

// typeVars turns NAME=VALUE strings from the command line into values of the
// program variables' sizes: a number (decimal, 0x hex, 0o octal, 0b binary,
// negative numbers in two's complement) fills the variable little-endian;
// anything else is text, zero-padded to the variable's size.
func typeVars(specs map[string]*ebpf.VariableSpec, vars map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(vars))
	for name, v := range vars {
		s, ok := v.(string)
		if !ok {
			out[name] = v
			continue
		}
		spec, ok := specs[name]
		if !ok {
			var known []string
			for k := range specs {
				if !strings.HasPrefix(k, ".") {
					known = append(known, k)
				}
			}
			slices.Sort(known)
			return nil, errors.Errorf("--set %s: the program has no variable %q (it has: %s)", name, name, strings.Join(known, ", "))
		}
		size := int(spec.Size())
		b, err := encodeVar(s, size)
		if err != nil {
			return nil, errors.Wrapf(err, "--set %s=%s", name, s)
		}
		out[name] = b
	}
	return out, nil
}

func encodeVar(s string, size int) ([]byte, error) {
	b := make([]byte, max(size, 8))
	if u, err := strconv.ParseUint(s, 0, 64); err == nil {
		if size < 8 && u>>(8*size) != 0 {
			return nil, errors.Errorf("%d does not fit in %d bytes", u, size)
		}
		binary.LittleEndian.PutUint64(b, u)
		return b[:size], nil
	}
	if i, err := strconv.ParseInt(s, 0, 64); err == nil {
		if size < 8 && (i < -(1<<(8*size-1)) || i >= 1<<(8*size-1)) {
			return nil, errors.Errorf("%d does not fit in %d bytes", i, size)
		}
		binary.LittleEndian.PutUint64(b, uint64(i))
		return b[:size], nil
	}
	if len(s) > size {
		return nil, errors.Errorf("text of %d bytes does not fit in %d bytes", len(s), size)
	}
	clear(b)
	copy(b, s)
	return b[:size], nil
}
