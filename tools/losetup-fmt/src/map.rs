//! `losetup-fmt map DEVICE`: the runs of an attached device as its format
//! driver serves them (`LFF_GET_MAP`), printed the way `qemu-img map`
//! prints an image: start, length, layer (`depth`), whether allocated
//! (`present`), zero, data, compressed, and the host offset in the layer's
//! file. The answer comes from the kernel driver, not from reading the
//! image again here.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::chain;
use crate::device::Device;
use crate::errors::strerror;
use crate::size::parse_size;
use crate::sysfs::Roots;
use crate::uapi;

/// How to print the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOutput {
    /// qemu-img's default: the data runs with their host offsets and files.
    Human,
    /// `--output=json`: every run.
    Json,
}

/// The parsed `map` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapArgs {
    /// The device.
    pub device: OsString,
    /// Output style.
    pub output: MapOutput,
    /// `--start`: device offset to begin at.
    pub start: u64,
    /// `--length`: bytes to map, `None` to the end.
    pub length: Option<u64>,
    /// `-h`.
    pub help: bool,
}

/// One run of the device, merged across `LFF_GET_MAP` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Device offset.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// Layer answering (0: the image).
    pub depth: u32,
    /// `LFF_EXTENT_*`.
    pub flags: u32,
    /// Host offset of the first byte, if the driver gives one.
    pub offset: Option<u64>,
}

impl Run {
    fn from_extent(e: &uapi::lff_extent) -> Run {
        Run {
            start: e.start,
            length: e.length,
            depth: e.depth,
            flags: e.flags & !uapi::EXTENT_HOST_OFFSET,
            offset: (e.flags & uapi::EXTENT_HOST_OFFSET != 0).then_some(e.host_offset),
        }
    }

    fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether `next` continues this run (qemu-img map's merge rule).
    fn continued_by(&self, next: &Run) -> bool {
        let host = match (self.offset, next.offset) {
            (Some(a), Some(b)) => a.checked_add(self.length) == Some(b),
            (None, None) => true,
            _ => false,
        };
        self.start.checked_add(self.length) == Some(next.start)
            && self.depth == next.depth
            && self.flags == next.flags
            && host
    }
}

/// Appends `run` to `runs`, merging it into the last one if it continues it.
pub fn push_merged(runs: &mut Vec<Run>, run: Run) {
    match runs.last_mut() {
        Some(last) if last.continued_by(&run) => last.length += run.length,
        _ => runs.push(run),
    }
}

/// A `map` command line error (usage message, exit status 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUsageError(pub String);

fn size_arg(name: &str, v: Option<OsString>) -> Result<u64, MapUsageError> {
    let v = v.ok_or_else(|| MapUsageError(format!("option '--{name}' requires an argument")))?;
    let text = v.to_string_lossy();
    parse_size(&text).map_err(|_| MapUsageError(format!("invalid {name} argument: '{text}'")))
}

/// Parses the arguments after `map`.
pub fn parse(args: &[OsString]) -> Result<MapArgs, MapUsageError> {
    let mut device = None;
    let mut output = MapOutput::Human;
    let mut start = 0;
    let mut length = None;
    let mut help = false;
    let mut it = args.iter().cloned();
    let mut only_operands = false;
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if only_operands || !s.starts_with('-') || s == "-" {
            if device.replace(a).is_some() {
                return Err(MapUsageError("map takes one device".into()));
            }
            continue;
        }
        let (key, inline) = match s.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(OsString::from(v))),
            _ => (s.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = OsString>| inline.clone().or_else(|| it.next());
        match key.as_str() {
            "--" => only_operands = true,
            "-J" | "--json" => output = MapOutput::Json,
            "--output" => {
                let v = value(&mut it).unwrap_or_default();
                output = match v.to_str() {
                    Some("json") => MapOutput::Json,
                    Some("human") => MapOutput::Human,
                    _ => {
                        return Err(MapUsageError(format!(
                            "--output must be 'human' or 'json', not '{}'",
                            v.to_string_lossy()
                        )))
                    }
                }
            }
            "--start" | "--start-offset" => start = size_arg("start", value(&mut it))?,
            "--length" | "--max-length" => length = Some(size_arg("length", value(&mut it))?),
            "-h" | "--help" => help = true,
            _ => return Err(MapUsageError(format!("map: unrecognized option '{s}'"))),
        }
    }
    if help {
        return Ok(MapArgs {
            device: device.unwrap_or_default(),
            output,
            start,
            length,
            help,
        });
    }
    let device = device.ok_or_else(|| MapUsageError("map: no device specified".into()))?;
    if length == Some(0) {
        return Err(MapUsageError("invalid length argument: '0'".into()));
    }
    Ok(MapArgs {
        device,
        output,
        start,
        length,
        help,
    })
}

