//! The command line, parsed like util-linux losetup parses it (GNU
//! `getopt_long` conventions: bundled short options, `--opt=value` or
//! `--opt value`, unique abbreviations of long options, options after
//! operands, `--` to end options), then turned into one [`Action`] with the
//! same rules as losetup.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::output::{parse_columns, Column, Style};
use crate::size::{parse_size, SizeError};

/// What `--file-fmt` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFmt {
    /// Not given: raw, like plain losetup (or qcow2 with `--snapshot`).
    Default,
    /// `auto`: qcow2 if the file has the qcow2 magic, raw otherwise.
    Auto,
    /// A format name, passed to the kernel ("raw", "qcow2", ...).
    Named(String),
}

/// Everything needed to attach a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The device, or `None` for `-f` (first free).
    pub device: Option<OsString>,
    /// The image file.
    pub file: OsString,
    /// `-r` (or implied by `--snapshot`).
    pub read_only: bool,
    /// `-P`.
    pub partscan: bool,
    /// `--direct-io[=on]`.
    pub direct_io: bool,
    /// `-o`.
    pub offset: u64,
    /// `--sizelimit`.
    pub sizelimit: u64,
    /// `-b`, 0 if not given.
    pub block_size: u32,
    /// `--file-fmt`.
    pub format: FileFmt,
    /// `--fmt-option`s and `--snapshot`, comma-joined.
    pub options: String,
    /// `--show`.
    pub show: bool,
    /// `-L`: reuse a device already attached to the same file and range.
    pub nooverlap: bool,
    /// `--trust-image-paths`: follow absolute extent names and names with
    /// `..` that a VMDK descriptor gives.
    pub trust_paths: bool,
}

