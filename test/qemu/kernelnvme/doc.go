// Package kernelnvme holds the guest side of the QEMU run that leaves an
// NVMe controller to the kernel's nvme driver (test/qemu's
// TestQEMUKernelNVMe). Its test runs inside that guest, where the harness
// exports BPFBLK_KERNEL_NVME_DEVICE (the controller's PCI address) and
// BPFBLK_CLI (the bpfblk binary), and skips anywhere else.
package kernelnvme
