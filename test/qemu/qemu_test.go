package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// guestPackages are the packages whose tests run inside the guest. Their
// device tests run when BPFBLK_VFIO_TEST_DEVICES lists PCI functions bound
// to vfio-pci (the guest's /init sets it) and skip elsewhere.
var guestPackages = []string{"./nvme/vfio", "./test/qemu/nvmfguest"}

// requiredGuestTests must pass in the guest: a skip there is a failure, so a
// guest that lost a controller or a CMB cannot pass quietly.
var requiredGuestTests = []string{
	"TestDeviceOpen",
	"TestDeviceRegisters",
	"TestDeviceAdminIdentify",
	"TestDeviceIO",
	"TestDeviceCMBDataBuffer",
	"TestDeviceCMBAfterDriver",
	"TestDevicePeerToPeer",
	"TestDeviceIOMMUBlocksUnmappedDMA",
	"TestDeviceMSIX",
	"TestDeviceReset",
	"TestDeviceTeardown",
	"TestDriverOverVFIO",
	"TestDriverSuiteOverVFIO",
	"TestP2PCopyOverVFIO",
	"TestP2PStagedScanOverVFIO",
	"TestKernelHostAgainstServe",
	"TestKernelHostAgainstServeWithCompute",
	"TestHostAgainstKernelTarget",
}

const installHint = "install with: apt-get install -y --no-install-recommends qemu-system-x86 busybox-static xz-utils; " +
	"then run BPFBLK_REQUIRE_QEMU=1 go test ./test/qemu (CI sets BPFBLK_REQUIRE_QEMU=1, which turns this skip into a failure)"

// unavailable skips the test, or fails it when BPFBLK_REQUIRE_QEMU=1.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("BPFBLK_REQUIRE_QEMU") == "1" {
		t.Fatalf("BPFBLK_REQUIRE_QEMU=1 but the QEMU VFIO test cannot run: "+format, args...)
	}
	t.Skipf("QEMU VFIO test not run: "+format+"; "+installHint, args...)
}

func TestQEMUVFIO(t *testing.T) {
	runSuite(t, suite{name: "work", packages: guestPackages, required: requiredGuestTests})
}

// kernelNVMePackages are the guest test packages of the run that leaves a
// controller to the kernel's nvme driver.
var kernelNVMePackages = []string{"./test/qemu/kernelnvme"}

// TestQEMUKernelNVMe boots the guest with QEMU's first NVMe controller
// left to the kernel's nvme driver: bpfblk reaches it through io_uring
// (uring:/dev/nvme0n1, passthrough on /dev/ng0n1), then hands it to
// vfio-pci and checks that a scan through VFIO finds what the io_uring
// scan found.
func TestQEMUKernelNVMe(t *testing.T) {
	runSuite(t, suite{name: "work/kernel-nvme", packages: kernelNVMePackages, required: []string{"TestKernelNVMe"}, kernelNVMe: true})
}

// suite is one guest run.
type suite struct {
	name       string // work directory, relative to test/qemu
	packages   []string
	required   []string
	kernelNVMe bool // leave a controller to the kernel's nvme driver; ship the CLI
}