/// How to print device lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFormat {
    /// Table (`-l`, `-J`, `-O`...) rather than the traditional lines.
    pub list: bool,
    /// Table, raw or JSON.
    pub style: Style,
    /// Print the header line.
    pub headings: bool,
    /// Columns.
    pub columns: Vec<Column>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-h`.
    Help,
    /// `-V`.
    Version,
    /// Attach a file.
    Setup(Setup),
    /// `-f` alone: print the first free device.
    FindFree,
    /// `-a`, `-l`, `-j FILE [-o OFFSET]`, or no arguments.
    Show {
        /// `-j FILE`.
        associated: Option<OsString>,
        /// `-o` with `-j`.
        offset: Option<u64>,
        /// Output format.
        format: ListFormat,
    },
    /// `losetup-fmt [-l] DEVICE`.
    ShowOne {
        /// The device.
        device: OsString,
        /// Output format.
        format: ListFormat,
    },
    /// `-d DEVICE...`.
    Detach(Vec<OsString>),
    /// `-D`.
    DetachAll,
    /// `-c DEVICE`: re-read the size of the device's image.
    SetCapacity(OsString),
}

/// A command line error; printed as `PROG: MESSAGE` followed by
/// "Try 'PROG --help' for more information.", exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HasArg {
    No,
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    All,
    Associated,
    SectorSize,
    Detach,
    DetachAll,
    Find,
    Help,
    Json,
    List,
    NoHeadings,
    Offset,
    Output,
    OutputAll,
    Partscan,
    ReadOnly,
    Raw,
    Show,
    SizeLimit,
    DirectIo,
    Verbose,
    Version,
    FileFmt,
    FmtOption,
    Snapshot,
    SetCapacity,
    NoOverlap,
    TrustImagePaths,
}

/// (long name, short letter, argument, option)
const OPTIONS: &[(&str, Option<u8>, HasArg, Opt)] = &[
    ("all", Some(b'a'), HasArg::No, Opt::All),
    ("associated", Some(b'j'), HasArg::Required, Opt::Associated),
    ("sector-size", Some(b'b'), HasArg::Required, Opt::SectorSize),
    ("detach", Some(b'd'), HasArg::Required, Opt::Detach),
    ("detach-all", Some(b'D'), HasArg::No, Opt::DetachAll),
    ("find", Some(b'f'), HasArg::No, Opt::Find),
    ("help", Some(b'h'), HasArg::No, Opt::Help),
    ("json", Some(b'J'), HasArg::No, Opt::Json),
    ("list", Some(b'l'), HasArg::No, Opt::List),
    ("noheadings", Some(b'n'), HasArg::No, Opt::NoHeadings),
    ("offset", Some(b'o'), HasArg::Required, Opt::Offset),
    ("output", Some(b'O'), HasArg::Required, Opt::Output),
    ("output-all", None, HasArg::No, Opt::OutputAll),
    ("partscan", Some(b'P'), HasArg::No, Opt::Partscan),
    ("read-only", Some(b'r'), HasArg::No, Opt::ReadOnly),
    ("raw", None, HasArg::No, Opt::Raw),
    ("show", None, HasArg::No, Opt::Show),
    ("sizelimit", None, HasArg::Required, Opt::SizeLimit),
    ("direct-io", None, HasArg::Optional, Opt::DirectIo),
    ("verbose", Some(b'v'), HasArg::No, Opt::Verbose),
    ("version", Some(b'V'), HasArg::No, Opt::Version),
    ("file-fmt", None, HasArg::Required, Opt::FileFmt),
    ("fmt-option", None, HasArg::Required, Opt::FmtOption),
    ("snapshot", None, HasArg::Required, Opt::Snapshot),
    (
        "set-capacity",
        Some(b'c'),
        HasArg::Required,
        Opt::SetCapacity,
    ),
    ("nooverlap", Some(b'L'), HasArg::No, Opt::NoOverlap),
    ("trust-image-paths", None, HasArg::No, Opt::TrustImagePaths),
];

/// Groups of mutually exclusive options (util-linux's `excl[]`).
const EXCLUSIVE: &[&[Opt]] = &[
    &[
        Opt::DetachAll,
        Opt::All,
        Opt::SetCapacity,
        Opt::Detach,
        Opt::Find,
        Opt::Associated,
    ],
    &[
        Opt::DetachAll,
        Opt::SetCapacity,
        Opt::Detach,
        Opt::Find,
        Opt::List,
    ],
    &[
        Opt::DetachAll,
        Opt::SetCapacity,
        Opt::Detach,
        Opt::Find,
        Opt::Output,
    ],
    &[Opt::Json, Opt::Raw],
];

fn long_name(o: Opt) -> &'static str {
    OPTIONS
        .iter()
        .find(|x| x.3 == o)
        .map(|x| x.0)
        .unwrap_or("?")
}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Splits argv (without argv[0]) into options with their values and
/// operands, getopt_long style.
/// Options with their values, and operands.
type Split = (Vec<(Opt, Option<OsString>)>, Vec<OsString>);

fn getopt(args: &[OsString]) -> Result<Split, UsageError> {
    let mut opts = Vec::new();
    let mut operands = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        i += 1;
        if arg == b"--" {
            operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix(b"--") {
            let (name, value) = match body.iter().position(|&b| b == b'=') {
                Some(p) => (
                    &body[..p],
                    Some(OsStr::from_bytes(&body[p + 1..]).to_os_string()),
                ),
                None => (body, None),
            };
            let shown = String::from_utf8_lossy(name);
            let exact = OPTIONS.iter().find(|o| o.0.as_bytes() == name);
            let found = match exact {
                Some(o) => o,
                None => {
                    let cands: Vec<_> = OPTIONS
                        .iter()
                        .filter(|o| o.0.as_bytes().starts_with(name))
                        .collect();
                    match cands.len() {
                        0 => return err(format!("unrecognized option '--{shown}'")),
                        1 => cands[0],
                        _ => {
                            let list: Vec<String> =
                                cands.iter().map(|o| format!("'--{}'", o.0)).collect();
                            return err(format!(
                                "option '--{shown}' is ambiguous; possibilities: {}",
                                list.join(" ")
                            ));
                        }
                    }
                }
            };
            let (lname, _, has, opt) = *found;
            let value = match (has, value) {
                (HasArg::No, Some(_)) => {
                    return err(format!("option '--{lname}' doesn't allow an argument"))
                }
                (HasArg::No, None) | (HasArg::Optional, None) => None,
                (_, Some(v)) => Some(v),
                (HasArg::Required, None) => {
                    if i < args.len() {
                        i += 1;
                        Some(args[i - 1].clone())
                    } else {
                        return err(format!("option '--{lname}' requires an argument"));
                    }
                }
            };
            opts.push((opt, value));
            if matches!(opt, Opt::Help | Opt::Version) {
                // Like getopt + usage(): nothing after --help matters.
                break;
            }
        } else if arg.len() > 1 && arg[0] == b'-' {
            let mut j = 1;
            while j < arg.len() {
                let c = arg[j];
                j += 1;
                let Some(&(_, _, has, opt)) = OPTIONS.iter().find(|o| o.1 == Some(c)) else {
                    return err(format!(
                        "invalid option -- '{}'",
                        String::from_utf8_lossy(&[c])
                    ));
                };
                if has == HasArg::Required {
                    let value = if j < arg.len() {
                        OsStr::from_bytes(&arg[j..]).to_os_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return err(format!("option requires an argument -- '{}'", c as char));
                    };
                    opts.push((opt, Some(value)));
                    break;
                }
                opts.push((opt, None));
                if matches!(opt, Opt::Help | Opt::Version) {
                    return Ok((opts, operands));
                }
            }
        } else {
            operands.push(args[i - 1].clone());
        }
    }
    Ok((opts, operands))
}

fn utf8<'a>(v: &'a OsStr, what: &str) -> Result<&'a str, UsageError> {
    v.to_str()
        .ok_or_else(|| UsageError(format!("{what}: '{}'", v.to_string_lossy())))
}

fn size_arg(v: &OsStr, what: &str) -> Result<u64, UsageError> {
    let s = utf8(v, what)?;
    match parse_size(s) {
        Ok(n) => Ok(n),
        Err(SizeError::Invalid) => err(format!("{what}: '{s}'")),
        Err(SizeError::Range) => err(format!("{what}: '{s}': Numerical result out of range")),
    }
}

/// Parses the arguments after argv[0].
pub fn parse(args: &[OsString]) -> Result<Action, UsageError> {
    let (opts, operands) = getopt(args)?;

    let mut seen_excl: Vec<Option<Opt>> = vec![None; EXCLUSIVE.len()];
    #[derive(PartialEq, Clone, Copy)]
    enum Act {
        Show,
        FindFree,
        Detach,
        DetachAll,
        SetCapacity,
    }
    let mut act: Option<Act> = None;
    let mut capacity_of: Option<OsString> = None;
    let mut nooverlap = false;
    let mut trust_paths = false;
    let mut detach: Vec<OsString> = Vec::new();
    let mut associated: Option<OsString> = None;
    let mut list = false;
    let mut json = false;
    let mut raw = false;
    let mut headings = true;
    let mut columns: Vec<Column> = Vec::new();
    let mut outarg: Option<String> = None;
    let mut read_only = false;
    let mut partscan = false;
    let mut show = false;
    let mut direct_io: Option<bool> = None;
    let mut offset: Option<u64> = None;
    let mut sizelimit: Option<u64> = None;
    let mut block_size: Option<u64> = None;
    let mut format = FileFmt::Default;
    let mut fmt_options: Vec<String> = Vec::new();
    let mut snapshot: Option<String> = None;

    for (opt, value) in opts {
        for (g, group) in EXCLUSIVE.iter().enumerate() {
            if group.contains(&opt) {
                match seen_excl[g] {
                    None => seen_excl[g] = Some(opt),
                    Some(prev) if prev == opt => {}
                    Some(_) => {
                        let names: Vec<String> = group
                            .iter()
                            .map(|o| format!("--{}", long_name(*o)))
                            .collect();
                        return err(format!("mutually exclusive arguments: {}", names.join(" ")));
                    }
                }
            }
        }
        let value = value.unwrap_or_default();
        match opt {
            Opt::All => act = Some(Act::Show),
            Opt::Associated => {
                act = Some(Act::Show);
                associated = Some(value);
            }
            Opt::SectorSize => {
                block_size = Some(size_arg(&value, "failed to parse logical block size")?)
            }
            Opt::Detach => {
                act = Some(Act::Detach);
                detach.push(value);
            }
            Opt::DetachAll => act = Some(Act::DetachAll),
            Opt::SetCapacity => {
                act = Some(Act::SetCapacity);
                capacity_of = Some(value);
            }
            Opt::NoOverlap => nooverlap = true,
            Opt::TrustImagePaths => trust_paths = true,
            Opt::Find => act = Some(Act::FindFree),
            Opt::Help => return Ok(Action::Help),
            Opt::Version => return Ok(Action::Version),
            Opt::Json => json = true,
            Opt::List => list = true,
            Opt::NoHeadings => headings = false,
            Opt::Offset => offset = Some(size_arg(&value, "failed to parse offset")?),
            Opt::Output => {
                outarg = Some(utf8(&value, "unknown column")?.to_string());
                list = true;
            }
            Opt::OutputAll => {
                list = true;
                columns = Column::ALL.to_vec();
            }
            Opt::Partscan => partscan = true,
            Opt::ReadOnly => read_only = true,
            Opt::Raw => raw = true,
            Opt::Show => show = true,
            Opt::SizeLimit => sizelimit = Some(size_arg(&value, "failed to parse size")?),
            Opt::DirectIo => {
                direct_io = Some(if value.is_empty() {
                    true
                } else {
                    match value.to_str() {
                        Some("on") => true,
                        Some("off") => false,
                        _ => return err(format!("argument error: {}", value.to_string_lossy())),
                    }
                })
            }
            Opt::Verbose => {}
            Opt::FileFmt => {
                let name = utf8(&value, "invalid format name")?;
                if name == "auto" {
                    format = FileFmt::Auto;
                } else if crate::device::valid_format_name(name) {
                    format = FileFmt::Named(name.to_string());
                } else {
                    return err(format!("invalid format name: '{name}'"));
                }
            }
            Opt::FmtOption => {
                let o = utf8(&value, "invalid format option")?;
                if o.is_empty() || o.contains('\0') {
                    return err(format!("invalid format option: '{o}'"));
                }
                fmt_options.push(o.to_string());
            }
            Opt::Snapshot => {
                let s = utf8(&value, "invalid snapshot name")?;
                if s.is_empty() || s.contains(',') || s.contains('\0') {
                    return err(format!("invalid snapshot name: '{s}'"));
                }
                snapshot = Some(s.to_string());
            }
        }
    }

    // -J and --raw print tables (util-linux: alone they mean --list --all).
    if json || raw {
        list = true;
    }
    let mut operands = operands.into_iter();
    let mut next = || operands.next();

    if args.is_empty() {
        act = Some(Act::Show);
        list = true;
    }
    if list && columns.is_empty() {
        columns = Column::DEFAULT.to_vec();
    }
    if let Some(o) = &outarg {
        parse_columns(o, &mut columns).map_err(|c| UsageError(format!("unknown column: {c}")))?;
    }
    let list_format = ListFormat {
        list,
        style: if json {
            Style::Json
        } else if raw {
            Style::Raw
        } else {
            Style::Table
        },
        headings,
        columns,
    };

    let mut setup_file: Option<(Option<OsString>, OsString)> = None;
    let mut show_one: Option<OsString> = None;
    match act {
        Some(Act::FindFree) => {
            if let Some(file) = next() {
                setup_file = Some((None, file));
            }
        }
        Some(_) => {}
        None => {
            let first = next();
            let second = next();
            match (first, second) {
                (None, _) if list => act = Some(Act::Show),
                (None, _) => return err("no loop device specified"),
                (Some(dev), None) => {
                    if direct_io.is_some() || block_size.is_some() {
                        return err(
                            "changing --direct-io or --sector-size of an attached device is not supported",
                        );
                    }
                    show_one = Some(dev);
                }
                (Some(dev), Some(file)) => setup_file = Some((Some(dev), file)),
            }
        }
    }
    let rest: Vec<OsString> = std::iter::from_fn(&mut next).collect();
    if act == Some(Act::Detach) {
        detach.extend(rest);
    } else if !rest.is_empty() {
        return err("unexpected arguments");
    }

    let setup_only = sizelimit.is_some()
        || read_only
        || partscan
        || show
        || direct_io.is_some()
        || block_size.is_some()
        || format != FileFmt::Default
        || !fmt_options.is_empty()
        || snapshot.is_some()
        || trust_paths;
    if setup_file.is_none() && setup_only {
        return err(
            "the options --{sizelimit,partscan,read-only,show,direct-io,sector-size,\
             file-fmt,fmt-option,snapshot,trust-image-paths} are allowed during loop device setup only",
        );
    }
    if offset.is_some() && setup_file.is_none() && !(act == Some(Act::Show) && associated.is_some())
    {
        return err("the option --offset is not allowed in this context");
    }

    if let Some((device, file)) = setup_file {
        let block_size = match block_size {
            None => 0,
            Some(b) => u32::try_from(b).map_err(|_| {
                UsageError(format!(
                    "failed to parse logical block size: '{b}': Numerical result out of range"
                ))
            })?,
        };
        if snapshot.is_some() {
            read_only = true;
            match &format {
                FileFmt::Default => format = FileFmt::Named("qcow2".into()),
                FileFmt::Named(n) if n == "raw" => {
                    return err("--snapshot needs a format with internal snapshots (qcow2)")
                }
                _ => {}
            }
        }
        let mut all_options = fmt_options;
        if let Some(s) = snapshot {
            all_options.push(format!("snapshot={s}"));
        }
        let options = all_options.join(",");
        if options.len() >= crate::uapi::OPTIONS_SIZE {
            return err(format!(
                "format options too long ({} bytes, at most {})",
                options.len(),
                crate::uapi::OPTIONS_SIZE - 1
            ));
        }
        return Ok(Action::Setup(Setup {
            device,
            file,
            read_only,
            partscan,
            direct_io: direct_io.unwrap_or(false),
            offset: offset.unwrap_or(0),
            sizelimit: sizelimit.unwrap_or(0),
            block_size,
            format,
            options,
            show,
            nooverlap,
            trust_paths,
        }));
    }
    if let Some(device) = show_one {
        return Ok(Action::ShowOne {
            device,
            format: list_format,
        });
    }
    Ok(match act {
        Some(Act::Show) => Action::Show {
            associated,
            offset,
            format: list_format,
        },
        Some(Act::FindFree) => Action::FindFree,
        Some(Act::Detach) => Action::Detach(detach),
        Some(Act::DetachAll) => Action::DetachAll,
        Some(Act::SetCapacity) => Action::SetCapacity(capacity_of.unwrap_or_default()),
        None => return err("no loop device specified"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Action, UsageError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    fn e(args: &[&str]) -> String {
        match p(args) {
            Err(UsageError(m)) => m,
            Ok(a) => panic!("{args:?} parsed as {a:?}"),
        }
    }

    fn setup(args: &[&str]) -> Setup {
        match p(args) {
            Ok(Action::Setup(s)) => s,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn base(device: Option<&str>, file: &str) -> Setup {
        Setup {
            device: device.map(OsString::from),
            file: file.into(),
            read_only: false,
            partscan: false,
            direct_io: false,
            offset: 0,
            sizelimit: 0,
            block_size: 0,
            format: FileFmt::Default,
            options: String::new(),
            show: false,
            nooverlap: false,
            trust_paths: false,
        }
    }

    fn table(columns: &[Column]) -> ListFormat {
        ListFormat {
            list: true,
            style: Style::Table,
            headings: true,
            columns: columns.to_vec(),
        }
    }

    fn old() -> ListFormat {
        ListFormat {
            list: false,
            style: Style::Table,
            headings: true,
            columns: vec![],
        }
    }

    #[test]
    fn attach_forms() {
        assert_eq!(setup(&["/dev/lff0", "img"]), base(Some("/dev/lff0"), "img"));
        assert_eq!(setup(&["-f", "img"]), base(None, "img"));
        assert_eq!(setup(&["img", "-f"]), base(None, "img"));
        let mut s = base(None, "img");
        s.show = true;
        s.read_only = true;
        s.partscan = true;
        assert_eq!(setup(&["-frP", "--show", "img"]), s);
        assert_eq!(
            setup(&["--find", "--sh", "--read-only", "--partscan", "img"]),
            s
        );
        assert_eq!(setup(&["-f", "--show", "-r", "-P", "--", "img"]), s);
    }

    #[test]
    fn set_capacity_and_nooverlap() {
        assert_eq!(
            p(&["-c", "/dev/lff0"]),
            Ok(Action::SetCapacity("/dev/lff0".into()))
        );
        assert_eq!(
            p(&["--set-capacity=lff3"]),
            Ok(Action::SetCapacity("lff3".into()))
        );
        assert_eq!(e(&["-c"]), "option requires an argument -- 'c'");
        assert_eq!(e(&["-c", "lff0", "img"]), "unexpected arguments");
        assert!(e(&["-c", "lff0", "-d", "lff1"]).starts_with("mutually exclusive arguments:"));
        assert!(e(&["-c", "lff0", "-f"]).starts_with("mutually exclusive arguments:"));
        assert!(e(&["-c", "lff0", "-l"]).starts_with("mutually exclusive arguments:"));
        let mut s = base(None, "img");
        s.nooverlap = true;
        s.show = true;
        assert_eq!(setup(&["-fL", "--show", "img"]), s);
        assert_eq!(setup(&["--nooverlap", "--find", "--show", "img"]), s);
    }

    #[test]
    fn attach_values() {
        let s = setup(&[
            "-o",
            "1M",
            "--sizelimit=2GiB",
            "-b",
            "4096",
            "--direct-io",
            "lff1",
            "img",
        ]);
        assert_eq!(s.offset, 1 << 20);
        assert_eq!(s.sizelimit, 2 << 30);
        assert_eq!(s.block_size, 4096);
        assert!(s.direct_io);
        assert_eq!(s.device.as_deref(), Some(OsStr::new("lff1")));
        assert_eq!(setup(&["-o512", "-f", "x"]).offset, 512);
        assert_eq!(setup(&["--offset", "0x200", "-f", "x"]).offset, 512);
        assert_eq!(setup(&["--sector-size=1K", "-f", "x"]).block_size, 1024);
        assert!(setup(&["--direct-io=on", "-f", "x"]).direct_io);
        assert!(!setup(&["--direct-io=off", "-f", "x"]).direct_io);
        assert_eq!(
            e(&["--direct-io=maybe", "-f", "x"]),
            "argument error: maybe"
        );
        assert_eq!(e(&["-o", "1x", "-f", "x"]), "failed to parse offset: '1x'");
        assert_eq!(
            e(&["--sizelimit", "-1", "-f", "x"]),
            "failed to parse size: '-1'"
        );
        assert_eq!(
            e(&["-o", "99E", "-f", "x"]),
            "failed to parse offset: '99E': Numerical result out of range"
        );
        assert_eq!(
            e(&["-b", "8G", "-f", "x"]),
            "failed to parse logical block size: '8589934592': Numerical result out of range"
        );
    }

    #[test]
    fn formats_and_options() {
        assert_eq!(
            setup(&["--file-fmt", "auto", "-f", "x"]).format,
            FileFmt::Auto
        );
        assert_eq!(
            setup(&["--file-fmt=qcow2", "-f", "x"]).format,
            FileFmt::Named("qcow2".into())
        );
        assert_eq!(
            setup(&["--file-fmt=vmdk", "-f", "x"]).format,
            FileFmt::Named("vmdk".into())
        );
        assert_eq!(
            e(&["--file-fmt=a/b", "-f", "x"]),
            "invalid format name: 'a/b'"
        );
        assert_eq!(e(&["--file-fmt=", "-f", "x"]), "invalid format name: ''");
        let s = setup(&["--snapshot", "s1", "-f", "x"]);
        assert!(s.read_only);
        assert_eq!(s.format, FileFmt::Named("qcow2".into()));
        assert_eq!(s.options, "snapshot=s1");
        let s = setup(&[
            "--fmt-option",
            "a=1",
            "--fmt-option=b",
            "--snapshot=s",
            "--file-fmt=auto",
            "-f",
            "x",
        ]);
        assert_eq!(s.options, "a=1,b,snapshot=s");
        assert_eq!(s.format, FileFmt::Auto);
        assert_eq!(
            e(&["--snapshot=s", "--file-fmt=raw", "-f", "x"]),
            "--snapshot needs a format with internal snapshots (qcow2)"
        );
        assert_eq!(
            e(&["--snapshot=a,b", "-f", "x"]),
            "invalid snapshot name: 'a,b'"
        );
        let long = "o".repeat(130);
        assert!(e(&["--fmt-option", &long, "-f", "x"]).starts_with("format options too long"));
    }

    #[test]
    fn show_forms() {
        let all = |format| Action::Show {
            associated: None,
            offset: None,
            format,
        };
        assert_eq!(p(&[]).unwrap(), all(table(&Column::DEFAULT)));
        assert_eq!(p(&["-a"]).unwrap(), all(old()));
        assert_eq!(p(&["-l"]).unwrap(), all(table(&Column::DEFAULT)));
        assert_eq!(p(&["-la"]).unwrap(), all(table(&Column::DEFAULT)));
        let mut j = table(&Column::DEFAULT);
        j.style = Style::Json;
        assert_eq!(p(&["-J"]).unwrap(), all(j.clone()));
        assert_eq!(p(&["--json", "--list"]).unwrap(), all(j));
        let mut r = table(&Column::DEFAULT);
        r.style = Style::Raw;
        r.headings = false;
        assert_eq!(p(&["--raw", "-n"]).unwrap(), all(r));
        assert_eq!(
            p(&["-O", "NAME,FORMAT"]).unwrap(),
            all(table(&[Column::Name, Column::Format]))
        );
        let mut plus = Column::DEFAULT.to_vec();
        plus.push(Column::Layers);
        assert_eq!(p(&["-l", "-O", "+layers"]).unwrap(), all(table(&plus)));
        assert_eq!(p(&["--output-all"]).unwrap(), all(table(&Column::ALL)));
        assert_eq!(e(&["-O", "NAME,BOGUS"]), "unknown column: BOGUS");
        assert_eq!(
            p(&["-j", "f.img", "-o", "512"]).unwrap(),
            Action::Show {
                associated: Some("f.img".into()),
                offset: Some(512),
                format: old()
            }
        );
        assert_eq!(
            p(&["/dev/lff0"]).unwrap(),
            Action::ShowOne {
                device: "/dev/lff0".into(),
                format: old()
            }
        );
        assert_eq!(
            p(&["-l", "lff0"]).unwrap(),
            Action::ShowOne {
                device: "lff0".into(),
                format: table(&Column::DEFAULT)
            }
        );
    }

    #[test]
    fn other_actions() {
        assert_eq!(p(&["-f"]).unwrap(), Action::FindFree);
        assert_eq!(p(&["-D"]).unwrap(), Action::DetachAll);
        assert_eq!(
            p(&["-d", "lff0", "lff1", "/dev/lff2"]).unwrap(),
            Action::Detach(vec!["lff0".into(), "lff1".into(), "/dev/lff2".into()])
        );
        assert_eq!(
            p(&["-dlff0", "--detach=lff1"]).unwrap(),
            Action::Detach(vec!["lff0".into(), "lff1".into()])
        );
        assert_eq!(p(&["-h", "--bogus"]).unwrap(), Action::Help);
        assert_eq!(p(&["--help"]).unwrap(), Action::Help);
        assert_eq!(p(&["-V"]).unwrap(), Action::Version);
        assert_eq!(p(&["--vers"]).unwrap(), Action::Version);
        assert_eq!(p(&["-v", "-f"]).unwrap(), Action::FindFree);
    }

    #[test]
    fn getopt_errors() {
        assert_eq!(e(&["-x"]), "invalid option -- 'x'");
        assert_eq!(e(&["--bogus"]), "unrecognized option '--bogus'");
        assert_eq!(e(&["-o"]), "option requires an argument -- 'o'");
        assert_eq!(e(&["--offset"]), "option '--offset' requires an argument");
        assert_eq!(
            e(&["--show=1"]),
            "option '--show' doesn't allow an argument"
        );
        assert_eq!(
            e(&["--s", "x"]),
            "option '--s' is ambiguous; possibilities: '--sector-size' '--show' '--sizelimit' '--snapshot' '--set-capacity'"
        );
        // "--v" is ambiguous between --verbose and --version.
        assert!(e(&["--v"]).starts_with("option '--v' is ambiguous"));
    }

    #[test]
    fn conflicts() {
        let msg = "mutually exclusive arguments: --detach-all --all --set-capacity --detach --find --associated";
        assert_eq!(e(&["-a", "-D"]), msg);
        assert_eq!(e(&["-f", "-d", "x"]), msg);
        assert_eq!(e(&["-a", "-j", "x"]), msg);
        assert_eq!(
            e(&["-l", "-f"]),
            "mutually exclusive arguments: --detach-all --set-capacity --detach --find --list"
        );
        assert_eq!(
            e(&["-d", "x", "-O", "NAME"]),
            "mutually exclusive arguments: --detach-all --set-capacity --detach --find --output"
        );
        assert_eq!(
            e(&["-J", "--raw"]),
            "mutually exclusive arguments: --json --raw"
        );
        // Repeating the same option is fine.
        assert!(p(&["-a", "-a"]).is_ok());
    }

    #[test]
    fn context_errors() {
        let setup_only = "the options --{sizelimit,partscan,read-only,show,direct-io,sector-size,\
                          file-fmt,fmt-option,snapshot,trust-image-paths} are allowed during loop device setup only";
        assert_eq!(e(&["-r", "-a"]), setup_only);
        assert_eq!(e(&["--show", "-f"]), setup_only);
        assert_eq!(e(&["--file-fmt=qcow2", "-d", "lff0"]), setup_only);
        assert_eq!(e(&["-P"]), "no loop device specified");
        assert_eq!(
            e(&["--direct-io", "lff0"]),
            "changing --direct-io or --sector-size of an attached device is not supported"
        );
        assert_eq!(
            e(&["-o", "1", "-a"]),
            "the option --offset is not allowed in this context"
        );
        assert_eq!(e(&["-r"]), "no loop device specified");
        assert_eq!(e(&["-n"]), "no loop device specified");
        assert_eq!(e(&["-f", "a", "b"]), "unexpected arguments");
        assert_eq!(e(&["lff0", "a", "b"]), "unexpected arguments");
        assert_eq!(e(&["-a", "x"]), "unexpected arguments");
        assert_eq!(e(&["-D", "x"]), "unexpected arguments");
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let file = OsString::from_vec(b"/tmp/\xff.img".to_vec());
        let a = parse(&["-f".into(), file.clone()]).unwrap();
        assert_eq!(a, Action::Setup(base(None, "").with_file(file)));
    }

    impl Setup {
        fn with_file(mut self, f: OsString) -> Setup {
            self.file = f;
            self
        }
    }
}
