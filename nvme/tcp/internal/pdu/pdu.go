// Package pdu encodes and decodes the protocol data units of the NVMe/TCP
// transport (NVMe/TCP Transport Specification 1.0, section 3.6): the common
// header, the per-type headers of ICReq/ICResp, CapsuleCmd/CapsuleResp,
// H2CData/C2HData, R2T and H2CTermReq/C2HTermReq, and the CRC32C header and
// data digests. It neither reads nor writes a socket: the host and target
// feed it bytes. Every decoder checks lengths and fields against the
// specification and returns an error naming what arrived; nothing panics on
// any input.
package pdu

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/pkg/errors"
)

// PDU types.
const (
	TypeICReq       = 0x00
	TypeICResp      = 0x01
	TypeH2CTermReq  = 0x02
	TypeC2HTermReq  = 0x03
	TypeCapsuleCmd  = 0x04
	TypeCapsuleResp = 0x05
	TypeH2CData     = 0x06
	TypeC2HData     = 0x07
	TypeR2T         = 0x09
)

// Common header flags.
const (
	FlagHDGST   = 0x01 // a header digest follows the PDU header
	FlagDDGST   = 0x02 // a data digest follows the PDU data
	FlagLast    = 0x04 // H2CData/C2HData: last PDU of the transfer
	FlagSuccess = 0x08 // C2HData: the command succeeded, no CapsuleResp follows
)

// Header lengths (HLEN) of each PDU type.
const (
	CommonLen      = 8
	ICLen          = 128
	TermLen        = 24
	CapsuleCmdLen  = CommonLen + 64
	CapsuleRespLen = CommonLen + 16
	DataLen        = 24 // H2CData, C2HData
	R2TLen         = 24
	DigestLen      = 4
	// MaxHeader is the largest header plus header digest.
	MaxHeader = ICLen + DigestLen
	// MaxTermData is the most data a termination request carries (the
	// offending PDU header).
	MaxTermData = 152 - TermLen
)

// Fatal error status (FES) values of H2CTermReq and C2HTermReq.
const (
	FESInvalidHeader    = 0x01 // invalid PDU header field
	FESSequence         = 0x02 // PDU sequence error
	FESHeaderDigest     = 0x03 // header digest error
	FESOutOfRange       = 0x04 // data transfer out of range
	FESLimitExceeded    = 0x05 // R2T limit exceeded / data transfer limit
	FESUnsupportedParam = 0x06 // unsupported parameter
)

// PFV is the PDU format version of NVMe/TCP 1.0.
const PFV = 0

// ErrDigest marks a header or data digest mismatch.
var ErrDigest = errors.New("nvme/tcp: digest mismatch")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC returns the CRC32C of b, as NVMe/TCP header and data digests use it.
func CRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// UpdateCRC continues a CRC32C over more data.
func UpdateCRC(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

var le = binary.LittleEndian

// Header is the common header of every PDU.
type Header struct {
	Type  uint8
	Flags uint8
	HLen  uint8  // header length, without the header digest
	PDO   uint8  // PDU data offset (0: no data)
	PLen  uint32 // total PDU length, digests included
}

// PutHeader writes the common header into b[0:8].
func PutHeader(b []byte, h Header) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = h.Type, h.Flags, h.HLen, h.PDO
	le.PutUint32(b[4:], h.PLen)
}

// ParseHeader decodes the common header from b[0:8].
func ParseHeader(b []byte) (Header, error) {
	if len(b) < CommonLen {
		return Header{}, errors.Errorf("nvme/tcp: PDU common header needs %d bytes, have %d", CommonLen, len(b))
	}
	return Header{Type: b[0], Flags: b[1], HLen: b[2], PDO: b[3], PLen: le.Uint32(b[4:])}, nil
}