/// Collects the merged runs of `dev` from `start` for `length` bytes (to
/// the end if `None`), one `LFF_GET_MAP` call per batch of extents.
pub fn collect(dev: &Device, start: u64, length: Option<u64>) -> io::Result<Vec<Run>> {
    let mut buf = vec![uapi::lff_extent::default(); uapi::MAP_MAX_EXTENTS];
    let end = length.map(|l| start.saturating_add(l));
    let mut runs = Vec::new();
    let mut pos = start;
    loop {
        let want = match end {
            Some(e) if pos >= e => break,
            Some(e) => e - pos,
            None => 0,
        };
        let n = dev.map(pos, want, &mut buf)?;
        let Some(last) = buf[..n].last() else {
            break;
        };
        let next = last.start.saturating_add(last.length);
        for e in &buf[..n] {
            push_merged(&mut runs, Run::from_extent(e));
        }
        if next <= pos {
            // The kernel checks the driver's answer; never loop anyway.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        pos = next;
        if n < buf.len() {
            break;
        }
    }
    Ok(runs)
}

/// `qemu-img map --output=json`'s shape.
pub fn json(runs: &[Run]) -> String {
    let mut s = String::from("[");
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&format!(
            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
            r.start,
            r.length,
            r.depth,
            r.has(uapi::EXTENT_PRESENT),
            r.has(uapi::EXTENT_ZERO),
            r.has(uapi::EXTENT_DATA),
            r.has(uapi::EXTENT_COMPRESSED),
        ));
        if let Some(o) = r.offset {
            s.push_str(&format!(", \"offset\": {o}"));
        }
        s.push('}');
    }
    s.push_str("]\n");
    s
}

fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

/// qemu-img map's human shape: the data runs, with the file of the layer
/// holding them (`files[depth]`, "layer N" if unknown); compressed runs
/// (which qemu-img refuses to print) say "compressed" for the host offset.
pub fn human(runs: &[Run], files: &[PathBuf]) -> String {
    let mut s = format!(
        "{:<16}{:<16}{:<16}{}\n",
        "Offset", "Length", "Mapped to", "File"
    );
    for r in runs.iter().filter(|r| r.has(uapi::EXTENT_DATA)) {
        let mapped = match r.offset {
            Some(o) if !r.has(uapi::EXTENT_COMPRESSED) => hex(o),
            _ => "compressed".into(),
        };
        let file = files
            .get(r.depth as usize)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("layer {}", r.depth));
        s.push_str(&format!(
            "{:<16}{:<16}{:<16}{}\n",
            hex(r.start),
            hex(r.length),
            mapped,
            file
        ));
    }
    s
}

/// The paths of the first `nr` layers: the image (as the kernel reports
/// it), then its backing files as the qcow2 headers name them now.
fn layer_paths(image: PathBuf, nr: u32) -> Vec<PathBuf> {
    let mut out = vec![image];
    while out.len() < nr as usize {
        let Some(cur) = out.last() else { break };
        let Ok(f) = File::open(cur) else { break };
        let Ok(b) = chain::read_backing(&f) else {
            break;
        };
        let Some(name) = b.name else { break };
        let Ok(next) = chain::resolve_backing_path(cur, &name) else {
            break;
        };
        out.push(next);
    }
    out
}

/// The `map` help text.
pub fn usage(prog: &str) -> String {
    format!(
        "
Usage:
 {prog} map [--json | --output=human|json] [--start <num>] [--length <num>] <loopdev>

Show the runs of an attached device as its format driver serves them, in
the shapes of qemu-img map: which ranges hold data (and at which offset of
which layer's file), which read as zeros, which are compressed, and which
layer of a backing chain answers (depth 0 is the image).

Options:
 -J, --json, --output=json     every run, as qemu-img map --output=json
     --output=human            the data runs with host offsets (default)
     --start <num>             begin at device offset <num>
     --length <num>            map at most <num> bytes
 -h, --help                    display this help
"
    )
}

/// Runs `losetup-fmt map ARGS...`; returns the exit status.
pub fn run(
    prog: &str,
    args: &[OsString],
    roots: &Roots,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "{prog}: {}", e.0);
            let _ = writeln!(err, "Try '{prog} map --help' for more information.");
            return 1;
        }
    };
    if a.help {
        let _ = write!(out, "{}", usage(prog));
        return 0;
    }
    let (path, name) = roots.resolve_device(&a.device);
    let fail = |err: &mut dyn Write, what: &str, e: &io::Error| {
        let _ = writeln!(err, "{prog}: {}: {what}: {}", path.display(), strerror(e));
        1
    };
    let dev = match Device::open(&path, false) {
        Ok(d) => d,
        Err(e) => return fail(err, "failed to open device", &e),
    };
    let status = match dev.status() {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return fail(err, "not attached", &e);
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
            return fail(err, "not a loop-file-fmt device", &e);
        }
        Err(e) => return fail(err, "failed to get status", &e),
    };
    if a.start > status.size {
        let _ = writeln!(
            err,
            "{prog}: {}: start {} is beyond the device size {}",
            path.display(),
            a.start,
            status.size
        );
        return 1;
    }
    let runs = match collect(&dev, a.start, a.length) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let what = format!("format '{}' does not report its mapping", status.format);
            return fail(err, &what, &e);
        }
        Err(e) => return fail(err, "failed to get the map", &e),
    };
    let text = match a.output {
        MapOutput::Json => json(&runs),
        MapOutput::Human => {
            let image = name
                .and_then(|n| roots.read_info(&n))
                .and_then(|i| i.backing_file)
                .unwrap_or_else(|| PathBuf::from(&status.file_name));
            human(&runs, &layer_paths(image, status.nr_layers))
        }
    };
    let _ = out.write_all(text.as_bytes());
    0
}

