package qemu

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// kernel is a Debian kernel unpacked for the guest: an image QEMU boots and
// the VFIO modules in load order.
type kernel struct {
	Package string   // e.g. linux-image-6.1.0-48-amd64_6.1.172-1_amd64
	Image   string   // vmlinux (PVH boot) or, failing that, the bzImage
	PVH     bool     // Image is the extracted ELF vmlinux
	Modules []string // .ko paths in dependency order
	Builtin []string // wanted modules that are built into the kernel
	// NVMeModules are the kernel NVMe driver's modules in load order (for
	// the run that leaves a controller to the kernel), or nil with
	// NVMeErr saying why.
	NVMeModules []string
	NVMeErr     error
}

// guestModules are the modules the guest needs, with their dependencies
// (resolved from .modinfo) loaded first.
var guestModules = []string{"vfio_iommu_type1", "vfio_pci", "nvme_tcp", "nvmet_tcp", "loop"}

// nvmeModules is the kernel's NVMe PCIe driver, loaded after the VFIO
// modules in the run that binds a controller to it.
var nvmeModules = []string{"nvme"}

// cacheDir is where kernel packages and their extracted parts are kept
// between runs.
func cacheDir() (string, error) {
	if d := os.Getenv("BPFBLK_QEMU_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "bpfblk", "qemu"), nil
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "bpfblk", "qemu"), nil
	}
	return filepath.Abs(filepath.Join("work", "cache")) // no home: keep it with the work files
}