// TypeName names a PDU type.
func TypeName(t uint8) string {
	switch t {
	case TypeICReq:
		return "ICReq"
	case TypeICResp:
		return "ICResp"
	case TypeH2CTermReq:
		return "H2CTermReq"
	case TypeC2HTermReq:
		return "C2HTermReq"
	case TypeCapsuleCmd:
		return "CapsuleCmd"
	case TypeCapsuleResp:
		return "CapsuleResp"
	case TypeH2CData:
		return "H2CData"
	case TypeC2HData:
		return "C2HData"
	case TypeR2T:
		return "R2T"
	}
	return "unknown"
}

// Side says which end of a connection decodes: the host accepts only
// controller-to-host PDUs and the controller only host-to-controller ones.
type Side uint8

// Sides.
const (
	Host Side = iota
	Controller
)

// Limits are what a connection negotiated.
type Limits struct {
	HDGST, DDGST bool   // digests enabled
	MaxData      uint32 // largest PDU data accepted (MAXH2CDATA, or the buffer)
	Align        uint8  // required PDO alignment in bytes (CPDA/HPDA+1)*4; 0 = 4
}

// Check validates a common header against the PDU types the side may
// receive, their fixed header lengths, the digest flags the connection
// negotiated and lim.MaxData. It returns the header length including the
// header digest and the data length (0 if none), and a non-nil FES with the
// error.
func Check(h Header, side Side, lim Limits, negotiated bool) (hdr, data int, fes uint16, err error) {
	want := 0
	switch h.Type {
	case TypeICReq, TypeH2CTermReq, TypeCapsuleCmd, TypeH2CData:
		if side != Controller {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: host received %s (type %#x), a host-to-controller PDU", TypeName(h.Type), h.Type)
		}
	case TypeICResp, TypeC2HTermReq, TypeCapsuleResp, TypeC2HData, TypeR2T:
		if side != Host {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: controller received %s (type %#x), a controller-to-host PDU", TypeName(h.Type), h.Type)
		}
	default:
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: unknown PDU type %#x (hlen %d, plen %d)", h.Type, h.HLen, h.PLen)
	}
	switch h.Type {
	case TypeICReq, TypeICResp:
		want = ICLen
	case TypeH2CTermReq, TypeC2HTermReq:
		want = TermLen
	case TypeCapsuleCmd:
		want = CapsuleCmdLen
	case TypeCapsuleResp:
		want = CapsuleRespLen
	case TypeH2CData, TypeC2HData:
		want = DataLen
	case TypeR2T:
		want = R2TLen
	}
	if int(h.HLen) != want {
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s with hlen %d, want %d", TypeName(h.Type), h.HLen, want)
	}
	isIC := h.Type == TypeICReq || h.Type == TypeICResp
	if isIC != !negotiated {
		return 0, 0, FESSequence, errors.Errorf("nvme/tcp: %s out of sequence (connection initialised: %v)", TypeName(h.Type), negotiated)
	}
	isTerm := h.Type == TypeH2CTermReq || h.Type == TypeC2HTermReq
	hdr = want
	if !isIC && !isTerm {
		if (h.Flags&FlagHDGST != 0) != lim.HDGST {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s header digest flag %v, negotiated %v", TypeName(h.Type), h.Flags&FlagHDGST != 0, lim.HDGST)
		}
		if lim.HDGST {
			hdr += DigestLen
		}
	}
	if int64(h.PLen) < int64(hdr) {
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s plen %d shorter than its header (%d)", TypeName(h.Type), h.PLen, hdr)
	}
	if isIC {
		if h.PLen != ICLen {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s plen %d, want %d", TypeName(h.Type), h.PLen, ICLen)
		}
		return hdr, 0, 0, nil
	}
	if isTerm {
		if h.PLen > TermLen+MaxTermData {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s plen %d over %d", TypeName(h.Type), h.PLen, TermLen+MaxTermData)
		}
		return hdr, int(h.PLen) - hdr, 0, nil
	}
	switch h.Type {
	case TypeCapsuleResp, TypeR2T:
		if h.PDO != 0 || int(h.PLen) != hdr {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s carries data (pdo %d, plen %d, header %d)", TypeName(h.Type), h.PDO, h.PLen, hdr)
		}
		return hdr, 0, 0, nil
	}
	// CapsuleCmd, H2CData, C2HData.
	if h.PDO == 0 {
		if int(h.PLen) != hdr || h.Type != TypeCapsuleCmd {
			return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s without a data offset (pdo 0, plen %d)", TypeName(h.Type), h.PLen)
		}
		return hdr, 0, 0, nil
	}
	align := int(lim.Align)
	if align == 0 {
		align = 4
	}
	if int(h.PDO) < hdr || int(h.PDO)%align != 0 {
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s pdo %d: must be >= %d and a multiple of %d", TypeName(h.Type), h.PDO, hdr, align)
	}
	tail := 0
	if lim.DDGST {
		tail = DigestLen
	}
	if (h.Flags&FlagDDGST != 0) != lim.DDGST {
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s data digest flag %v, negotiated %v", TypeName(h.Type), h.Flags&FlagDDGST != 0, lim.DDGST)
	}
	n := int64(h.PLen) - int64(h.PDO) - int64(tail)
	if n <= 0 {
		return 0, 0, FESInvalidHeader, errors.Errorf("nvme/tcp: %s plen %d leaves no data after pdo %d", TypeName(h.Type), h.PLen, h.PDO)
	}
	if lim.MaxData != 0 && n > int64(lim.MaxData) {
		return 0, 0, FESLimitExceeded, errors.Errorf("nvme/tcp: %s with %d data bytes, limit %d", TypeName(h.Type), n, lim.MaxData)
	}
	// Padding between the header and PDO is returned as part of hdr.
	return int(h.PDO), int(n), 0, nil
}

// CheckHeaderDigest verifies the header digest after the first hlen bytes
// of b when lim.HDGST is set.
func CheckHeaderDigest(b []byte, hlen int) error {
	if len(b) < hlen+DigestLen {
		return errors.Errorf("nvme/tcp: header digest: have %d bytes, need %d", len(b), hlen+DigestLen)
	}
	got, want := le.Uint32(b[hlen:]), CRC(b[:hlen])
	if got != want {
		return errors.Wrapf(ErrDigest, "header digest %#08x, computed %#08x (PDU type %#x)", got, want, b[0])
	}
	return nil
}

// ICReq is the host's initialize connection request.
type ICReq struct {
	PFV          uint16
	HPDA         uint8 // host PDU data alignment, (HPDA+1)*4 bytes
	HDGST, DDGST bool
	MaxR2T       uint32 // maximum outstanding R2Ts per command, 0-based
}

// ICResp is the controller's initialize connection response.
type ICResp struct {
	PFV          uint16
	CPDA         uint8 // controller PDU data alignment
	HDGST, DDGST bool
	MaxH2CData   uint32 // largest H2CData PDU data the controller accepts
}

func digestBits(h, d bool) uint8 {
	var v uint8
	if h {
		v |= 1
	}
	if d {
		v |= 2
	}
	return v
}

// PutICReq writes a 128-byte ICReq PDU into b.
func PutICReq(b []byte, r ICReq) {
	clear(b[:ICLen])
	PutHeader(b, Header{Type: TypeICReq, HLen: ICLen, PLen: ICLen})
	le.PutUint16(b[8:], r.PFV)
	b[10] = r.HPDA
	b[11] = digestBits(r.HDGST, r.DDGST)
	le.PutUint32(b[12:], r.MaxR2T)
}

// ParseICReq decodes an ICReq PDU (b holds the whole 128 bytes).
func ParseICReq(b []byte) (ICReq, error) {
	if len(b) < ICLen {
		return ICReq{}, errors.Errorf("nvme/tcp: ICReq needs %d bytes, have %d", ICLen, len(b))
	}
	r := ICReq{PFV: le.Uint16(b[8:]), HPDA: b[10], HDGST: b[11]&1 != 0, DDGST: b[11]&2 != 0, MaxR2T: le.Uint32(b[12:])}
	if r.PFV != PFV {
		return r, errors.Errorf("nvme/tcp: ICReq PDU format version %d, want %d", r.PFV, PFV)
	}
	if r.HPDA > 31 {
		return r, errors.Errorf("nvme/tcp: ICReq HPDA %d over 31", r.HPDA)
	}
	return r, nil
}

// PutICResp writes a 128-byte ICResp PDU into b.
func PutICResp(b []byte, r ICResp) {
	clear(b[:ICLen])
	PutHeader(b, Header{Type: TypeICResp, HLen: ICLen, PLen: ICLen})
	le.PutUint16(b[8:], r.PFV)
	b[10] = r.CPDA
	b[11] = digestBits(r.HDGST, r.DDGST)
	le.PutUint32(b[12:], r.MaxH2CData)
}

// ParseICResp decodes an ICResp PDU.
func ParseICResp(b []byte) (ICResp, error) {
	if len(b) < ICLen {
		return ICResp{}, errors.Errorf("nvme/tcp: ICResp needs %d bytes, have %d", ICLen, len(b))
	}
	r := ICResp{PFV: le.Uint16(b[8:]), CPDA: b[10], HDGST: b[11]&1 != 0, DDGST: b[11]&2 != 0, MaxH2CData: le.Uint32(b[12:])}
	if r.PFV != PFV {
		return r, errors.Errorf("nvme/tcp: ICResp PDU format version %d, want %d", r.PFV, PFV)
	}
	if r.CPDA > 31 {
		return r, errors.Errorf("nvme/tcp: ICResp CPDA %d over 31", r.CPDA)
	}
	if r.MaxH2CData < 4096 || r.MaxH2CData%4 != 0 {
		return r, errors.Errorf("nvme/tcp: ICResp MAXH2CDATA %d: must be a multiple of 4 and at least 4096", r.MaxH2CData)
	}
	return r, nil
}

// Data is the header of H2CData and C2HData PDUs (and, with Offset and
// Length meaning R2TO and R2TL, of R2T).
type Data struct {
	CCCID  uint16 // command capsule CID
	TTag   uint16 // transfer tag (H2CData, R2T)
	Offset uint32 // DATAO / R2TO
	Length uint32 // DATAL / R2TL
}

// PutData writes the 24-byte header of an H2CData, C2HData or R2T PDU into
// b; plen and pdo are the values of the common header.
func PutData(b []byte, typ, flags uint8, pdo uint8, plen uint32, d Data) {
	PutHeader(b, Header{Type: typ, Flags: flags, HLen: DataLen, PDO: pdo, PLen: plen})
	le.PutUint16(b[8:], d.CCCID)
	le.PutUint16(b[10:], d.TTag)
	le.PutUint32(b[12:], d.Offset)
	le.PutUint32(b[16:], d.Length)
	le.PutUint32(b[20:], 0)
}

// ParseData decodes the header of an H2CData, C2HData or R2T PDU.
func ParseData(b []byte) (Data, error) {
	if len(b) < DataLen {
		return Data{}, errors.Errorf("nvme/tcp: data PDU header needs %d bytes, have %d", DataLen, len(b))
	}
	return Data{CCCID: le.Uint16(b[8:]), TTag: le.Uint16(b[10:]), Offset: le.Uint32(b[12:]), Length: le.Uint32(b[16:])}, nil
}

// PutTerm writes a termination request header (H2CTermReq or C2HTermReq)
// into b, followed by up to MaxTermData bytes of the offending header, and
// returns the PDU length.
func PutTerm(b []byte, typ uint8, fes uint16, fei uint32, offending []byte) int {
	if len(offending) > MaxTermData {
		offending = offending[:MaxTermData]
	}
	n := TermLen + len(offending)
	clear(b[:TermLen])
	PutHeader(b, Header{Type: typ, HLen: TermLen, PLen: uint32(n)})
	le.PutUint16(b[8:], fes)
	le.PutUint32(b[10:], fei)
	copy(b[TermLen:], offending)
	return n
}

// Term is a decoded termination request.
type Term struct {
	FES uint16
	FEI uint32
}

// ParseTerm decodes a termination request header.
func ParseTerm(b []byte) (Term, error) {
	if len(b) < TermLen {
		return Term{}, errors.Errorf("nvme/tcp: termination request needs %d bytes, have %d", TermLen, len(b))
	}
	return Term{FES: le.Uint16(b[8:]), FEI: le.Uint32(b[10:])}, nil
}

// FESName names a fatal error status.
func FESName(fes uint16) string {
	switch fes {
	case FESInvalidHeader:
		return "invalid PDU header field"
	case FESSequence:
		return "PDU sequence error"
	case FESHeaderDigest:
		return "header digest error"
	case FESOutOfRange:
		return "data transfer out of range"
	case FESLimitExceeded:
		return "data transfer limit exceeded"
	case FESUnsupportedParam:
		return "unsupported parameter"
	}
	return "unknown fatal error status"
}

// PutCapsuleCmd writes a CapsuleCmd header for the 64-byte SQE sqe into b
// and returns the header length written (with the header digest if hdgst).
// inData bytes of in-capsule data follow at the returned PDO.
func PutCapsuleCmd(b []byte, sqe []byte, inData int, hdgst, ddgst bool) (pdo int) {
	flags := uint8(0)
	hdr := CapsuleCmdLen
	if hdgst {
		flags |= FlagHDGST
		hdr += DigestLen
	}
	plen := hdr
	if inData > 0 {
		pdo = hdr
		plen += inData
		if ddgst {
			flags |= FlagDDGST
			plen += DigestLen
		}
	}
	PutHeader(b, Header{Type: TypeCapsuleCmd, Flags: flags, HLen: CapsuleCmdLen, PDO: uint8(pdo), PLen: uint32(plen)})
	copy(b[CommonLen:CapsuleCmdLen], sqe[:64])
	if hdgst {
		le.PutUint32(b[CapsuleCmdLen:], CRC(b[:CapsuleCmdLen]))
	}
	return hdr
}

// PutCapsuleResp writes a CapsuleResp PDU for the 16-byte CQE cqe into b and
// returns its length.
func PutCapsuleResp(b []byte, cqe []byte, hdgst bool) int {
	flags := uint8(0)
	n := CapsuleRespLen
	if hdgst {
		flags |= FlagHDGST
		n += DigestLen
	}
	PutHeader(b, Header{Type: TypeCapsuleResp, Flags: flags, HLen: CapsuleRespLen, PLen: uint32(n)})
	copy(b[CommonLen:CapsuleRespLen], cqe[:16])
	if hdgst {
		le.PutUint32(b[CapsuleRespLen:], CRC(b[:CapsuleRespLen]))
	}
	return n
}

// PutDataPDU writes the header (and header digest) of an H2CData or C2HData
// PDU carrying n bytes into b, returning the header length; the data and, if
// ddgst, its digest follow.
func PutDataPDU(b []byte, typ, flags uint8, d Data, hdgst, ddgst bool) int {
	hdr := DataLen
	if hdgst {
		flags |= FlagHDGST
		hdr += DigestLen
	}
	plen := hdr + int(d.Length)
	if ddgst {
		flags |= FlagDDGST
		plen += DigestLen
	}
	PutData(b, typ, flags, uint8(hdr), uint32(plen), d)
	if hdgst {
		le.PutUint32(b[DataLen:], CRC(b[:DataLen]))
	}
	return hdr
}

// PutR2T writes an R2T PDU into b and returns its length.
func PutR2T(b []byte, d Data, hdgst bool) int {
	n := R2TLen
	flags := uint8(0)
	if hdgst {
		flags |= FlagHDGST
		n += DigestLen
	}
	PutData(b, TypeR2T, flags, 0, uint32(n), d)
	if hdgst {
		le.PutUint32(b[R2TLen:], CRC(b[:R2TLen]))
	}
	return n
}
