package qemu

import (
	"bufio"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// guestBinary is a test binary built for the guest.
type guestBinary struct {
	Name string // e.g. "vfio" for ./nvme/vfio
	Path string
}

// moduleRoot returns the directory holding go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// buildGuestCLI compiles the bpfblk command as a static Linux/amd64
// executable.
func buildGuestCLI(root, out string) error {
	cmd := exec.Command("go", "build", "-o", out, "-ldflags=-s -w", "./cmd/bpfblk")
	cmd.Dir = root
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOFLAGS=") && !strings.HasPrefix(e, "CGO_ENABLED=") &&
			!strings.HasPrefix(e, "GOOS=") && !strings.HasPrefix(e, "GOARCH=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/bpfblk: %v\n%s", err, msg)
	}
	return nil
}

// buildGuestTests compiles the test binaries of pkgs as static Linux/amd64
// executables (CGO_ENABLED=0 go test -c).
func buildGuestTests(root, outDir string, pkgs []string) ([]guestBinary, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	var out []guestBinary
	for _, p := range pkgs {
		name := strings.ReplaceAll(strings.Trim(strings.TrimPrefix(p, "./"), "/"), "/", "_")
		bin := filepath.Join(outDir, name+".test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, "-ldflags=-s -w", p)
		cmd.Dir = root
		env := []string{}
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "GOFLAGS=") && !strings.HasPrefix(e, "CGO_ENABLED=") &&
				!strings.HasPrefix(e, "GOOS=") && !strings.HasPrefix(e, "GOARCH=") {
				env = append(env, e)
			}
		}
		cmd.Env = append(env, "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go test -c %s: %v\n%s", p, err, msg)
		}
		out = append(out, guestBinary{Name: name, Path: bin})
	}
	return out, nil
}

// staticELF reports whether path is an ELF executable without a dynamic
// loader (busybox from busybox-static, not the dynamic busybox package).
func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (install busybox-static)", path)
		}
	}
	return nil
}

// guestConfig is what the init script needs to know.
type guestConfig struct {
	Modules   []string // module file names in load order
	Tests     []guestBinary
	HugePages int
	Timeout   time.Duration
	Run       string // -test.run pattern, "" for all
	// KernelNVMe leaves the first NVMe controller to the kernel's nvme
	// driver (loaded from LateModules once the others are bound to
	// vfio-pci) and exports its address as BPFBLK_KERNEL_NVME_DEVICE.
	KernelNVMe  bool
	LateModules []string // module file names loaded after the binding
	// CLI puts the bpfblk binary at /tests/bpfblk and exports BPFBLK_CLI.
	CLI string
}

// Markers the init script prints; the host parses them.
const (
	markRun  = "bpfblk-init: run "
	markExit = "bpfblk-init: exit "
	markDone = "bpfblk-init: done"
)