var imageDep = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[0-9][^\s]*)\s*$`)

// resolveKernelPackage asks apt which real package linux-image-amd64 depends
// on (the metapackage moves with every kernel update).
func resolveKernelPackage() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %v: %s", err, bytes.TrimSpace(out))
	}
	m := imageDep.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image package (run apt-get update): %s", bytes.TrimSpace(out))
	}
	return string(m[1]), nil
}

// kernelDeb returns the path of the kernel .deb, downloading it into
// cache/debs with apt-get download unless it is there already.
func kernelDeb(cache string, logf func(string, ...any)) (string, error) {
	if p := os.Getenv("BPFBLK_QEMU_KERNEL_DEB"); p != "" {
		return p, nil
	}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	pkg, rerr := resolveKernelPackage()
	if rerr != nil && os.Geteuid() == 0 {
		// A machine whose package lists were never fetched: fetch them once.
		logf("%v; running apt-get update", rerr)
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			logf("apt-get update: %v: %s", err, bytes.TrimSpace(out))
		}
		pkg, rerr = resolveKernelPackage()
	}
	if rerr != nil {
		// Offline or no apt lists: any cached kernel will do.
		have, _ := filepath.Glob(filepath.Join(debs, "linux-image-*.deb"))
		if len(have) == 0 {
			return "", rerr
		}
		sort.Strings(have)
		logf("%v; using the cached %s", rerr, filepath.Base(have[len(have)-1]))
		return have[len(have)-1], nil
	}
	if have, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb")); len(have) > 0 {
		sort.Strings(have)
		return have[len(have)-1], nil
	}
	logf("downloading %s with apt-get download into %s", pkg, debs)
	tmp, err := os.MkdirTemp(debs, "dl-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("apt-get", "download", "-q", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %v: %s", pkg, err, bytes.TrimSpace(out))
	}
	got, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(got) != 1 {
		return "", fmt.Errorf("apt-get download %s left %v", pkg, got)
	}
	dst := filepath.Join(debs, filepath.Base(got[0]))
	return dst, os.Rename(got[0], dst)
}

// prepareKernel unpacks what the guest needs from the kernel .deb into
// cache/kernels/NAME (once): the bzImage, the extracted vmlinux, the config
// and the VFIO modules.
func prepareKernel(cache, deb string, logf func(string, ...any)) (*kernel, error) {
	name := strings.TrimSuffix(filepath.Base(deb), ".deb")
	// ".3": the unpacked set grew (the NVMe PCIe driver and its
	// dependencies, NVMe/TCP host and target, loop, configfs); a directory
	// unpacked by an older harness is not reused.
	dir := filepath.Join(cache, "kernels", name+".3")
	done := filepath.Join(dir, ".complete")
	if _, err := os.Stat(done); err != nil {
		if err := unpackKernel(deb, dir, logf); err != nil {
			return nil, err
		}
		if err := os.WriteFile(done, nil, 0o644); err != nil {
			return nil, err
		}
	}
	k := &kernel{Package: name}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err != nil {
		if err := extractVmlinux(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")); err != nil {
			logf("booting the compressed bzImage (about 3 s slower under TCG): %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err == nil {
		k.Image, k.PVH = filepath.Join(dir, "vmlinux"), true
	} else {
		k.Image = filepath.Join(dir, "vmlinuz")
	}
	mods, err := loadModules(filepath.Join(dir, "modules"))
	if err != nil {
		return nil, err
	}
	config, _ := os.ReadFile(filepath.Join(dir, "config"))
	k.Modules, k.Builtin, err = moduleOrder(mods, guestModules, config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	nv, _, err := moduleOrder(mods, nvmeModules, config)
	if err != nil {
		k.NVMeErr = fmt.Errorf("%s: %w", name, err)
	}
	have := map[string]bool{}
	for _, m := range k.Modules {
		have[m] = true
	}
	for _, m := range nv {
		if !have[m] {
			k.NVMeModules = append(k.NVMeModules, m)
		}
	}
	return k, nil
}

// unpackKernel streams the package's data archive through dpkg-deb and
// keeps only the kernel image, its config and the modules under
// drivers/vfio, drivers/iommu and virt/lib (the 400 MB of other modules never touch disk).
func unpackKernel(deb, dir string, logf func(string, ...any)) error {
	logf("unpacking %s", filepath.Base(deb))
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb: %w", err)
	}
	var werr error
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			werr = fmt.Errorf("reading %s: %w", deb, err)
			break
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		var dst string
		base := filepath.Base(h.Name)
		switch {
		case strings.Contains(h.Name, "/boot/vmlinuz-"):
			dst = "vmlinuz"
		case strings.Contains(h.Name, "/boot/config-"):
			dst = "config"
		case strings.Contains(h.Name, "/modules/") && strings.Contains(base, ".ko") && unpackModule(h.Name):
			dst = filepath.Join("modules", base)
		default:
			continue
		}
		if err := writeFrom(filepath.Join(dir, dst), tr); err != nil {
			werr = err
			break
		}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil && werr == nil {
		werr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v: %s", deb, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if werr != nil {
		return werr
	}
	if _, err := os.Stat(filepath.Join(dir, "vmlinuz")); err != nil {
		return fmt.Errorf("%s holds no /boot/vmlinuz-*", deb)
	}
	// Decompressed modules.
	xzs, _ := filepath.Glob(filepath.Join(dir, "modules", "*.ko.xz"))
	for _, f := range xzs {
		if err := xzDecompress(f, strings.TrimSuffix(f, ".xz")); err != nil {
			return err
		}
		os.Remove(f)
	}
	return nil
}

// unpackModule reports whether the module at path in the package is one the
// guest may load: VFIO and the IOMMU, the NVMe host and target drivers
// (nvme-tcp against bpfblk serve, nvmet-tcp for bpfblk's host), loop and
// configfs for nvmet, and the CRC helpers they depend on. The PCIe driver
// nvme.ko is never loaded (nothing depends on it): the guest's controllers
// go to vfio-pci.
func unpackModule(path string) bool {
	for _, d := range []string{"/kernel/drivers/vfio/", "/kernel/virt/lib/", "/kernel/drivers/iommu/",
		"/kernel/drivers/nvme/", "/kernel/fs/configfs/", "/kernel/drivers/block/loop.", "/kernel/block/t10-pi.",
		// nvme-core's dependencies (t10-pi and the CRCs it uses), wherever
		// the kernel version keeps them
		"/kernel/block/", "/kernel/lib/", "/kernel/crypto/"} {
		if strings.Contains(path, d) {
			return true
		}
	}
	return false
}

func writeFrom(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func xzDecompress(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return xzStream(in, dst)
}

func xzStream(r io.Reader, dst string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = r
	cmd.Stdout = out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("xz -dc: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// extractVmlinux pulls the ELF kernel out of an xz-compressed bzImage, the
// way scripts/extract-vmlinux does. QEMU boots it through its PVH entry
// point, which skips the decompressor that costs seconds under TCG.
func extractVmlinux(bz, dst string) error {
	if _, err := exec.LookPath("xz"); err != nil {
		return fmt.Errorf("xz not installed (apt-get install xz-utils)")
	}
	b, err := os.ReadFile(bz)
	if err != nil {
		return err
	}
	off := bytes.Index(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0})
	if off < 0 {
		return fmt.Errorf("%s is not xz-compressed", bz)
	}
	// xz reports the bytes after the stream as corruption; whether the
	// output is a usable kernel is checked below.
	xerr := xzStream(bytes.NewReader(b[off:]), dst)
	f, err := elf.Open(dst)
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("extracted kernel is not ELF: %v (xz: %v)", err, xerr)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			notes, _ := io.ReadAll(p.Open())
			// XEN_ELFNOTE_PHYS32_ENTRY (18) in a "Xen" note: the PVH entry.
			if bytes.Contains(notes, []byte("Xen\x00")) {
				return nil
			}
		}
	}
	os.Remove(dst)
	return fmt.Errorf("extracted kernel has no PVH entry note")
}

// module is a kernel module file and what its .modinfo says.
type module struct {
	Path    string
	Name    string
	Depends []string
}

func normModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// readModinfo reads a module's name and dependencies from its .modinfo
// section (the package ships no modules.dep: depmod runs at install time).
func readModinfo(path string) (module, error) {
	m := module{Path: path}
	f, err := elf.Open(path)
	if err != nil {
		return m, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return m, fmt.Errorf("module %s has no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return m, fmt.Errorf("module %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.Name = normModName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					m.Depends = append(m.Depends, normModName(d))
				}
			}
		}
	}
	if m.Name == "" {
		m.Name = normModName(strings.SplitN(filepath.Base(path), ".ko", 2)[0])
	}
	return m, nil
}

func loadModules(dir string) (map[string]module, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.ko"))
	if err != nil {
		return nil, err
	}
	mods := map[string]module{}
	for _, f := range files {
		m, err := readModinfo(f)
		if err != nil {
			return nil, err
		}
		mods[m.Name] = m
	}
	return mods, nil
}

// builtinModule reports whether config builds the module into the kernel
// (CONFIG_VFIO_PCI=y for vfio_pci, and so on).
func builtinModule(config []byte, name string) bool {
	sym := "CONFIG_" + strings.ToUpper(name)
	sc := bufio.NewScanner(bytes.NewReader(config))
	for sc.Scan() {
		if sc.Text() == sym+"=y" {
			return true
		}
	}
	return false
}

// moduleOrder returns the paths of roots and their dependencies, each after
// all its dependencies, and the roots that are built in. A dependency that is
// neither a module file nor built in is an error.
func moduleOrder(mods map[string]module, roots []string, config []byte) (paths, builtin []string, err error) {
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, from string) error
	visit = func(n, from string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", n)
		case 2:
			return nil
		}
		m, ok := mods[n]
		if !ok {
			if builtinModule(config, n) {
				state[n] = 2
				builtin = append(builtin, n)
				return nil
			}
			if from == "" {
				return fmt.Errorf("module %s is neither in the package nor built in", n)
			}
			return fmt.Errorf("module %s (needed by %s) is neither in the package nor built in", n, from)
		}
		state[n] = 1
		for _, d := range m.Depends {
			if err := visit(d, n); err != nil {
				return err
			}
		}
		state[n] = 2
		paths = append(paths, m.Path)
		return nil
	}
	for _, r := range roots {
		if err := visit(normModName(r), ""); err != nil {
			return nil, nil, err
		}
	}
	return paths, builtin, nil
}
