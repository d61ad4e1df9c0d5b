package kernelnvme

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev/uring"
	"github.com/bpfblk/bpfblk/nvme"
	"golang.org/x/sys/unix"
)

const (
	blockSize = 512
	dataBytes = 4 << 20 // the log data written at the start of namespace 1
	copyDst   = 100000  // where passthrough Copy puts blocks 0-15
	copyCount = 16
)

// logData is dataBytes of log lines; every block that holds "ERROR" is a
// match of the default scan.
func logData() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < dataBytes; i++ {
		level := "INFO"
		if i%11 == 3 {
			level = "ERROR"
		}
		fmt.Fprintf(&b, "2026-12-04T12:00:%02d line %d %s request served\n", i%60, i, level)
	}
	return b.Bytes()[:dataBytes]
}

// matches lists the blocks of data (starting at LBA base) that hold ERROR.
func matches(data []byte, base uint64) []uint64 {
	var out []uint64
	for off := 0; off+blockSize <= len(data); off += blockSize {
		if bytes.Contains(data[off:off+blockSize], []byte("ERROR")) {
			out = append(out, base+uint64(off/blockSize))
		}
	}
	return out
}

// cli runs the bpfblk binary and returns its stdout.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(os.Getenv("BPFBLK_CLI"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("bpfblk %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	t.Logf("bpfblk %s (%.1fs): %s", strings.Join(args, " "), time.Since(start).Seconds(), strings.TrimSpace(errOut.String()))
	return out.String()
}

// scanLBAs runs a host-engine scan of dev and returns the matching LBAs of
// the bdev whose name ends in suffix.
func scanLBAs(t *testing.T, dev, suffix string) []uint64 {
	t.Helper()
	var lbas []uint64
	for _, l := range strings.Split(strings.TrimSpace(cli(t, "scan", "--dev", dev, "--engine", "host", "-c", "0x1")), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || !strings.HasSuffix(f[0], suffix) {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("scan line %q", l)
		}
		lbas = append(lbas, n)
	}
	return lbas
}

