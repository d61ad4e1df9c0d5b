package compute_test

import (
	"context"
	"fmt"

	"github.com/bpfblk/bpfblk/bdev/device"
	"github.com/bpfblk/bpfblk/compute"
	"github.com/bpfblk/bpfblk/compute/csd"
	"github.com/bpfblk/bpfblk/compute/engine"
	"github.com/bpfblk/bpfblk/filters"
	"github.com/bpfblk/bpfblk/poller"
)

// Scan the embedded demo subsystem for blocks holding ERROR log lines. With
// PlaceAuto the program runs on the demo's compute-capable controller, and
// only the match lists reach the host.
func ExampleBdev_Scan() {
	set, err := device.Open([]string{"mock"}, device.Options{Programs: csd.Runner{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()

	spec, _ := filters.LoadPattern()
	prog, err := engine.LoadSpec(spec, &engine.LoadOptions{
		Program: "pattern_memmem",
		Vars:    map[string]any{"pattern": []byte("ERROR\x00\x00\x00"), "pattern_len": uint32(5)},
	})
	if err != nil {
		fmt.Println(err) // a *verifier.Error names the instruction and the reason
		return
	}
	exe, _ := engine.Compile(prog, nil)

	g, _ := poller.Start(poller.Config{Cores: "0-1", NoPin: true})
	defer g.Stop()
	cb, _ := compute.NewBdev("logs", set.Bdevs)
	defer cb.Close()

	perNS := map[string]int{}
	st, err := cb.Scan(context.Background(), g, exe, cb.AllTargets(), compute.Options{
		Devices: set.Controllers, // offload candidates
		OnMatch: func(m compute.Match) { perNS[set.Bdevs[m.Target].Name()]++ },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d matching blocks (%d in mock0n1); data through host memory: %d bytes\n", st.Matches, perNS["mock0n1"], st.BytesThroughHost)
	// Output: 1166 matching blocks (319 in mock0n1); data through host memory: 0 bytes
}
