// Package qemu is the integration harness that runs the project's VFIO tests
// against real VFIO: it boots a Debian kernel under QEMU (TCG, q35, an
// emulated Intel IOMMU and emulated NVMe controllers, one with a CMB, one
// with two namespaces), binds the controllers to vfio-pci in the guest and
// runs the guest test binaries of the packages in guestPackages, printing
// their go test output on the host.
//
// TestQEMUKernelNVMe boots the same machine a second time with the first
// controller left to the kernel's nvme driver (loaded from the same kernel
// package once the other controller is on vfio-pci) and runs
// ./test/qemu/kernelnvme there with the bpfblk binary: scan and perf through
// uring:/dev/nvme0n1, identify and NVM Copy through io_uring passthrough on
// /dev/ng0n1, then the controller handed to vfio-pci and a scan through
// pci:BDF that must find the same blocks.
//
// Run it with
//
//	apt-get install -y --no-install-recommends qemu-system-x86 busybox-static xz-utils
//	BPFBLK_REQUIRE_QEMU=1 go test ./test/qemu
//
// Without QEMU or busybox-static the test skips, unless BPFBLK_REQUIRE_QEMU=1
// (set in CI), in which case it fails. The kernel package (linux-image-amd64's
// dependency) is fetched once with apt-get download into the cache directory
// ($BPFBLK_QEMU_CACHE, else $XDG_CACHE_HOME/bpfblk/qemu or ~/.cache/bpfblk/qemu).
// Images, the initramfs and serial.log go to test/qemu/work/ (the second
// run's to test/qemu/work/kernel-nvme/).
//
// Environment:
//
//	BPFBLK_REQUIRE_QEMU=1       fail instead of skipping when QEMU cannot run
//	BPFBLK_QEMU_CACHE=DIR       kernel cache directory
//	BPFBLK_QEMU_KERNEL_DEB=FILE use this linux-image .deb instead of apt
//	BPFBLK_QEMU_TIMEOUT=SECONDS guest time limit (default 300)
//	BPFBLK_QEMU_RUN=REGEXP      -test.run for the guest test binaries
package qemu
