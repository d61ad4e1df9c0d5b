module github.com/bpfblk/bpfblk

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/klauspost/cpuid/v2 v2.4.2
	github.com/pkg/errors v0.9.1
	golang.org/x/sys v0.50.0
)
