package nvme

import (
	"fmt"

	"github.com/pkg/errors"
)

// Status code types (SCT).
const (
	SCTGeneric         = 0
	SCTCommandSpecific = 1
	SCTMedia           = 2
	SCTPath            = 3
	SCTVendor          = 7
)

// StatusError is a non-successful NVMe completion status. errors.Is matches two
// StatusErrors with the same SCT and SC regardless of DNR and More, so the
// sentinels below can be used as errors.Is targets.
type StatusError struct {
	SCT  uint8 // status code type
	SC   uint8 // status code
	CRD  uint8 // command retry delay index
	More bool  // more information in the Error Information log page
	DNR  bool  // do not retry
}

// StatusFromField converts the 16-bit CQE status word (phase tag in bit 0) into
// nil for success or a StatusError.
func StatusFromField(st uint16) error {
	if st>>1 == 0 {
		return nil
	}
	return StatusError{
		SC:   uint8(st >> 1),
		SCT:  uint8(st >> 9 & 7),
		CRD:  uint8(st >> 12 & 3),
		More: st>>14&1 != 0,
		DNR:  st>>15&1 != 0,
	}
}

// Field returns the 16-bit CQE status word of e with phase tag 0.
func (e StatusError) Field() uint16 {
	st := uint16(e.SC)<<1 | uint16(e.SCT&7)<<9 | uint16(e.CRD&3)<<12
	if e.More {
		st |= 1 << 14
	}
	if e.DNR {
		st |= 1 << 15
	}
	return st
}

// Error returns the spec's name for the status.
func (e StatusError) Error() string {
	s := fmt.Sprintf("nvme: %s (SCT %#x SC %#02x", statusName(e.SCT, e.SC), e.SCT, e.SC)
	if e.DNR {
		s += ", DNR"
	}
	if e.More {
		s += ", More"
	}
	return s + ")"
}

// Is reports whether target is a StatusError with the same SCT and SC.
func (e StatusError) Is(target error) bool {
	var t StatusError
	switch v := target.(type) {
	case StatusError:
		t = v
	case *StatusError:
		if v == nil {
			return false
		}
		t = *v
	default:
		return false
	}
	return t.SCT == e.SCT && t.SC == e.SC
}

// Common statuses as errors.Is targets.
var (
	ErrInvalidOpcode       = StatusError{SCT: SCTGeneric, SC: 0x01}
	ErrInvalidField        = StatusError{SCT: SCTGeneric, SC: 0x02}
	ErrCIDConflict         = StatusError{SCT: SCTGeneric, SC: 0x03}
	ErrDataTransfer        = StatusError{SCT: SCTGeneric, SC: 0x04}
	ErrInternal            = StatusError{SCT: SCTGeneric, SC: 0x06}
	ErrAbortRequested      = StatusError{SCT: SCTGeneric, SC: 0x07}
	ErrAbortSQDeleted      = StatusError{SCT: SCTGeneric, SC: 0x08}
	ErrInvalidNamespace    = StatusError{SCT: SCTGeneric, SC: 0x0b}
	ErrCommandSequence     = StatusError{SCT: SCTGeneric, SC: 0x0c}
	ErrInvalidCMBUse       = StatusError{SCT: SCTGeneric, SC: 0x12}
	ErrPRPOffsetInvalid    = StatusError{SCT: SCTGeneric, SC: 0x13}
	ErrLBAOutOfRange       = StatusError{SCT: SCTGeneric, SC: 0x80}
	ErrCapacityExceeded    = StatusError{SCT: SCTGeneric, SC: 0x81}
	ErrNamespaceNotReady   = StatusError{SCT: SCTGeneric, SC: 0x82}
	ErrInvalidCQ           = StatusError{SCT: SCTCommandSpecific, SC: 0x00}
	ErrInvalidQueueID      = StatusError{SCT: SCTCommandSpecific, SC: 0x01}
	ErrInvalidQueueSize    = StatusError{SCT: SCTCommandSpecific, SC: 0x02}
	ErrAbortLimit          = StatusError{SCT: SCTCommandSpecific, SC: 0x03}
	ErrInvalidLogPage      = StatusError{SCT: SCTCommandSpecific, SC: 0x09}
	ErrInvalidQueueDelete  = StatusError{SCT: SCTCommandSpecific, SC: 0x0c}
	ErrFeatureNotChangable = StatusError{SCT: SCTCommandSpecific, SC: 0x0e}
	ErrCommandSizeLimit    = StatusError{SCT: SCTCommandSpecific, SC: 0x83}
	ErrWriteFault          = StatusError{SCT: SCTMedia, SC: 0x80}
	ErrUnrecoveredRead     = StatusError{SCT: SCTMedia, SC: 0x81}
	ErrCompareFailure      = StatusError{SCT: SCTMedia, SC: 0x85}
	ErrAccessDenied        = StatusError{SCT: SCTMedia, SC: 0x86}
)

