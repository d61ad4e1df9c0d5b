/*
Command bpfblk is the command-line face of the bpfblk storage stack. This
comment is its contract: the commands, what they print and how they exit.
Scripts and tests rely on it; contract_test.go checks the parts that hold
for every command.

# Commands

	bpfblk scan     [--filter FILE.o[:PROGRAM]] [--set NAME=VALUE]... [--dev DEV]...
	                [--engine auto|device|host] [--stage host|cmb] [-c CORES] [--chunk BYTES]
	                [--map-memory BYTES] [--count] [--json]
	bpfblk perf     [-w read|write|randread|randwrite|rw|randrw] [-M PERCENT] [-q QD] [-o BYTES]
	                [-t SECONDS] [-c CORES] [--dev DEV]... [--json] [--histogram] [--plot FILE.svg] [--no-pin]
	bpfblk list     [--dev DEV]... [--json]
	bpfblk identify [--dev DEV]... [--json]
	bpfblk copy     --from DEV:NSID:LBA:COUNT --to DEV:NSID:LBA [--via auto|cmb|copy|host]
	                [--chunk BYTES] [-q N] [--verify] [--json]
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
given once: the same address twice (mock twice, say), or two file: paths of
one file (after making them absolute, cleaning them and resolving symbolic
links), is a usage error, as is a PCI function given twice to setup.

	mock                      the embedded demo subsystem: emulated controllers holding
	                          server logs, and a computational-storage controller
	mock:null                 an emulated controller with one namespace that moves no data
	file:PATH[,lba=512|4096]  a namespace backed by a file; several file: devices are
	                          namespaces of one emulated controller
	pci:DDDD:BB:DD.F          a real controller through VFIO (see bpfblk setup)

# Exit status

	0  success
	1  failure: something went wrong while acting on a valid command line — a file or
	   device that cannot be opened, a program the verifier rejects, an I/O error, a
	   program fault, an interrupted run
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
fault and exits 1.

# Numbers

Every numeric flag is checked when it is parsed; a value outside its range is
a usage error naming the flag and the range:

	perf -M            0 to 100
	perf -q            1 to 65536
	perf -o            a multiple of 512, 512 B to 128 MiB (and of each target's LBA size)
	perf -t            seconds, finite, above 0 and at most a week (NaN and Inf refused)
	scan, copy --chunk a multiple of 512, 512 B to 64 MiB
	copy -q            1 to 1024
	prog run --nsid    1 to 4294967294 (NVMe namespace ids)
	prog run --block-size  0 (the whole data is one block) or a multiple of 512, up to 64 MiB
	prog run --budget  1 to 2^62
	prog run --lba     any unsigned 64-bit number
	setup --hugepages  -1 (from --hugemem) or 0 to 16777216
	setup --node       -1 (spread over the nodes) or 0 to 1023
	scan, prog verify, prog run --map-memory
	                   bytes, above 0, with an optional suffix k, M, G or T (KiB to TiB)

Core masks (-c of scan and perf) take the forms 0x3, 0-1, 0,2 and [0,2-3]; every
core must exist and be in this process's affinity mask, else the error names the
core and the cores there are. scan defaults to the first two such cores, perf to
the first one.

# Output

What a script may parse is on stdout; progress bars, live lines and summaries for
people go to stderr (scan) or are only drawn on a terminal (perf's live line).
Tables for people may change; the formats below are the contract.

scan prints one "NAME LBA" line per matching block, sorted by namespace then
LBA, where NAME is the namespace's bdev name (unique across controllers, such
as mock0n1) and LBA is decimal; a summary follows on stderr. --count prints
only the number of matching blocks. --json prints one object:

	{"matches", "bytes_scanned", "bytes_to_host", "bytes_through_host", "seconds",
	 "engines": [{"name", "targets", "chunks", "bytes_scanned", "run_seconds"}],
	 "targets": [{"name", "nsid", "engine", "blocks", "bytes_scanned", "matches"}],
	 "faults": ["..."],
	 "maps": [{"name", "type": "array"|"hash", "key_type", "value_type",
	           "entries": [{"key", "value"}]}]}

where "maps" is empty when the program has none and keys and values are JSON
decoded with the program's BTF as the C source declares them: integers as
numbers, printable char arrays as strings, structs as objects, arrays as lists,
and bytes without a usable type as a list of "0xNN" strings. Without --json
the maps follow the summary on stderr, in the text form prog run prints.

perf prints a header line and a table for people; --json prints

	{"total": {"ios", "errors", "iops", "mib_per_s", "seconds",
	           "latency_us": {"avg", "min", "max", "p50", "p90", "p99", "p999", "p9999", "p99999"}},
	 "targets": [{"name", ...the same fields...}]}

with "histogram": [...] buckets in each when --histogram is given. A run in
which any I/O failed exits 1.

list prints one line per controller and one indented line per namespace; --json
prints an array of {"name", "model", "serial", "firmware", "version",
"max_transfer", "io_queues", "optional_commands", "cmb_bytes", "compute",
"namespaces": [{"nsid", "command_set", "blocks", "block_size", "bytes"}]}.

identify prints "NAME:" and then one "  field value" line per Identify
Controller field (the spec's lower-case field names: vid, sn, mn, ...); --json
prints {"NAME": {"field": "value", ...}, ...}.

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

setup prints what it did (or, with --dry-run, what it would write to sysfs) one
line per controller, and status prints tables for people.
*/
package main
