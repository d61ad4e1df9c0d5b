package nvmfguest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfblk/bpfblk/bdev"
	"github.com/bpfblk/bpfblk/nvme"
	"github.com/bpfblk/bpfblk/nvme/mock"
	"github.com/bpfblk/bpfblk/nvme/nvmetest"
	"github.com/bpfblk/bpfblk/nvme/tcp"
	"github.com/bpfblk/bpfblk/nvmf"
	"github.com/bpfblk/bpfblk/poller"
	"golang.org/x/sys/unix"
)

func guest(t *testing.T) {
	if os.Getenv("BPFBLK_NVMF_GUEST") != "1" {
		t.Skip("runs in the QEMU guest of test/qemu (BPFBLK_NVMF_GUEST=1)")
	}
}

// TestKernelHostAgainstServe connects the kernel's nvme-tcp host to a
// bpfblk target through /dev/nvme-fabrics, writes the namespace through
// /dev/nvmeXnY with O_DIRECT, reads it back through the kernel, and checks
// both against what the target's bdev holds.
func TestKernelHostAgainstServe(t *testing.T) {
	guest(t)
	kernelHostRoundTrip(t, nil)
}

// TestKernelHostAgainstServeWithCompute does the same with a compute
// controller's compute and memory namespaces exported beside the NVM
// namespace (the command sets of CAP.CSS bit 6, CNS 1Ch, CSI descriptors):
// the kernel, which has no driver for them, still brings the controller up
// and serves the NVM namespace, and only it becomes a block device.
func TestKernelHostAgainstServeWithCompute(t *testing.T) {
	guest(t)
	mc, err := mock.NewController(mock.NewBus(), mock.Config{Serial: "CSD", Namespaces: []mock.NamespaceConfig{
		{Kind: mock.Memory, Size: 4096, CSI: nvme.CSICP}, {Kind: mock.Memory, Size: 1 << 20, CSI: nvme.CSISLM}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nvme.NewController(mc, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); mc.Close() }()
	kernelHostRoundTrip(t, c)
}

// kernelHostRoundTrip serves a malloc bdev (and compute's namespaces if
// not nil) and has the kernel's nvme-tcp host write and read it.
func kernelHostRoundTrip(t *testing.T, compute *nvme.Controller) {
	g, err := poller.Start(poller.Config{NoPin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	const bs, blocks = 512, 32768
	m, err := bdev.NewMalloc("m", bs, blocks)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := nvmf.Listen("127.0.0.1:4420", nvmf.Config{Bdevs: []*bdev.Bdev{m}, Reactors: g.Reactors(), Compute: compute})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	f, err := os.OpenFile("/dev/nvme-fabrics", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("/dev/nvme-fabrics (nvme-tcp loaded?): %v", err)
	}
	opts := fmt.Sprintf("transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=%s", srv.NQN())
	if _, err := f.Write([]byte(opts)); err != nil {
		f.Close()
		t.Fatalf("connect %q: %v", opts, err)
	}
	reply := make([]byte, 256)
	n, _ := f.Read(reply)
	f.Close()
	var inst, cntlid int
	if _, err := fmt.Sscanf(string(reply[:n]), "instance=%d,cntlid=%d", &inst, &cntlid); err != nil {
		t.Fatalf("/dev/nvme-fabrics answered %q: %v", reply[:n], err)
	}
	t.Logf("kernel connected: nvme%d, controller %d", inst, cntlid)
	defer os.WriteFile(fmt.Sprintf("/sys/class/nvme/nvme%d/delete_controller", inst), []byte("1"), 0)
	var dev string
	for deadline := time.Now().Add(60 * time.Second); dev == ""; {
		ms, _ := filepath.Glob(fmt.Sprintf("/dev/nvme%dn*", inst))
		if len(ms) > 0 {
			dev = ms[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /dev/nvme%dn* after 60 s", inst)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the scan of the namespace list ends
	if ms, _ := filepath.Glob(fmt.Sprintf("/dev/nvme%dn*", inst)); len(ms) != 1 {
		t.Fatalf("block devices %v: want one, of the NVM namespace", ms)
	}
	size := 4 << 20
	buf, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	rand.New(rand.NewSource(1)).Read(buf)
	want := sha256.Sum256(buf)
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dev, err)
	}
	defer unix.Close(fd)
	const off = 1 << 20
	if n, err := unix.Pwrite(fd, buf, off); err != nil || n != size {
		t.Fatalf("write %s: %d, %v", dev, n, err)
	}
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync %s: %v", dev, err)
	}
	clear(buf)
	if n, err := unix.Pread(fd, buf, off); err != nil || n != size {
		t.Fatalf("read %s: %d, %v", dev, n, err)
	}
	if got := sha256.Sum256(buf); got != want {
		t.Fatalf("%s: data read back differs from what was written", dev)
	}
	// What the kernel wrote is in the bdev behind the target.
	d, err := bdev.Open(m, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := bdev.NewSync(d, g.Reactors()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	back := make([]byte, size)
	if _, err := s.ReadAt(context.Background(), back, off); err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(back); got != want {
		t.Fatal("the target's bdev does not hold what the kernel wrote")
	}
	if !bytes.Equal(back[:bs], buf[:bs]) {
		t.Fatal("first block differs")
	}
}

// TestHostAgainstKernelTarget sets up the kernel's nvmet-tcp target on a
// loop device through configfs and runs the driver suite against it with
// bpfblk's NVMe/TCP host.
func TestHostAgainstKernelTarget(t *testing.T) {
	guest(t)
	const cfs = "/sys/kernel/config"
	if _, err := os.Stat(cfs + "/nvmet"); err != nil {
		os.MkdirAll(cfs, 0o755)
		if err := unix.Mount("configfs", cfs, "configfs", 0, ""); err != nil && err != unix.EBUSY {
			t.Fatalf("mount configfs: %v", err)
		}
	}
	if _, err := os.Stat(cfs + "/nvmet"); err != nil {
		t.Fatalf("nvmet configfs: %v (nvmet loaded?)", err)
	}
	// A 64 MiB file on tmpfs behind /dev/loopN.
	img := filepath.Join(t.TempDir(), "nvmet.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR, 0)
	if err != nil {
		t.Fatalf("/dev/loop-control: %v", err)
	}
	nr, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	unix.Close(ctl)
	if err != nil {
		t.Fatal(err)
	}
	loop := fmt.Sprintf("/dev/loop%d", nr)
	lfd, err := unix.Open(loop, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ffd, err := unix.Open(img, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetInt(lfd, unix.LOOP_SET_FD, ffd); err != nil {
		t.Fatalf("LOOP_SET_FD: %v", err)
	}
	unix.Close(ffd)
	defer func() { unix.IoctlSetInt(lfd, unix.LOOP_CLR_FD, 0); unix.Close(lfd) }()

	const nqn = "nqn.2024-01.io.bpfblk:kernel-target"
	sub := cfs + "/nvmet/subsystems/" + nqn
	port := cfs + "/nvmet/ports/1"
	write := func(path, v string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(v), 0); err != nil {
			t.Fatalf("%s <- %q: %v", path, v, err)
		}
	}
	for _, d := range []string{sub, sub + "/namespaces/1", port} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(sub+"/attr_allow_any_host", "1")
	write(sub+"/namespaces/1/device_path", loop)
	write(sub+"/namespaces/1/enable", "1")
	write(port+"/addr_trtype", "tcp")
	write(port+"/addr_adrfam", "ipv4")
	write(port+"/addr_traddr", "127.0.0.1")
	write(port+"/addr_trsvcid", "4421")
	if err := os.Symlink(sub, port+"/subsystems/"+nqn); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(port + "/subsystems/" + nqn)
		os.Remove(port)
		write(sub+"/namespaces/1/enable", "0")
		os.Remove(sub + "/namespaces/1")
		os.Remove(sub)
	}()
	es, err := tcp.Discover("127.0.0.1:4421", tcp.Options{})
	if err != nil {
		t.Fatalf("discovery from nvmet: %+v", err)
	}
	found := false
	for _, e := range es {
		found = found || strings.TrimSpace(e.SubNQN) == nqn
	}
	if !found {
		t.Errorf("nvmet's discovery log %+v does not list %s", es, nqn)
	}
	nvmetest.RunDriverSuiteWith(t, func(t *testing.T) []nvme.Transport {
		tr, err := tcp.Dial("127.0.0.1:4421", nqn, tcp.Options{})
		if err != nil {
			t.Fatalf("Dial nvmet: %+v", err)
		}
		return []nvme.Transport{tr}
	}, nvmetest.SuiteConfig{IntegrityOps: 500,
		NoLBARangeCheck: "Linux 6.1 nvmet's block device backend does not range-check LBAs and answers Internal Error"})
}
