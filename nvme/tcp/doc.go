// Package tcp is bpfblk's NVMe/TCP transport (NVMe over Fabrics 1.1 and the
// NVMe/TCP Transport Specification 1.0), both ends:
//
//   - The host: Dial connects to a subsystem and returns a Transport that
//     nvme.NewController drives like any other. It is an
//     nvme.FabricsTransport: registers become Property Get/Set, Create I/O
//     SQ becomes a new TCP connection with ICReq and Fabrics Connect, an SQ
//     doorbell sends command capsules (writes up to the controller's IOCCSZ
//     as in-capsule data, larger ones when R2Ts ask — up to 4 outstanding
//     per command, ICReq MAXR2T 3), and Poll — called by
//     the driver before it reaps a CQ — reads CapsuleResp, C2HData and R2T
//     PDUs and writes completions into the driver's CQ. Queue pairs stay
//     owned by one goroutine and polled; sockets are non-blocking; nothing
//     allocates per I/O. Discover reads a discovery controller's log.
//   - The target: NewTarget exports Namespaces (an interface the target
//     declares; package nvmf adapts bdevs) as one NVM subsystem, plus the
//     discovery subsystem, to hosts that connect to its listener. Each
//     connection belongs to one Worker, polled by one goroutine (one per
//     core), which also owns that worker's namespace channels. Writes
//     larger than the in-capsule limit are fetched with R2Ts of at most
//     MaxH2CData bytes, as many outstanding as the host's MAXR2T allows. An
//     idle worker sleeps until one of its sockets is readable (Target.Run),
//     or has its reactor woken then (Worker.OnReady). A target may also
//     export a compute device's compute (CP) and memory (SLM) namespaces,
//     forwarding their commands to it with NSIDs translated and each host's
//     program slots and range sets kept its own (target_compute.go).
//
// Header and data digests (CRC32C) are negotiated in ICReq/ICResp. Every
// PDU header is checked before any length in it is trusted; a peer that
// sends a malformed, truncated or unexpected PDU gets a termination request
// and the connection is closed with an error saying what arrived, and the
// commands outstanding on it complete with Transient Transport Error (the
// host driver then resets the controller, which reconnects). A peer that
// stops answering is caught by keep-alive: the host connects with a Keep
// Alive Timeout (Options.KeepAlive, 5 s by default), sends Keep Alive every
// KATO/2 from one timer goroutine per controller and declares a controller
// dead that answers none for KATO; the target tears down the association of
// a host it hears no command from for KATO (any command counts:
// traffic-based keep-alive). The driver's command timeouts remain.
//
// Not implemented: TLS, fused commands and in-order data placement other
// than by offset.
package tcp
