// Package bench is the I/O benchmark behind `bpfblk perf`, in the manner of
// spdk_nvme_perf: Run drives a Workload (an fio-style pattern, read mix,
// queue depth, I/O size and run time) against bdevs from every reactor of a
// poller group, one job per (reactor, target), each with its own channel,
// buffers and counters, and merges the jobs' Results per target into a
// Report. A Result counts I/Os, errors and bytes per direction with a
// log-linear latency Histogram (from the poll that submitted an I/O to the
// poll that completed it). A Report prints as a table, as the CLI's JSON
// (Summary, which also carries each direction in fio's field names, ReadFio
// and WriteFio, to compare with fio) and as an SVG latency plot.
package bench
