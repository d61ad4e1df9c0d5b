package engine

import (
	"github.com/cilium/ebpf/btf"

	"github.com/bpfblk/bpfblk/compute/btfmt"
	"github.com/bpfblk/bpfblk/compute/verifier"
)

// arrayKey is the key type of array maps whose BTF has none (global data
// sections): the index.
var arrayKey = &btf.Typedef{Name: "__u32", Type: &btf.Int{Name: "unsigned int", Size: 4}}

// MapContents pairs map snapshots of the program (MergeMaps, Instance.Maps,
// a device's reply) with the BTF types of their keys and values, ready to
// print as text or JSON (see package btfmt). A map the program does not
// declare, or one without BTF, keeps its bytes in hex.
func (p *Program) MapContents(data []MapData) []btfmt.Map {
	out := make([]btfmt.Map, 0, len(data))
	for _, d := range data {
		m := btfmt.Map{Name: d.Name, Type: "array", Entries: make([]btfmt.Entry, len(d.Entries))}
		if d.Kind == verifier.MapHash {
			m.Type = "hash"
		}
		for i, e := range d.Entries {
			m.Entries[i] = btfmt.Entry{Key: e.Key, Value: e.Value}
		}
		for i := range p.Maps {
			s := &p.Maps[i]
			if s.Name != d.Name {
				continue
			}
			m.Key, m.Value = s.KeyType, s.ValueType
			if s.Kind == verifier.MapArray && btfmt.Size(m.Key) != int(s.KeySize) {
				m.Key = arrayKey
			}
			break
		}
		out = append(out, m)
	}
	return out
}
