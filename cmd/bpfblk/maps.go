package main

import (
	"encoding/json"
	"io"

	"github.com/bpfblk/bpfblk/compute/engine"
)

// printMaps writes the maps decoded with the program's BTF, one entry a
// line, as bpftool's map dump does.
func printMaps(w io.Writer, p *engine.Program, data []engine.MapData) error {
	maps := p.MapContents(data)
	for i := range maps {
		if err := maps[i].WriteText(w); err != nil {
			return err
		}
	}
	return nil
}

// mapsJSON returns the maps decoded with the program's BTF as JSON objects
// ({"name", "type", "key_type", "value_type", "entries": [{"key", "value"}]}),
// never nil.
func mapsJSON(p *engine.Program, data []engine.MapData) []json.RawMessage {
	maps := p.MapContents(data)
	out := make([]json.RawMessage, 0, len(maps))
	for i := range maps {
		j, _ := maps[i].MarshalJSON() // cannot fail
		out = append(out, j)
	}
	return out
}