// Driver-level errors: a command that never completed normally gets exactly one
// of these (possibly wrapped) through its completion callback.
var (
	// ErrTimeout: the command did not complete within its timeout; it was
	// aborted, and if the abort did not help, the controller was reset.
	ErrTimeout = errors.New("nvme: command timed out")
	// ErrAborted: the command was aborted at the host's request.
	ErrAborted = errors.New("nvme: command aborted")
	// ErrReset: the controller was reset while the command was outstanding.
	ErrReset = errors.New("nvme: command failed by controller reset")
	// ErrControllerFatal: the controller reported CSTS.CFS, reads as removed,
	// or could not be brought back by a reset.
	ErrControllerFatal = errors.New("nvme: controller fatal status")
	// ErrQueueFull: the queue pair has no free slot; retry after Process.
	ErrQueueFull = errors.New("nvme: queue full")
	// ErrClosed: the queue pair or controller was closed.
	ErrClosed = errors.New("nvme: closed")
	// ErrNotSupported: the controller does not support the command (ONCS/OACS).
	ErrNotSupported = errors.New("nvme: command not supported by controller")
)

var genericNames = map[uint8]string{
	0x00: "Successful Completion",
	0x01: "Invalid Command Opcode",
	0x02: "Invalid Field in Command",
	0x03: "Command ID Conflict",
	0x04: "Data Transfer Error",
	0x05: "Commands Aborted due to Power Loss Notification",
	0x06: "Internal Error",
	0x07: "Command Abort Requested",
	0x08: "Command Aborted due to SQ Deletion",
	0x09: "Command Aborted due to Failed Fused Command",
	0x0a: "Command Aborted due to Missing Fused Command",
	0x0b: "Invalid Namespace or Format",
	0x0c: "Command Sequence Error",
	0x0d: "Invalid SGL Segment Descriptor",
	0x0e: "Invalid Number of SGL Descriptors",
	0x0f: "Data SGL Length Invalid",
	0x10: "Metadata SGL Length Invalid",
	0x11: "SGL Descriptor Type Invalid",
	0x12: "Invalid Use of Controller Memory Buffer",
	0x13: "PRP Offset Invalid",
	0x14: "Atomic Write Unit Exceeded",
	0x15: "Operation Denied",
	0x16: "SGL Offset Invalid",
	0x18: "Host Identifier Inconsistent Format",
	0x19: "Keep Alive Timer Expired",
	0x1a: "Keep Alive Timeout Invalid",
	0x1b: "Command Aborted due to Preempt and Abort",
	0x1c: "Sanitize Failed",
	0x1d: "Sanitize In Progress",
	0x1e: "SGL Data Block Granularity Invalid",
	0x1f: "Command Not Supported for Queue in CMB",
	0x20: "Namespace is Write Protected",
	0x21: "Command Interrupted",
	0x22: "Transient Transport Error",
	0x23: "Command Prohibited by Command and Feature Lockdown",
	0x24: "Admin Command Media Not Ready",
	0x80: "LBA Out of Range",
	0x81: "Capacity Exceeded",
	0x82: "Namespace Not Ready",
	0x83: "Reservation Conflict",
	0x84: "Format In Progress",
	0x85: "Invalid Value Size",
	0x86: "Invalid Key Size",
	0x87: "KV Key Does Not Exist",
	0x88: "Unrecovered Error",
	0x89: "Key Exists",
}

