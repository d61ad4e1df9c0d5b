package engine_test

import (
	"fmt"

	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
)

// Load the byte-pattern filter with its parameters, create one instance per
// core, run it over a chunk of blocks and read the matching LBAs.
func Example() {
	spec, err := filters.LoadPattern() // bpf2go-embedded ELF
	if err != nil {
		panic(err)
	}
	prog, err := engine.LoadSpec(spec, &engine.LoadOptions{
		Program: "pattern_memmem",
		Vars:    map[string]any{"pattern": []byte("needle\x00\x00"), "pattern_len": uint32(6)},
	})
	if err != nil {
		panic(err) // a *verifier.Error names the instruction and the reason
	}
	exe, err := engine.Compile(prog, engine.Interpreter)
	if err != nil {
		panic(err)
	}
	core0 := exe.NewInstance() // one per core: own stack, own maps

	data := make([]byte, 8*512)
	copy(data[3*512+17:], "needle")
	copy(data[6*512+500:], "needle")
	matches := make([]uint64, 16) // caller-provided emit buffer
	res, err := core0.Run(&engine.Context{Data: data, LBA: 1000, NSID: 1, BlockSize: 512}, matches)
	if err != nil {
		panic(err)
	}
	fmt.Println("r0:", res.R0, "matching LBAs:", matches[:res.Emitted])
	// Output: r0: 2 matching LBAs: [1003 1006]
}
