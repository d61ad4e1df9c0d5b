package pci

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pkg/errors"
)

// HugePool is one pool of hugepages of one size, system-wide or on one NUMA
// node.
type HugePool struct {
	Node   int // NUMA node, -1 for the system-wide pool
	SizeKB int // page size in KiB (2048 or 1048576)
	Total  int // reserved pages (nr_hugepages)
	Free   int // pages not in use
}

// Bytes returns the pool's reserved size in bytes.
func (p HugePool) Bytes() int64 { return int64(p.Total) * int64(p.SizeKB) << 10 }

// Nodes lists the NUMA nodes that sysfs shows (none on a kernel without NUMA).
func (h *Host) Nodes() []int {
	ents, _ := filepath.Glob(h.Path("/sys/devices/system/node/node[0-9]*"))
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(e), "node")); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

func (h *Host) hugeDir(node, sizeKB int) string {
	if node < 0 {
		return h.Path("/sys/kernel/mm/hugepages/hugepages-" + strconv.Itoa(sizeKB) + "kB")
	}
	return h.Path("/sys/devices/system/node/node" + strconv.Itoa(node) + "/hugepages/hugepages-" + strconv.Itoa(sizeKB) + "kB")
}

func readInt(p string) (int, error) {
	s, err := readTrim(p)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	return n, errors.Wrapf(err, "pci: %s holds %q", p, s)
}

// HugePools lists the system-wide pools and, where sysfs has NUMA nodes, the
// per-node pools.
func (h *Host) HugePools() ([]HugePool, error) {
	ents, err := filepath.Glob(h.Path("/sys/kernel/mm/hugepages/hugepages-*kB"))
	if err != nil || len(ents) == 0 {
		return nil, errors.New("pci: no hugepage support in this kernel (/sys/kernel/mm/hugepages is empty)")
	}
	var sizes []int
	for _, e := range ents {
		s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(e), "hugepages-"), "kB")
		if n, err := strconv.Atoi(s); err == nil {
			sizes = append(sizes, n)
		}
	}
	sort.Ints(sizes)
	var out []HugePool
	for _, sz := range sizes {
		for _, node := range append([]int{-1}, h.Nodes()...) {
			d := h.hugeDir(node, sz)
			total, err := readInt(d + "/nr_hugepages")
			if err != nil {
				if node >= 0 && os.IsNotExist(errors.Cause(err)) {
					continue
				}
				return nil, err
			}
			free, _ := readInt(d + "/free_hugepages")
			out = append(out, HugePool{Node: node, SizeKB: sz, Total: total, Free: free})
		}
	}
	return out, nil
}

// ReserveHugePages sets the number of hugepages of sizeKB. With node >= 0 the
// pages are reserved on that NUMA node; with node < 0 they are split evenly
// over the NUMA nodes where there are several, else reserved system-wide.
// It reads the counts back and fails if the kernel reserved fewer pages than
// asked (memory too fragmented: reserve them at boot with hugepages=N).
func (h *Host) ReserveHugePages(sizeKB, count, node int) error {
	if count < 0 {
		return errors.Errorf("pci: negative hugepage count %d", count)
	}
	if _, err := os.Stat(h.hugeDir(-1, sizeKB)); err != nil {
		return errors.Errorf("pci: this kernel has no %d kB hugepages", sizeKB)
	}
	type want struct{ node, n int }
	var plan []want
	nodes := h.Nodes()
	switch {
	case node >= 0:
		if _, err := os.Stat(h.hugeDir(node, sizeKB)); err != nil {
			return errors.Errorf("pci: NUMA node %d has no %d kB hugepage pool (nodes: %v)", node, sizeKB, nodes)
		}
		plan = []want{{node, count}}
	case len(nodes) > 1:
		for i, n := range nodes {
			c := count / len(nodes)
			if i < count%len(nodes) {
				c++
			}
			plan = append(plan, want{n, c})
		}
	default:
		plan = []want{{-1, count}}
	}
	for _, p := range plan {
		d := h.hugeDir(p.node, sizeKB)
		if err := h.write(d+"/nr_hugepages", strconv.Itoa(p.n)); err != nil {
			return err
		}
		if h.DryRun {
			continue
		}
		got, err := readInt(d + "/nr_hugepages")
		if err != nil {
			return err
		}
		if got < p.n {
			where := "system-wide"
			if p.node >= 0 {
				where = "on node " + strconv.Itoa(p.node)
			}
			return errors.Errorf("pci: only %d of %d %d kB hugepages could be reserved %s (memory fragmented: reserve them at boot with hugepages=%d)",
				got, p.n, sizeKB, where, count)
		}
	}
	return nil
}