func runSuite(t *testing.T, s suite) {
	if testing.Short() && os.Getenv("BPFBLK_REQUIRE_QEMU") != "1" {
		t.Skip("QEMU VFIO test skipped in -short mode; " + installHint)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		unavailable(t, "qemu-system-x86_64 not found")
	}
	busybox := ""
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if staticELF(p) == nil {
			busybox = p
			break
		}
	}
	if busybox == "" {
		unavailable(t, "no static busybox (busybox-static) in /bin")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		unavailable(t, "dpkg-deb not found (a Debian host is needed to fetch the guest kernel)")
	}
	timeout := 300 * time.Second
	if s := os.Getenv("BPFBLK_QEMU_TIMEOUT"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("BPFBLK_QEMU_TIMEOUT=%q: want seconds", s)
		}
		timeout = time.Duration(n) * time.Second
	}

	start := time.Now()
	cache, err := cacheDir()
	if err != nil {
		unavailable(t, "%v", err)
	}
	deb, err := kernelDeb(cache, t.Logf)
	if err != nil {
		unavailable(t, "no guest kernel: %v", err)
	}
	k, err := prepareKernel(cache, deb, t.Logf)
	if err != nil {
		t.Fatalf("guest kernel: %v", err)
	}
	t.Logf("kernel %s (%s), modules %d, built in %v, ready after %v", k.Package,
		map[bool]string{true: "PVH vmlinux", false: "bzImage"}[k.PVH], len(k.Modules), k.Builtin, time.Since(start).Round(time.Millisecond))
	if s.kernelNVMe && k.NVMeErr != nil {
		t.Fatalf("guest kernel: the nvme driver's modules: %v", k.NVMeErr)
	}

	work, err := filepath.Abs(s.name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins, err := buildGuestTests(root, filepath.Join(work, "bin"), s.packages)
	if err != nil {
		t.Fatal(err)
	}
	var modNames, lateNames []string
	for _, m := range k.Modules {
		modNames = append(modNames, filepath.Base(m))
	}
	// The guest's go test gives up before QEMU is killed, so a hung test
	// still reports where it hung.
	cfg := guestConfig{Modules: modNames, Tests: bins, HugePages: 64, Timeout: timeout * 4 / 5, Run: os.Getenv("BPFBLK_QEMU_RUN")}
	mods := k.Modules
	if s.kernelNVMe {
		for _, m := range k.NVMeModules {
			lateNames = append(lateNames, filepath.Base(m))
		}
		cfg.KernelNVMe, cfg.LateModules = true, lateNames
		mods = append(append([]string(nil), k.Modules...), k.NVMeModules...)
		cfg.CLI = filepath.Join(work, "bin", "bpfblk")
		if err := buildGuestCLI(root, cfg.CLI); err != nil {
			t.Fatal(err)
		}
	}
	initrd := filepath.Join(work, "initramfs.cpio.gz")
	if err := buildInitramfs(initrd, busybox, mods, cfg); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	m := machine{Kernel: k.Image, Initrd: initrd, Work: work}
	var res *guestResult
	var qerr error
	for attempt := 1; ; attempt++ {
		res, qerr = boot(t, qemu, m, timeout, start)
		// QEMU under TCG on a loaded machine occasionally loses the guest
		// before any test could fail (a boot-time timer check, an emulator
		// crash). That gets one more try; a guest test failure never does.
		if attempt == 2 || !retryable(res, qerr) {
			break
		}
		t.Logf("attempt %d: %v; no test had failed, booting once more", attempt, qerr)
	}
	if qerr != nil {
		t.Error(qerr)
	}
	required := s.required
	if cfg.Run != "" {
		required = nil // a filtered run need not contain them
	}
	for _, p := range res.problems(bins, required) {
		t.Error(p)
	}
}

// boot runs the guest once and parses its output.
func boot(t *testing.T, qemu string, m machine, timeout time.Duration, start time.Time) (*guestResult, error) {
	args, err := m.args()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("booting after %v: %s %s", time.Since(start).Round(time.Millisecond), qemu, strings.Join(args, " "))
	logf, err := os.Create(filepath.Join(m.Work, "serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	res := newGuestResult()
	t0 := time.Now()
	qerr := runQEMU(context.Background(), qemu, args, timeout, func(l string) {
		logf.WriteString(l + "\n")
		t.Log("guest| " + l)
		res.add(l)
	})
	t.Logf("QEMU ran %v (whole test %v); serial log in %s", time.Since(t0).Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), logf.Name())
	t.Log(res.summary())
	if qerr == nil && !res.Done {
		qerr = errors.New("QEMU exited before the guest finished: a guest kernel panic or reset (see the serial log above)")
	}
	return res, qerr
}

// retryable reports whether a guest run was lost to the emulator rather than
// failed by a test: it did not finish, no test failed and QEMU was not
// stopped by the time limit.
func retryable(res *guestResult, qerr error) bool {
	return !res.Done && len(res.Failed) == 0 && !errors.Is(qerr, context.DeadlineExceeded)
}