// initScript is /init: mount the pseudo filesystems, load the VFIO modules,
// reserve hugepages, hand every NVMe function to vfio-pci, run each test
// binary, print the kernel's IOMMU/VFIO log lines and power off.
func initScript(c guestConfig) string {
	var b strings.Builder
	b.WriteString(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
say() { echo "bpfblk-init: $*"; }
say "up at $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
`)
	for _, m := range c.Modules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s || say \"insmod %s FAILED\"\n", m, m)
	}
	fmt.Fprintf(&b, "echo %d > /proc/sys/vm/nr_hugepages\n", c.HugePages)
	b.WriteString(`say "hugepages: $(cat /proc/sys/vm/nr_hugepages) x 2 MiB"
devs=""
knvme=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/class)" = 0x010802 ] || continue
  bdf=${d##*/}
  [ -e $d/driver ] && echo $bdf > $d/driver/unbind
`)
	if c.KernelNVMe {
		b.WriteString(`  if [ -z "$knvme" ]; then
    knvme=$bdf
    echo nvme > $d/driver_override
    say "$bdf $(cat $d/vendor):$(cat $d/device) left to the kernel's nvme driver"
    continue
  fi
`)
	}
	b.WriteString(`  echo vfio-pci > $d/driver_override
  echo $bdf > /sys/bus/pci/drivers_probe
  drv=$(readlink $d/driver); g=$(readlink $d/iommu_group)
  say "$bdf $(cat $d/vendor):$(cat $d/device) driver=${drv##*/} iommu_group=${g##*/}"
  devs="$devs${devs:+,}$bdf"
done
export BPFBLK_VFIO_TEST_DEVICES=$devs
say "devices: $devs"
`)
	for _, m := range c.LateModules {
		fmt.Fprintf(&b, "insmod /lib/modules/%s || say \"insmod %s FAILED\"\n", m, m)
	}
	if c.KernelNVMe {
		b.WriteString(`export BPFBLK_KERNEL_NVME_DEVICE=$knvme
drv=$(readlink /sys/bus/pci/devices/$knvme/driver)
say "kernel nvme device: $knvme driver=${drv##*/}"
`)
	}
	if c.CLI != "" {
		b.WriteString("export BPFBLK_CLI=/tests/bpfblk\n")
	}
	b.WriteString(`ifconfig lo 127.0.0.1 up || ip link set lo up
export BPFBLK_NVMF_GUEST=1
cd /tmp
`)
	run := ""
	if c.Run != "" {
		run = " -test.run '" + strings.ReplaceAll(c.Run, "'", "") + "'"
	}
	for _, t := range c.Tests {
		fmt.Fprintf(&b, "say \"run %s\"\n/tests/%s.test -test.v -test.timeout=%ds%s 2>&1\nsay \"exit %s $?\"\n",
			t.Name, t.Name, int(c.Timeout.Seconds()), run, t.Name)
	}
	b.WriteString(`dmesg | grep -iE 'DMAR|vfio|nvme' | tail -n 40 | sed 's/^/bpfblk-init: dmesg: /'
say "done at $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
`)
	return b.String()
}

// buildInitramfs writes the gzip-compressed cpio archive for the guest.
func buildInitramfs(path, busybox string, modules []string, c guestConfig) error {
	// modules holds the paths of c.Modules and c.LateModules alike.
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	w := newCPIO(gz)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "tests"} {
		w.Dir(d)
	}
	w.CharDev("dev/console", 5, 1)
	w.CharDev("dev/null", 1, 3)
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	w.File("bin/busybox", 0o755, bb)
	for _, m := range modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		w.File("lib/modules/"+filepath.Base(m), 0o644, data)
	}
	for _, t := range c.Tests {
		data, err := os.ReadFile(t.Path)
		if err != nil {
			return err
		}
		w.File("tests/"+t.Name+".test", 0o755, data)
	}
	if c.CLI != "" {
		data, err := os.ReadFile(c.CLI)
		if err != nil {
			return err
		}
		w.File("tests/bpfblk", 0o755, data)
	}
	w.File("init", 0o755, []byte(initScript(c)))
	if err := w.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}

// machine describes the emulated machine.
type machine struct {
	Kernel string
	Initrd string
	Work   string // directory for namespace images
}

// Namespace images: controller A has two namespaces, controller B one and a
// 64 MiB CMB.
var nsImages = []struct {
	id   string
	size int64
}{{"nsA1", 64 << 20}, {"nsA2", 32 << 20}, {"nsB1", 64 << 20}}

func (m machine) args() ([]string, error) {
	for _, ns := range nsImages {
		p := filepath.Join(m.Work, ns.id+".img")
		os.Remove(p) // every run starts from zeroed namespaces
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(ns.size)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	a := []string{
		"-machine", "q35,kernel-irqchip=split", "-accel", "tcg", "-m", "1G", "-smp", "2",
		"-device", "intel-iommu,intremap=on,caching-mode=on",
		"-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", m.Kernel, "-initrd", m.Initrd,
		// no_timer_check: a loaded host makes TCG too slow for the
		// kernel's boot-time IO-APIC timer check, which then panics.
		"-append", "console=ttyS0 intel_iommu=on panic=-1 no_timer_check quiet loglevel=1",
	}
	for _, ns := range nsImages {
		a = append(a, "-drive", fmt.Sprintf("file=%s,if=none,id=%s,format=raw,discard=unmap", filepath.Join(m.Work, ns.id+".img"), ns.id))
	}
	a = append(a,
		"-device", "nvme,id=nvmeA,serial=BPFBLKA",
		"-device", "nvme-ns,drive=nsA1,bus=nvmeA,nsid=1",
		"-device", "nvme-ns,drive=nsA2,bus=nvmeA,nsid=2",
		"-device", "nvme,id=nvmeB,serial=BPFBLKB,cmb_size_mb=64",
		"-device", "nvme-ns,drive=nsB1,bus=nvmeB,nsid=1",
	)
	return a, nil
}

// runQEMU boots the guest, calls line for every line of its serial console
// as it arrives, and kills QEMU when timeout passes.
func runQEMU(ctx context.Context, qemu string, args []string, timeout time.Duration, line func(string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line(strings.TrimRight(sc.Text(), "\r"))
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("QEMU ran past the %v limit and was killed: %w", timeout, context.DeadlineExceeded)
	}
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 failed (%s): %w", cmd.ProcessState, err)
	}
	return nil
}

// guestResult is what the guest's output says.
type guestResult struct {
	Done     bool
	Exits    map[string]int  // test binary -> exit status
	PassLine map[string]bool // test binary printed the final "PASS"
	Passed   map[string]bool // top-level tests
	Failed   []string
	Skipped  []string
	current  string
}

var topResult = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) `)

func newGuestResult() *guestResult {
	return &guestResult{Exits: map[string]int{}, PassLine: map[string]bool{}, Passed: map[string]bool{}}
}

// add parses one line of guest output.
func (r *guestResult) add(l string) {
	switch {
	case strings.HasPrefix(l, markRun):
		r.current = strings.TrimSpace(strings.TrimPrefix(l, markRun))
	case strings.HasPrefix(l, markExit):
		f := strings.Fields(strings.TrimPrefix(l, markExit))
		if len(f) == 2 {
			if n, err := strconv.Atoi(f[1]); err == nil {
				r.Exits[f[0]] = n
			}
		}
		r.current = ""
	case strings.HasPrefix(l, markDone):
		r.Done = true
	case l == "PASS" && r.current != "":
		r.PassLine[r.current] = true
	default:
		if m := topResult.FindStringSubmatch(l); m != nil {
			name := m[2]
			switch m[1] {
			case "PASS":
				r.Passed[name] = true
			case "FAIL":
				r.Failed = append(r.Failed, name)
			case "SKIP":
				r.Skipped = append(r.Skipped, name)
			}
		}
	}
}

// problems lists why the run does not count as a pass.
func (r *guestResult) problems(bins []guestBinary, required []string) []string {
	var p []string
	if !r.Done {
		p = append(p, "the guest never reached the end of /init (crash, hang or kernel panic)")
	}
	for _, b := range bins {
		code, ok := r.Exits[b.Name]
		switch {
		case !ok:
			p = append(p, fmt.Sprintf("%s.test did not finish", b.Name))
		case code != 0:
			p = append(p, fmt.Sprintf("%s.test exited with status %d", b.Name, code))
		case !r.PassLine[b.Name]:
			p = append(p, fmt.Sprintf("%s.test printed no final PASS", b.Name))
		}
	}
	for _, f := range r.Failed {
		p = append(p, "guest test failed: "+f)
	}
	skipped := map[string]bool{}
	for _, s := range r.Skipped {
		skipped[s] = true
	}
	for _, t := range required {
		if !r.Passed[t] {
			why := "did not pass"
			if skipped[t] {
				why = "was skipped"
			}
			p = append(p, fmt.Sprintf("required guest test %s %s", t, why))
		}
	}
	sort.Strings(p)
	return p
}

func (r *guestResult) summary() string {
	return fmt.Sprintf("guest: %d passed, %d failed, %d skipped", len(r.Passed), len(r.Failed), len(r.Skipped))
}
