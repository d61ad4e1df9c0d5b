package bench_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/bench"
	"github.com/bpfblk/bpfblk/poller"
)

// Run 4 KiB random reads at queue depth 32 against a null bdev for a moment
// and read the report.
func ExampleRun() {
	g, _ := poller.Start(poller.Config{Cores: "0", NoPin: true})
	defer g.Stop()
	b, _ := bdev.NewNull("null0", 512, 1<<21)
	d, _ := bdev.Open(b, false)
	defer d.Close()

	w := bench.Workload{Pattern: bench.RandRead, BlockSize: 4096, QueueDepth: 32, Duration: 50 * time.Millisecond}
	rep, err := bench.Run(context.Background(), g, []*bdev.Desc{d}, w, bench.Options{Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	s := rep.Total.Summarize(false)
	// rep.Table(os.Stdout), rep.JSON(os.Stdout, false) and rep.SVG(f, title)
	// render it for people, scripts and plots.
	fmt.Println(len(rep.Targets), "target,", s.Errors, "errors, IOPS > 0:", s.IOPS > 0, ", p99 >= p50:", s.LatencyUS.P99 >= s.LatencyUS.P50)
	// Output: 1 target, 0 errors, IOPS > 0: true , p99 >= p50: true
}