// perf runs a short mixed perf on dev and checks that I/O moved both ways
// without errors.
func perf(t *testing.T, dev string) {
	t.Helper()
	out := cli(t, "perf", "-w", "randrw", "-M", "50", "-q", "8", "-o", "4k", "-t", "1", "-c", "0x1", "--dev", dev, "--json")
	var rep struct {
		Total struct {
			IOs, Errors uint64
			Read        struct {
				TotalIOs uint64 `json:"total_ios"`
			} `json:"read"`
			Write struct {
				TotalIOs uint64 `json:"total_ios"`
			} `json:"write"`
		} `json:"total"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("perf --json: %v\n%s", err, out)
	}
	if rep.Total.IOs == 0 || rep.Total.Errors != 0 || rep.Total.Read.TotalIOs == 0 || rep.Total.Write.TotalIOs == 0 {
		t.Fatalf("perf on %s: %+v", dev, rep.Total)
	}
}

// waitFor waits for path to exist (the nvme driver probes asynchronously).
func waitFor(t *testing.T, glob string) string {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if m, _ := filepath.Glob(glob); len(m) > 0 {
			return m[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", glob)
		}
	}
}

func writeSysfs(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value), 0o200); err != nil {
		t.Fatalf("write %q to %s: %v", value, path, err)
	}
}

// TestKernelNVMe: with the controller on the kernel's nvme driver, bpfblk
// scans and benchmarks its namespace through io_uring and programs it
// through passthrough; then, with the controller handed to vfio-pci, a scan
// through bpfblk's own driver finds the same blocks.
func TestKernelNVMe(t *testing.T) {
	bdf := os.Getenv("BPFBLK_KERNEL_NVME_DEVICE")
	if bdf == "" || os.Getenv("BPFBLK_CLI") == "" {
		t.Skip("not in the QEMU guest: BPFBLK_KERNEL_NVME_DEVICE and BPFBLK_CLI are set there")
	}
	sys := "/sys/bus/pci/devices/" + bdf
	ns := filepath.Base(waitFor(t, sys+"/nvme/nvme*/nvme*n1"))
	blk := "/dev/" + ns
	waitFor(t, blk)
	ng := "/dev/ng" + strings.TrimPrefix(ns, "nvme")
	t.Logf("%s: %s, %s", bdf, blk, ng)

	// The data, written through the kernel.
	data := logData()
	f, err := os.OpenFile(blk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// Passthrough: identify, and Copy blocks 0-15 to copyDst.
	pt, err := uring.OpenPassthru(ng)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pt.IdentifyController()
	if err != nil {
		t.Fatal(err)
	}
	nsid, err := pt.IdentifyNamespace()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passthrough on %s (admin via %s on %s): serial %q model %q, nsid %d of %d blocks of %d bytes", ng, pt.AdminVia, pt.Controller, id.Serial, id.Model, pt.NSID, nsid.NSZE, nsid.LBASize)
	if id.Serial != "BPFBLKA" || pt.NSID != 1 || nsid.LBASize != blockSize || nsid.NSZE != 64<<20/blockSize {
		t.Fatalf("identify through passthrough: serial %q, nsid %d, %d blocks of %d bytes; want BPFBLKA, 1, %d of %d", id.Serial, pt.NSID, nsid.NSZE, nsid.LBASize, 64<<20/blockSize, blockSize)
	}
	if id.ONCS&nvme.ONCSCopy != 0 {
		if err := pt.Copy(copyDst, []nvme.Range{{LBA: 0, Blocks: copyCount}}); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("the controller has no Copy: passthrough Copy not tried")
	}
	pt.Close()
	// The CLI's identify takes the same path.
	if out := cli(t, "identify", "--dev", "uring:"+blk); !strings.Contains(out, "sn         BPFBLKA") {
		t.Fatalf("bpfblk identify --dev uring:%s:\n%s", blk, out)
	}
	want := matches(data, 0)
	if id.ONCS&nvme.ONCSCopy != 0 {
		want = append(want, matches(data[:copyCount*blockSize], copyDst)...)
	}

	// io_uring: scan and perf.
	viaUring := scanLBAs(t, "uring:"+blk, "uring0")
	if !slices.Equal(viaUring, want) {
		t.Fatalf("uring scan found %d blocks, the data has %d: %v", len(viaUring), len(want), firstDiff(viaUring, want))
	}
	perf(t, "uring:"+blk)
	// perf wrote random blocks: put the data back for the VFIO scan, and
	// the copy (through the kernel this time, the same bytes).
	f, err = os.OpenFile(blk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Seek(0, 2)
	if _, err := f.WriteAt(make([]byte, size), 0); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(data, 0)
	if id.ONCS&nvme.ONCSCopy != 0 {
		f.WriteAt(data[:copyCount*blockSize], copyDst*blockSize)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		t.Logf("BLKFLSBUF: %v", err)
	}
	f.Close()

	// Hand the controller to vfio-pci and scan through bpfblk's driver.
	writeSysfs(t, sys+"/driver/unbind", bdf)
	writeSysfs(t, sys+"/driver_override", "vfio-pci")
	writeSysfs(t, "/sys/bus/pci/drivers_probe", bdf)
	drv, _ := os.Readlink(sys + "/driver")
	if filepath.Base(drv) != "vfio-pci" {
		t.Fatalf("%s is on %q after the rebind, not vfio-pci", bdf, drv)
	}
	viaVFIO := scanLBAs(t, "pci:"+bdf, "n1")
	if !slices.Equal(viaVFIO, viaUring) {
		t.Fatalf("VFIO scan found %d blocks, the io_uring scan %d: %v", len(viaVFIO), len(viaUring), firstDiff(viaVFIO, viaUring))
	}
	perf(t, "pci:"+bdf)
	t.Logf("io_uring and VFIO scans agree on %d matching blocks", len(viaVFIO))
}

func firstDiff(a, b []uint64) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at match %d: %d vs %d", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("one is a prefix of the other (%d vs %d)", len(a), len(b))
}
