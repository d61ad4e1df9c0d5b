package main

import (
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
