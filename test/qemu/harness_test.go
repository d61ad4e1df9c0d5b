package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests check the harness itself; they run everywhere.

func TestCPIOFormat(t *testing.T) {
	var b bytes.Buffer
	w := newCPIO(&b)
	w.Dir("bin")
	w.CharDev("dev/console", 5, 1)
	w.File("/init", 0o755, []byte("#!/bin/sh\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	type ent struct {
		name       string
		mode       uint64
		data       string
		rmaj, rmin uint64
	}
	var got []ent
	buf := b.Bytes()
	for len(buf) > 0 {
		if len(buf) < 110 || string(buf[:6]) != "070701" {
			t.Fatalf("bad header at %d: %q", b.Len()-len(buf), buf[:min(len(buf), 16)])
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(buf[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		size, nameLen := field(6), field(11)
		name := string(buf[110 : 110+nameLen-1])
		off := (110 + int(nameLen) + 3) &^ 3
		data := string(buf[off : off+int(size)])
		got = append(got, ent{name, field(1), data, field(9), field(10)})
		buf = buf[(off+int(size)+3)&^3:]
		if name == "TRAILER!!!" {
			break
		}
	}
	want := []ent{
		{"bin", modeDir | 0o755, "", 0, 0},
		{"dev/console", modeChar | 0o600, "", 5, 1},
		{"init", modeFile | 0o755, "#!/bin/sh\n", 0, 0},
		{"TRAILER!!!", 0, "", 0, 0},
	}
	if !reflect.DeepEqual(got, want) || len(buf) != 0 {
		t.Fatalf("archive holds %+v (+%d bytes), want %+v", got, len(buf), want)
	}
}

func TestModuleOrder(t *testing.T) {
	mods := map[string]module{
		"vfio":             {Path: "vfio.ko", Name: "vfio"},
		"vfio_iommu_type1": {Path: "vfio_iommu_type1.ko", Name: "vfio_iommu_type1", Depends: []string{"vfio"}},
		"vfio_virqfd":      {Path: "vfio_virqfd.ko", Name: "vfio_virqfd"},
		"irqbypass":        {Path: "irqbypass.ko", Name: "irqbypass"},
		"vfio_pci_core":    {Path: "vfio-pci-core.ko", Name: "vfio_pci_core", Depends: []string{"vfio", "vfio_virqfd", "irqbypass"}},
		"vfio_pci":         {Path: "vfio-pci.ko", Name: "vfio_pci", Depends: []string{"vfio_pci_core", "vfio"}},
	}
	paths, builtin, err := moduleOrder(mods, []string{"vfio_iommu_type1", "vfio-pci"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"vfio.ko", "vfio_iommu_type1.ko", "vfio_virqfd.ko", "irqbypass.ko", "vfio-pci-core.ko", "vfio-pci.ko"}
	if !reflect.DeepEqual(paths, want) || len(builtin) != 0 {
		t.Fatalf("order %v builtin %v, want %v", paths, builtin, want)
	}
	// A missing dependency is an error unless the config builds it in.
	delete(mods, "irqbypass")
	if _, _, err := moduleOrder(mods, []string{"vfio_pci"}, nil); err == nil || !strings.Contains(err.Error(), "irqbypass (needed by vfio_pci_core)") {
		t.Fatalf("missing dependency: %v", err)
	}
	_, builtin, err = moduleOrder(mods, []string{"vfio_pci"}, []byte("CONFIG_IRQBYPASS=m\nCONFIG_IRQ_BYPASS=y\n# x\nCONFIG_IRQBYPASS=y\n"))
	if err != nil || !reflect.DeepEqual(builtin, []string{"irqbypass"}) {
		t.Fatalf("built-in dependency: %v %v", builtin, err)
	}
	mods["vfio"] = module{Path: "vfio.ko", Name: "vfio", Depends: []string{"vfio_pci"}}
	if _, _, err := moduleOrder(mods, []string{"vfio_pci"}, []byte("CONFIG_IRQBYPASS=y\n")); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle: %v", err)
	}
}

func TestGuestResult(t *testing.T) {
	bins := []guestBinary{{Name: "nvme_vfio"}}
	out := `bpfblk-init: run nvme_vfio
=== RUN   TestA
--- PASS: TestA (0.01s)
=== RUN   TestB
    --- FAIL: TestB/sub (0.00s)
--- PASS: TestB (0.00s)
--- SKIP: TestC (0.00s)
PASS
bpfblk-init: exit nvme_vfio 0
bpfblk-init: done at 3 s`
	r := newGuestResult()
	for _, l := range strings.Split(out, "\n") {
		r.add(l)
	}
	if p := r.problems(bins, []string{"TestA", "TestB"}); len(p) != 0 {
		t.Fatalf("problems %v", p)
	}
	if p := r.problems(bins, []string{"TestC", "TestD"}); len(p) != 2 || !strings.Contains(p[0], "TestC was skipped") {
		t.Fatalf("required tests: %v", p)
	}
	if r.summary() != "guest: 2 passed, 0 failed, 1 skipped" {
		t.Fatal(r.summary())
	}
	// A guest that died half way.
	r = newGuestResult()
	for _, l := range strings.Split(out, "\n")[:4] {
		r.add(l)
	}
	p := r.problems(bins, nil)
	if len(p) != 2 || !strings.Contains(strings.Join(p, "|"), "never reached the end") || !strings.Contains(strings.Join(p, "|"), "did not finish") {
		t.Fatalf("crashed guest: %v", p)
	}
	// A failing binary.
	r = newGuestResult()
	for _, l := range []string{"bpfblk-init: run nvme_vfio", "--- FAIL: TestA (1.00s)", "FAIL", "bpfblk-init: exit nvme_vfio 1", "bpfblk-init: done"} {
		r.add(l)
	}
	p = r.problems(bins, nil)
	if len(p) != 2 || !strings.Contains(strings.Join(p, "|"), "guest test failed: TestA") {
		t.Fatalf("failing guest: %v", p)
	}
}

func TestInitScript(t *testing.T) {
	s := initScript(guestConfig{Modules: []string{"vfio.ko", "vfio-pci.ko"}, Tests: []guestBinary{{Name: "nvme_vfio"}},
		HugePages: 8, Timeout: time.Minute, Run: "TestX$'"})
	for _, want := range []string{"insmod /lib/modules/vfio.ko", "insmod /lib/modules/vfio-pci.ko", "echo 8 > /proc/sys/vm/nr_hugepages",
		"echo vfio-pci > $d/driver_override", "export BPFBLK_VFIO_TEST_DEVICES=$devs",
		"/tests/nvme_vfio.test -test.v -test.timeout=60s -test.run 'TestX$'", `say "exit nvme_vfio $?"`, "poweroff -f"} {
		if !strings.Contains(s, want) {
			t.Errorf("init script lacks %q:\n%s", want, s)
		}
	}
	if strings.Index(s, "vfio.ko") > strings.Index(s, "vfio-pci.ko") {
		t.Error("modules out of order")
	}
	if strings.Contains(s, "driver_override") && strings.Contains(s, "echo nvme >") {
		t.Error("a VFIO-only run leaves a controller to the kernel")
	}
}

// TestInitScriptKernelNVMe: the kernel-NVMe run leaves the first controller
// to the nvme driver, loads that driver only after the others went to
// vfio-pci, and tells the guest test where the device and the CLI are.
func TestInitScriptKernelNVMe(t *testing.T) {
	s := initScript(guestConfig{Modules: []string{"vfio.ko"}, LateModules: []string{"nvme-core.ko", "nvme.ko"},
		Tests: []guestBinary{{Name: "kn"}}, KernelNVMe: true, CLI: "/x/bpfblk", Timeout: time.Minute})
	order := []string{"insmod /lib/modules/vfio.ko", "echo nvme > $d/driver_override", "continue", "echo vfio-pci > $d/driver_override",
		"insmod /lib/modules/nvme-core.ko", "insmod /lib/modules/nvme.ko", "export BPFBLK_KERNEL_NVME_DEVICE=$knvme",
		"export BPFBLK_CLI=/tests/bpfblk", "/tests/kn.test"}
	at := 0
	for _, w := range order {
		i := strings.Index(s[at:], w)
		if i < 0 {
			t.Fatalf("init script lacks %q after byte %d:\n%s", w, at, s)
		}
		at += i + len(w)
	}
}

func TestResolveKernelDependency(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-48-amd64\n  Recommends: x\n"
	m := imageDep.FindStringSubmatch(out)
	if m == nil || m[1] != "linux-image-6.1.0-48-amd64" {
		t.Fatalf("%q", m)
	}
	if imageDep.FindStringSubmatch("linux-image-amd64\n  Depends: linux-base\n") != nil {
		t.Fatal("matched a non-image dependency")
	}
}

func TestRetryable(t *testing.T) {
	panicked := newGuestResult()
	panicked.add("[    0.036000] Kernel panic - not syncing: timer doesn't work through Interrupt-remapped IO-APIC")
	if !retryable(panicked, errors.New("QEMU exited before the guest finished")) {
		t.Error("a guest lost at boot is not retried")
	}
	failed := newGuestResult()
	failed.add("--- FAIL: TestDeviceIO (0.10s)")
	if retryable(failed, nil) {
		t.Error("a failed guest test is retried")
	}
	if retryable(newGuestResult(), fmt.Errorf("killed: %w", context.DeadlineExceeded)) {
		t.Error("a guest that hit the time limit is retried")
	}
	done := newGuestResult()
	done.add(markDone)
	if retryable(done, nil) {
		t.Error("a finished guest is retried")
	}
}
