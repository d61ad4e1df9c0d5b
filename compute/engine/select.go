package engine

import (
	"strings"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
)

// SelectProgram returns the named program of a collection, or its only
// program when name is empty.
func SelectProgram(cs *ebpf.CollectionSpec, name string) (*ebpf.ProgramSpec, error) {
	names := ProgramNames(cs)
	if name == "" {
		if len(names) != 1 {
			return nil, errors.Errorf("object has %d programs (%s); name one as FILE.o:PROGRAM", len(names), strings.Join(names, ", "))
		}
		name = names[0]
	}
	ps, ok := cs.Programs[name]
	if !ok {
		return nil, errors.Errorf("no program %q in object (have: %s)", name, strings.Join(names, ", "))
	}
	return ps, nil
}
