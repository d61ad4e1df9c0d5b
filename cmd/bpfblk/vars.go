package main

import (
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfblk/bpfblk/compute/btfmt"
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
// program variables' C types (btfmt.ParseVariable: text for a char[N], a
// number for an integer, hex:BYTES for anything). Values that are not
// strings pass through.
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
			for k, vs := range specs {
				if !strings.HasPrefix(k, ".") {
					known = append(known, k+" ("+btfmt.VariableType(vs)+")")
				}
			}
			slices.Sort(known)
			return nil, errors.Errorf("--set %s: the program has no variable %q (it has: %s)", name, name, strings.Join(known, ", "))
		}
		b, err := btfmt.ParseVariable(spec, s)
		if err != nil {
			return nil, errors.Errorf("--set %v", err)
		}
		out[name] = b
	}
	return out, nil
}

// setHelp describes --set.
const setHelp = "set a program parameter NAME=VALUE (repeatable) by its C type: text for a char[N], " +
	"a number (decimal, 0x hex, negative if signed) for an integer, hex:BYTES for any type; " +
	"for the built-in filter, pattern=TEXT (1 to 8 bytes) sets the pattern and its length"

// builtinPattern fills the built-in pattern filter's parameters: pattern
// (a __u64 holding the pattern's bytes) from text or hex:BYTES, default def,
// and pattern_len from its length unless given.
func builtinPattern(vars map[string]any, def string) error {
	v, ok := vars["pattern"]
	if !ok {
		v = def
	}
	s, ok := v.(string)
	if !ok {
		return nil
	}
	b := []byte(s)
	if h, ok := strings.CutPrefix(s, btfmt.HexPrefix); ok {
		var err error
		if b, err = hex.DecodeString(h); err != nil {
			return errors.Errorf("--set pattern: %q is not hex bytes (%v)", s, err)
		}
	}
	if len(b) == 0 || len(b) > 8 {
		return errors.Errorf("--set pattern: the built-in filter looks for 1 to 8 bytes; %q is %d", s, len(b))
	}
	vars["pattern"] = btfmt.HexPrefix + hex.EncodeToString(b)
	if _, ok := vars["pattern_len"]; !ok {
		vars["pattern_len"] = strconv.Itoa(len(b))
	}
	return nil
}
