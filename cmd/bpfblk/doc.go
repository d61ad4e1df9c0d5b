/*
Command bpfblk is the command-line face of the bpfblk storage stack. This
comment is its contract: the commands, what they print and how they exit.
Scripts and tests rely on it; contract_test.go checks the parts that hold
for every command.

# Commands

	bpfblk scan     [--filter FILE.o[:PROGRAM]] [--set NAME=VALUE]... [--dev DEV]...
	                [--ns NAME[:FIRST-LAST]]... [--overlap BYTES]
	                [--placement auto|device|host] [--stage host|cmb] [-c CORES] [--chunk BYTES]
	                [--map-memory BYTES] [--count] [--json]
	bpfblk perf     [-w read|write|randread|randwrite|rw|randrw] [-M PERCENT] [-q QD] [-o BYTES]
	                [-t SECONDS] [-c CORES] [--dev DEV]... [--json] [--histogram] [--plot FILE.svg] [--no-pin]
	                [--idle auto|busy|park]
	                (long names: --io-pattern, --rwmixread, --io-depth, --io-size, --time, --core-mask)
	bpfblk list     [--dev DEV]... [--json]
	bpfblk identify [--dev DEV]... [--json]
	bpfblk copy     --from DEV:NSID:LBA:COUNT --to DEV:NSID:LBA [--via auto|cmb|copy|host]
	                [--chunk BYTES] [-q N] [--verify] [--json]
	bpfblk serve    --listen ADDR:PORT [--nqn NQN] [-c CORES] [--dev DEV]... [--compute-hosts N] [--no-pin]
	bpfblk setup    [config|reset|status] [--dev pci:DDDD:BB:DD.F]... [--hugemem SIZE | --hugepages N]
	                [--hugepage-size 2M|1G] [--node NODE] [--dry-run]
	bpfblk prog verify FILE.o[:PROGRAM] | --raw FILE [--set NAME=VALUE]... [--kernel] [--map-memory BYTES]
	bpfblk prog dis    FILE.o[:PROGRAM] | --raw FILE
	bpfblk prog run    FILE.o[:PROGRAM] | --raw FILE [--data FILE] [--set NAME=VALUE]...
	                   [--lba N] [--nsid N] [--block-size BYTES] [--budget N] [--engine jit|interpreter]
	                   [--map-memory BYTES]
	bpfblk help [COMMAND]

Flags may come before, between or after positional arguments; "--" ends the
flags. A flag is written -name or --name alike.

# Devices

--dev is repeatable; without it a command opens mock. Each device may be
given once: the same address twice (mock twice, say), or two file: or uring:
paths of one file (after making them absolute, cleaning them and resolving symbolic
links), is a usage error, as is a PCI function given twice to setup.

	mock                      the embedded demo subsystem: emulated controllers holding
	                          server logs, and a computational-storage controller
	mock:null                 an emulated controller with one namespace that moves no data
	file:PATH[,lba=512|4096]  a namespace backed by a file; several file: devices are
	                          namespaces of one emulated controller. A file whose size is
	                          not a multiple of the LBA size ends in a partial block: it
	                          reads as the file's tail and zeroes, and scan gives programs
	                          only the tail (data_end at the file's end)
	pci:DDDD:BB:DD.F          a real controller through VFIO (see bpfblk setup)
	uring:PATH[,sqpoll][,buffered][,noinline][,batch][,lba=512|4096]
	                          a kernel block device (/dev/nvme0n1) or a regular file
	                          through io_uring, without unbinding it from its driver:
	                          one ring per reactor, O_DIRECT where allowed;
	                          sqpoll gives each ring a kernel submission thread,
	                          buffered skips O_DIRECT, lba= sets a file's block size
	                          (default 512, or the file system's O_DIRECT alignment);
	                          on tmpfs the reactor reads and writes with pread/pwrite,
	                          noinline sends that I/O through the ring too; an I/O a
	                          completion submits goes to the kernel at once (as fio's
	                          default), batch holds it for the poll's one enter
	tcp://HOST:PORT/NQN       the subsystem NQN over NVMe/TCP (bpfblk serve, Linux nvmet-tcp)
	tcp://HOST:PORT           every NVM subsystem the discovery controller at HOST:PORT lists
	csd[:N]                   an emulated computational storage controller (Computational
	                          Programs and Subsystem Local Memory command sets); csd is
	                          csd:0, csd:1 ... add more (N up to 63)

A device that works but not at its best (a uring: file that refuses O_DIRECT
and is read through the page cache, one opened read-only) is named in one
"bpfblk CMD: note: ..." line on stderr, once per device.

The emulated controllers of one command (mock, mock:null, file:, csd) form one
NVM subsystem: one SUBNQN, Identify CMIC bit 1 set, distinct CNTLIDs. A compute
controller reaches the namespaces of its subsystem and reads them peer to peer,
so "--dev file:A --dev csd --placement device" scans A on the compute device, and
several csd devices share the chunks of every target. A namespace outside the
compute controllers' subsystem (a pci: controller) is scanned on host cores
under --placement auto, and the summary says why; --placement device refuses
it.

Two words, two ideas: the placement is where a program runs (--placement
auto|device|host: a compute device, or host cores), the engine is how host
cores run it (prog run --engine jit|interpreter, BPFBLK_ENGINE). scan
--engine auto|device|host is the deprecated old spelling of --placement and
still does exactly what it did; giving both with different values is a usage
error.

# Exit status

	0  success
	1  failure: something went wrong while acting on a valid command line — a file or
	   device that cannot be opened, a program the verifier rejects, an I/O error, a
	   program fault, an interrupted run, a scan whose results are incomplete (values a
	   program emitted that did not reach the host)
	2  usage error: the command line itself is wrong — an unknown command or flag, a
	   missing or extra argument, a value out of range, a name the inputs do not have
	   (a program, a --set variable, a namespace), a device given twice, a core this
	   process may not use

# Help and errors

-h, -help and --help (and "bpfblk help COMMAND") print the usage on stdout and
exit 0; bpfblk -h and bpfblk prog -h list the commands and subcommands.

A usage error is two lines on stderr and nothing on stdout:

	bpfblk CMD: what is wrong, naming the flag or argument
	run 'bpfblk CMD -h' for usage

where CMD is the command ("scan", "prog run"; nothing for bpfblk itself). A
failure is one line on stderr, "bpfblk CMD: what failed", without the hint;
a scan that finishes with faults adds one "bpfblk scan: fault: ..." line per
fault and exits 1. A scan stopped by SIGINT prints what it found, then one
"bpfblk scan: interrupted: N chunks in flight stopped ..." line instead of a
fault line per stopped chunk, and exits 1; --json keeps every chunk in
"faults".

# Numbers

Every numeric flag is checked when it is parsed; a value outside its range is
a usage error naming the flag and the range:

	perf -M            0 to 100
	perf -q            1 to 65536
	perf -o            a multiple of 512, 512 B to 128 MiB (and of each target's LBA size)
	perf -t            seconds, finite, above 0 and at most a week (NaN and Inf refused)
	scan, copy --chunk a multiple of 512, 512 B to 64 MiB
	scan --overlap     0 to 1048576 bytes
	scan --ns          NAME, NAME:FIRST-LAST or NAME:FIRST- with decimal LBAs inside the
	                   namespace; NAME is a bdev name that scan's devices have; the ranges
	                   of one namespace may not overlap
	copy -q            1 to 1024
	prog run --nsid    1 to 4294967294 (NVMe namespace ids)
	prog run --block-size  0 (the whole data is one block) or a multiple of 512, up to 64 MiB
	prog run --budget  1 to 2^62
	prog run --lba     any unsigned 64-bit number
	setup --hugepages  -1 (from --hugemem) or 0 to 16777216
	setup --node       -1 (spread over the nodes) or 0 to 1023
	scan, prog verify, prog run --map-memory
	                   bytes, above 0, with an optional suffix k, M, G or T (KiB to TiB)

Byte counts of perf -o and scan and copy --chunk may carry a binary suffix k, M
or G (4k is 4096, 1M is 1048576), as in fio and spdk_nvme_perf.

Core masks (-c of scan and perf) are read as SPDK reads them: a bare number is
a hexadecimal mask, with or without 0x (3 and 0x3 are cores 0 and 1, 1 is core
0, 0 names no core and is refused); a list in brackets names cores ([0,2-3],
[3] is core 3), and so do lists and ranges without brackets (0-1, 0,2). Every
core must exist and be in this process's affinity mask, else the error names
the core and the cores there are. scan defaults to the first two such cores,
perf to the first one (shown as [0,1] and [0] in -h).

# Output

What a script may parse is on stdout; progress bars, live lines and summaries for
people go to stderr (scan) or are only drawn on a terminal (perf's live line).
Tables for people may change; the formats below are the contract.

scan prints one line per result, sorted by namespace (in the order of the
devices, or of the --ns flags) then LBA (then offset). NAME is the namespace's
bdev name (unique across controllers, such as mock0n1); numbers are decimal.

	NAME LBA          a per-block filter (SEC("bpfblk/filter")): one line per
	                  matching block
	NAME LBA OFFSET   a scanner (SEC("bpfblk/scan")), which emits byte offsets:
	                  one line per emitted record, OFFSET its byte offset in
	                  block LBA (LBA * block size + OFFSET in the namespace)

Every value a program emits is a line: nothing is dropped for want of room.
Where a limit stops values (a run emitting more than one value per 4 bytes
of its chunk, or more than a compute device's output range holds of a program
with writable maps, which cannot be run again), the scan says on stderr
"bpfblk scan: lost: NAME blocks A-B on WHERE: N emitted values lost", counts
them in the summary and the JSON, and exits 1.

A summary for people follows on stderr: the host engine (jit or
interpreter), matching blocks and (for scanners) emitted records, and per
target its block size, its LBA range, its matching blocks, records and
selectivity, and where it ran ("on host", "on mock2"; when --placement auto ran
it on the host, why, in parentheses). --count prints only the number of
result lines.

--json prints JSON lines: one object per result as results arrive (in no
particular order), then the report as the last line. A result is

	{"name": "mock0n1", "lba": 55}                 (per-block filter)
	{"name": "mock0n1", "lba": 55, "offset": 1200} (scanner)

and the report

	{"engine": "jit"|"interpreter", "matches", "matching_blocks", "records", "lost",
	 "bytes_scanned", "bytes_to_host", "bytes_through_host", "bytes_over_network", "seconds",
	 "engines": [{"name", "targets", "chunks", "bytes_scanned", "run_seconds", "emulated"}],
	 "targets": [{"name", "nsid", "block_size", "first", "engine", "why", "blocks", "bytes",
	              "bytes_scanned", "matches", "matching_blocks", "lost"}],
	 "losses": [{"name", "lba", "blocks", "values", "where"}],
	 "faults": ["..."],
	 "maps": [{"name", "type": "array"|"hash", "key_type", "value_type",
	           "entries": [{"key", "value"}]}]}

where "bytes_over_network" is what the connections of the tcp:// devices
received and sent during the scan (NVMe/TCP PDUs with their headers; 0 without
such devices; the text summary shows it when there are), "matches" is the
number of result lines, "records" the values a scanner
emitted (0 for a per-block filter), "why" is present when --placement auto ran a
target on the host, "first" is the target's first LBA, "bytes" its data (less
than blocks times block_size when its last block is a file's partial one),
and "maps" is empty when the program has none; keys and values are JSON
decoded with the program's BTF as the C source declares them: integers as
numbers, printable char arrays as strings, structs as objects, arrays as lists,
and bytes without a usable type as a list of "0xNN" strings. Without --json
the maps follow the summary on stderr, in the text form prog run prints. With
--count --json only the report line is printed; a scan without results prints
only it too.

--overlap BYTES gives every run BYTES past its own data, where the namespace
has them: a per-block filter's data_end lies BYTES past its block's end, a
scanner's past its chunk's (filters/bpfblk.h). A pattern straddling a block
boundary is found and reported at the block where it starts; values a
scanner emits in the overlap are left to the next chunk. Overlapping runs use
host engines.

BPFBLK_ENGINE=jit|interpreter picks the engine of host cores for scan and
the default of prog run --engine; any other non-empty value is a usage error.
BPFBLK_KERNEL=0 switches off the kernel half of prog verify --kernel,
which then prints "kernel: skipped: kernel BPF disabled by BPFBLK_KERNEL=0".

A target's "engine" (a name kept for compatibility: it is the target's
placement) is "host" or its compute devices' names joined by "+";
"why" (only on a host target when compute devices were offered) says why no
device took it. "emulated": true marks an engine that is an emulated device:
its run_seconds is the emulator's time on host CPUs, not a real device's, and
the summary says so. With --stage cmb the summary names the CMB the chunks were
staged in; an emulated CMB charges every CPU read of it what an uncached BAR
read costs (1 µs per 64 bytes by default, mock.Config.CMBReadCost), so the
host engine's program time is what a real system would show, and the
summary labels the CMB as emulated. perf's header says when the devices
are emulated.

perf prints a header line and a table for people; --json prints

	{"total": {"ios", "errors", "iops", "mib_per_s", "seconds",
	           "latency_us": {"avg", "min", "max", "p50", "p90", "p99", "p999", "p9999", "p99999"},
	           "read": FIO, "write": FIO},
	 "targets": [{"name", ...the same fields...}]}

where FIO is one direction in the names and units of fio's JSON (jobs[].read):

	{"io_bytes", "bw_bytes", "iops", "runtime" (ms), "total_ios", "total_err",
	 "lat_ns": {"min", "max", "mean", "N", "percentile": {"1.000000", ..., "50.000000",
	            ..., "99.900000", "99.950000", "99.990000"}}}

Latencies are from the poll that submitted an I/O to the poll that completed it
(fio's lat_ns, not clat_ns). Both directions are always there (zero for one a
workload does not do); for rw and randrw the table adds "NAME read" and "NAME
write" lines under each target and the total. "histogram": [...] buckets come
in each object when --histogram is given. A run in which any I/O failed exits
1. On mock devices the numbers measure bpfblk's software round trip through an
emulated controller (its queues, the bdev layer, the reactor), not a drive.

list prints one line per controller and one indented line per namespace; --json
prints an array of {"name", "model", "serial", "firmware", "version",
"max_transfer", "io_queues", "optional_commands", "cmb_bytes", "compute",
"namespaces": [{"nsid", "command_set", "blocks", "block_size", "bytes"}],
"subnqn", "cntlid", "multi_controller"}; the text form starts with one
"subsystem NQN: NAME (cntlid N), ..." line per NVM subsystem. A
uring: device is one such entry named after its bdev (uring0), its model saying
what it is, with one namespace of nsid 0 and command set "block".

identify prints "NAME:" and then one "  field value" line per Identify
Controller field (the spec's lower-case field names: vid, sn, mn, ...); --json
prints {"NAME": {"field": "value", ...}, ...}. A uring: device on a kernel NVMe
namespace (/dev/nvmeXnY) is identified through io_uring NVMe passthrough on its
generic device (/dev/ngXnY), under its bdev name; other uring: devices get a
note on stderr instead.

copy prints one line saying what was copied, the path taken and the bytes that
crossed host memory; --json prints {"bytes", "bytes_through_host", "seconds",
"via", "path", "from", "to"} and "verified": true after --verify.

prog verify prints "NAME: ok (TYPE, N instructions, M maps)", and with --kernel
a "kernel: ok" or "kernel: skipped: why" line; a rejection exits 1 with the
instruction index and the reason on stderr. prog dis prints "NAME (section
SECTION):" (not for --raw) and the instructions, one per line. prog run prints "r0 = N" (unsigned decimal),
then "emitted = N" and one indented value per line when the program emitted
any, then each map as "map NAME (KIND, key KEYTYPE, value VALUETYPE, N
entries):" with one "  key: KEY  value: VALUE" line per entry, keys and values
decoded with the program's BTF as bpftool's map dump does (integers in decimal,
printable char arrays as strings, structs as {field: value}, arrays as lists,
bytes without a usable type in hex). --log (prog verify, prog run, scan) adds,
on a rejection, the verifier's path to the failing instruction with the
register states, in the manner of the kernel verifier's log. --checked (prog
run) makes the JIT check every memory access at run time instead of trusting
the verifier's proofs.

serve exports the NVM namespaces of its devices (NSIDs 1, 2, ... in --dev
order) as one NVMe/TCP subsystem, with a discovery controller, until SIGINT or
SIGTERM (exit 0). Once listening it prints one line on stdout,

	serving NQN on ADDR:PORT: namespaces 1=NAME 2=NAME ... [N=compute(CTRL) N+1=memory(CTRL) ...]

with the port it bound (--listen ADDR:0 picks a free one). -c places one target
worker on each core; connections are spread over them. The first compute
controller among the devices (csd, or the one of the demo mock) has its compute
namespace and memory namespaces exported after the NVM ones: the target
forwards the Computational Programs and Subsystem Local Memory commands to it,
so a remote bpfblk scan of tcp://ADDR:PORT/NQN runs the filter on it, next to
the data, and only matches cross the network. Each remote host owns the program
slots and range sets it made until it disconnects, and the device's memory is
divided into --compute-hosts parts (default 1): a host takes a part on first
use and keeps it until it disconnects; a host that finds none free sees no
device memory, and its scan runs on its own cores. The device reads the NVM
namespaces of its own subsystem (the emulated controllers of this serve) peer to
peer; the blocks of other namespaces (uring:, a pci: controller of another
subsystem) the target reads itself and writes into the device's memory, through
this server's memory but not over the network (serve notes which on stderr).

A scan with several tcp:// devices is distributed: each server's namespaces run
on that server's compute namespace (--placement auto or device); a server
without one has its namespaces scanned by the host cores, read over the
network, and the summary says so for each.

setup prints what it did (or, with --dry-run, what it would write to sysfs) one
line per controller, and status prints tables for people.
*/
package main
