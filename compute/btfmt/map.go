package btfmt

import (
	"fmt"
	"io"

	"github.com/cilium/ebpf/btf"
)

// Map is the contents of a map with the BTF types of its keys and values.
// It writes itself as text (WriteText) and as JSON (MarshalJSON):
//
//	{"name": "by_key", "type": "hash", "key_type": "__u32",
//	 "value_type": "struct stats",
//	 "entries": [{"key": 7, "value": {"count": 3, "sum": 42}}]}
type Map struct {
	Name string
	// Type is the map's kind: "array" or "hash".
	Type string
	// Key and Value are the BTF types; nil shows the bytes in hex.
	Key, Value btf.Type
	Entries    []Entry
}

// Entry is one key and its value, as stored (little-endian).
type Entry struct {
	Key, Value []byte
}

// MarshalJSON writes the map with its keys and values decoded (see JSON).
func (m *Map) MarshalJSON() ([]byte, error) {
	e := encoder{json: true}
	e.buf = append(e.buf, `{"name":`...)
	e.str(m.Name)
	e.buf = append(e.buf, `,"type":`...)
	e.str(m.Type)
	if m.Key != nil {
		e.buf = append(e.buf, `,"key_type":`...)
		e.str(CType(m.Key))
	}
	if m.Value != nil {
		e.buf = append(e.buf, `,"value_type":`...)
		e.str(CType(m.Value))
	}
	e.buf = append(e.buf, `,"entries":[`...)
	for i, en := range m.Entries {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, `{"key":`...)
		e.value(m.Key, en.Key, 0)
		e.buf = append(e.buf, `,"value":`...)
		e.value(m.Value, en.Value, 0)
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, "]}"...)
	return e.buf, nil
}

// WriteText writes the map as bpftool's map dump does, one entry a line
// under a header naming the map and its types:
//
//	map by_key (hash, key __u32, value struct stats, 2 entries):
//	  key: 7  value: {count: 3, sum: 42}
func (m *Map) WriteText(w io.Writer) error {
	kt, vt := "bytes", "bytes"
	if m.Key != nil {
		kt = CType(m.Key)
	}
	if m.Value != nil {
		vt = CType(m.Value)
	}
	e := encoder{}
	e.buf = fmt.Appendf(e.buf, "map %s (%s, key %s, value %s, %d entries):\n", m.Name, m.Type, kt, vt, len(m.Entries))
	for _, en := range m.Entries {
		e.buf = append(e.buf, "  key: "...)
		e.value(m.Key, en.Key, 0)
		e.buf = append(e.buf, "  value: "...)
		e.value(m.Value, en.Value, 0)
		e.buf = append(e.buf, '\n')
		if len(e.buf) > 64<<10 {
			if _, err := w.Write(e.buf); err != nil {
				return err
			}
			e.buf = e.buf[:0]
		}
	}
	_, err := w.Write(e.buf)
	return err
}