/// Whether `argv[1]` selects the `map` command.
pub fn is_map_command(arg: Option<&OsString>) -> bool {
    arg.is_some_and(|a| a == "map")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run_of(start: u64, length: u64, depth: u32, flags: u32, offset: Option<u64>) -> Run {
        Run {
            start,
            length,
            depth,
            flags,
            offset,
        }
    }

    #[test]
    fn parses_options() {
        let a = parse(&os(&[
            "--json",
            "--start",
            "1M",
            "--length=64k",
            "/dev/lff0",
        ]))
        .unwrap();
        assert_eq!(a.device, "/dev/lff0");
        assert_eq!(a.output, MapOutput::Json);
        assert_eq!((a.start, a.length), (1 << 20, Some(65536)));
        let a = parse(&os(&["/dev/lff1", "--output=human"])).unwrap();
        assert_eq!((a.output, a.start, a.length), (MapOutput::Human, 0, None));
        assert!(parse(&os(&["-h"])).unwrap().help);
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse(&os(&[])).is_err());
        assert!(parse(&os(&["/dev/lff0", "/dev/lff1"])).is_err());
        assert!(parse(&os(&["--start", "x", "/dev/lff0"])).is_err());
        assert!(parse(&os(&["--length", "0", "/dev/lff0"])).is_err());
        assert!(parse(&os(&["--output=xml", "/dev/lff0"])).is_err());
        assert!(parse(&os(&["--bogus", "/dev/lff0"])).is_err());
        assert!(parse(&os(&["/dev/lff0", "--start"])).is_err());
    }

    #[test]
    fn merges_like_qemu_img() {
        let d = uapi::EXTENT_DATA | uapi::EXTENT_PRESENT;
        let mut runs = Vec::new();
        push_merged(&mut runs, run_of(0, 10, 0, d, Some(100)));
        push_merged(&mut runs, run_of(10, 5, 0, d, Some(110)));
        // Not contiguous on the host: a new run.
        push_merged(&mut runs, run_of(15, 5, 0, d, Some(200)));
        // Another layer: a new run.
        push_merged(&mut runs, run_of(20, 5, 1, d, Some(205)));
        let z = uapi::EXTENT_ZERO;
        push_merged(&mut runs, run_of(25, 5, 1, z, None));
        push_merged(&mut runs, run_of(30, 5, 1, z, None));
        assert_eq!(
            runs,
            vec![
                run_of(0, 15, 0, d, Some(100)),
                run_of(15, 5, 0, d, Some(200)),
                run_of(20, 5, 1, d, Some(205)),
                run_of(25, 10, 1, z, None),
            ]
        );
    }

    #[test]
    fn prints_qemu_img_shapes() {
        let d = uapi::EXTENT_DATA | uapi::EXTENT_PRESENT;
        let c = d | uapi::EXTENT_COMPRESSED;
        let runs = [
            run_of(0, 65536, 0, d, Some(327680)),
            run_of(65536, 65536, 1, c, None),
            run_of(131072, 4096, 1, uapi::EXTENT_ZERO, None),
        ];
        assert_eq!(
            json(&runs),
            "[{ \"start\": 0, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 327680},\n\
             { \"start\": 65536, \"length\": 65536, \"depth\": 1, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": true},\n\
             { \"start\": 131072, \"length\": 4096, \"depth\": 1, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false}]\n"
        );
        assert_eq!(json(&[]), "[]\n");
        let files = [PathBuf::from("/img/top.qcow2")];
        assert_eq!(
            human(&runs, &files),
            "Offset          Length          Mapped to       File\n\
             0               0x10000         0x50000         /img/top.qcow2\n\
             0x10000         0x10000         compressed      layer 1\n"
        );
    }
}
