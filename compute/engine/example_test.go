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
	exe, err := engine.Compile(prog, nil) // nil: engine.Default(), the JIT on linux/amd64
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

// Compile the same program with the default engine (the JIT on linux/amd64)
// and with the interpreter, and run both on the same data: the engines agree
// on every result, fault and budget.
func ExampleCompile() {
	spec, err := filters.LoadPattern()
	if err != nil {
		panic(err)
	}
	prog, err := engine.LoadSpec(spec, &engine.LoadOptions{
		Program: "pattern_filter", // a plain byte loop: the JIT's case
		Vars:    map[string]any{"pattern": []byte("ERROR\x00\x00\x00"), "pattern_len": uint32(5)},
	})
	if err != nil {
		panic(err)
	}
	data := make([]byte, 4*4096)
	copy(data[2*4096+100:], "ERROR disk full")
	for _, e := range []engine.Engine{engine.Default(), engine.Interpreter} {
		exe, err := engine.Compile(prog, e)
		if err != nil {
			panic(err)
		}
		matches := make([]uint64, 4)
		res, err := exe.NewInstance().Run(&engine.Context{Data: data, BlockSize: 4096}, matches)
		fmt.Println(res.R0, matches[:res.Emitted], err)
	}
	// Output:
	// 1 [2] <nil>
	// 1 [2] <nil>
}