var specificNames = map[uint8]string{
	0x00: "Completion Queue Invalid",
	0x01: "Invalid Queue Identifier",
	0x02: "Invalid Queue Size",
	0x03: "Abort Command Limit Exceeded",
	0x05: "Asynchronous Event Request Limit Exceeded",
	0x06: "Invalid Firmware Slot",
	0x07: "Invalid Firmware Image",
	0x08: "Invalid Interrupt Vector",
	0x09: "Invalid Log Page",
	0x0a: "Invalid Format",
	0x0b: "Firmware Activation Requires Conventional Reset",
	0x0c: "Invalid Queue Deletion",
	0x0d: "Feature Identifier Not Saveable",
	0x0e: "Feature Not Changeable",
	0x0f: "Feature Not Namespace Specific",
	0x10: "Firmware Activation Requires NVM Subsystem Reset",
	0x11: "Firmware Activation Requires Controller Level Reset",
	0x12: "Firmware Activation Requires Maximum Time Violation",
	0x13: "Firmware Activation Prohibited",
	0x14: "Overlapping Range",
	0x15: "Namespace Insufficient Capacity",
	0x16: "Namespace Identifier Unavailable",
	0x18: "Namespace Already Attached",
	0x19: "Namespace Is Private",
	0x1a: "Namespace Not Attached",
	0x1b: "Thin Provisioning Not Supported",
	0x1c: "Controller List Invalid",
	0x1d: "Device Self-test In Progress",
	0x1e: "Boot Partition Write Prohibited",
	0x1f: "Invalid Controller Identifier",
	0x20: "Invalid Secondary Controller State",
	0x21: "Invalid Number of Controller Resources",
	0x22: "Invalid Resource Identifier",
	0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
	0x24: "ANA Group Identifier Invalid",
	0x25: "ANA Attach Failed",
	0x29: "I/O Command Set Not Supported",
	0x2a: "I/O Command Set Not Enabled",
	0x2b: "I/O Command Set Combination Rejected",
	0x2c: "Invalid I/O Command Set",
	0x80: "Conflicting Attributes",
	0x81: "Invalid Protection Information",
	0x82: "Attempted Write to Read Only Range",
	0x83: "Command Size Limit Exceeded",
}

var mediaNames = map[uint8]string{
	0x80: "Write Fault",
	0x81: "Unrecovered Read Error",
	0x82: "End-to-end Guard Check Error",
	0x83: "End-to-end Application Tag Check Error",
	0x84: "End-to-end Reference Tag Check Error",
	0x85: "Compare Failure",
	0x86: "Access Denied",
	0x87: "Deallocated or Unwritten Logical Block",
}

var pathNames = map[uint8]string{
	0x00: "Internal Path Error",
	0x01: "Asymmetric Access Persistent Loss",
	0x02: "Asymmetric Access Inaccessible",
	0x03: "Asymmetric Access Transition",
	0x60: "Controller Pathing Error",
	0x70: "Host Pathing Error",
	0x71: "Command Aborted By Host",
}

// statusName returns the spec's name for a status code type and code.
func statusName(sct, sc uint8) string {
	var m map[uint8]string
	switch sct {
	case SCTGeneric:
		m = genericNames
	case SCTCommandSpecific:
		m = specificNames
	case SCTMedia:
		m = mediaNames
	case SCTPath:
		m = pathNames
	case SCTVendor:
		return "Vendor Specific"
	}
	if n, ok := m[sc]; ok {
		return n
	}
	return "Reserved Status"
}
