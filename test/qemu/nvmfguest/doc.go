// Package nvmfguest holds the NVMe/TCP interoperability tests that run in the
// QEMU guest of test/qemu (BPFBLK_NVMF_GUEST=1 there; they skip elsewhere):
// the Linux kernel's nvme-tcp host against bpfblk's target, and bpfblk's
// host against the kernel's nvmet-tcp target.
package nvmfguest
