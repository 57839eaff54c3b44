//! Output of `-l`/`-a`/`-j`: the list table (like libsmartcols' default
//! table: single-space separated, numbers right-aligned), `--raw`, `-J`
//! JSON (`{"loopdevices": [...]}`, like util-linux losetup), and the
//! traditional one-line-per-device format of `losetup -a`.

use crate::sysfs::DeviceInfo;

/// A list column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Device node.
    Name,
    /// Autoclear flag.
    Autoclear,
    /// Image file path.
    BackFile,
    /// Image file inode.
    BackIno,
    /// Image file st_dev.
    BackMajMin,
    /// Device number.
    MajMin,
    /// Offset.
    Offset,
    /// Partition scan flag.
    Partscan,
    /// Read-only.
    Ro,
    /// Size limit.
    Sizelimit,
    /// Direct I/O.
    Dio,
    /// Logical sector size.
    LogSec,
    /// Format driver.
    Format,
    /// Number of layers (image plus backing chain).
    Layers,
}

/// How a column's values are typed in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A number.
    Number,
    /// true/false.
    Bool,
}

impl Column {
    /// Every column, in `--output-all` order (util-linux's order, then ours).
    pub const ALL: [Column; 14] = [
        Column::Name,
        Column::Autoclear,
        Column::BackFile,
        Column::BackIno,
        Column::BackMajMin,
        Column::MajMin,
        Column::Offset,
        Column::Partscan,
        Column::Ro,
        Column::Sizelimit,
        Column::Dio,
        Column::LogSec,
        Column::Format,
        Column::Layers,
    ];

    /// The `--list` default: losetup's, plus FORMAT.
    pub const DEFAULT: [Column; 9] = [
        Column::Name,
        Column::Sizelimit,
        Column::Offset,
        Column::Autoclear,
        Column::Ro,
        Column::BackFile,
        Column::Dio,
        Column::LogSec,
        Column::Format,
    ];

    /// Header text (and, lower-cased, the JSON key).
    pub fn header(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::Autoclear => "AUTOCLEAR",
            Column::BackFile => "BACK-FILE",
            Column::BackIno => "BACK-INO",
            Column::BackMajMin => "BACK-MAJ:MIN",
            Column::MajMin => "MAJ:MIN",
            Column::Offset => "OFFSET",
            Column::Partscan => "PARTSCAN",
            Column::Ro => "RO",
            Column::Sizelimit => "SIZELIMIT",
            Column::Dio => "DIO",
            Column::LogSec => "LOG-SEC",
            Column::Format => "FORMAT",
            Column::Layers => "LAYERS",
        }
    }

    /// One-line description for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Column::Name => "loop device name",
            Column::Autoclear => "autoclear flag set",
            Column::BackFile => "device backing file",
            Column::BackIno => "backing file inode number",
            Column::BackMajMin => "backing file major:minor device number",
            Column::MajMin => "loop device major:minor number",
            Column::Offset => "offset from the beginning",
            Column::Partscan => "partscan flag set",
            Column::Ro => "read-only device",
            Column::Sizelimit => "size limit of the file in bytes",
            Column::Dio => "access backing file with direct-io",
            Column::LogSec => "logical sector size in bytes",
            Column::Format => "file format driver",
            Column::Layers => "number of layers (image and backing files)",
        }
    }

    /// JSON type.
    pub fn kind(self) -> Kind {
        match self {
            Column::Name
            | Column::BackFile
            | Column::BackMajMin
            | Column::MajMin
            | Column::Format => Kind::Text,
            Column::BackIno
            | Column::Offset
            | Column::Sizelimit
            | Column::LogSec
            | Column::Layers => Kind::Number,
            Column::Autoclear | Column::Partscan | Column::Ro | Column::Dio => Kind::Bool,
        }
    }

    /// Right-aligned in the table (numbers and flags).
    pub fn right(self) -> bool {
        self.kind() != Kind::Text
    }

    /// Parses a column name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL
            .into_iter()
            .find(|c| c.header().eq_ignore_ascii_case(name))
    }

    /// The value of this column for `info`: `None` when unknown.
    pub fn value(self, info: &DeviceInfo) -> Option<String> {
        let b = |v: Option<bool>| v.map(|v| if v { "1" } else { "0" }.to_string());
        let n = |v: Option<u64>| v.map(|v| v.to_string());
        match self {
            Column::Name => Some(info.path.to_string_lossy().into_owned()),
            Column::Autoclear => b(info.autoclear),
            Column::BackFile => info
                .backing_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            Column::BackIno => n(info.back_ino),
            Column::BackMajMin => info
                .back_dev
                .map(|d| format!("{}:{}", libc::major(d), libc::minor(d))),
            Column::MajMin => info.maj_min.map(|(a, b)| format!("{a}:{b}")),
            Column::Offset => n(info.offset),
            Column::Partscan => b(info.partscan),
            Column::Ro => b(info.ro),
            Column::Sizelimit => n(info.sizelimit),
            Column::Dio => b(info.dio),
            Column::LogSec => n(info.log_sec),
            Column::Format => info.format.clone(),
            Column::Layers => n(info.nr_layers.map(u64::from)),
        }
    }
}

/// Parses `-O` column lists: "NAME,OFFSET" replaces `current`,
/// "+FORMAT" appends to it (like util-linux). Errors name the unknown
/// column.
pub fn parse_columns(list: &str, current: &mut Vec<Column>) -> Result<(), String> {
    let (append, list) = match list.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, list),
    };
    let mut cols = Vec::new();
    for name in list.split(',') {
        match Column::from_name(name) {
            Some(c) => cols.push(c),
            None => return Err(name.to_string()),
        }
    }
    if !append {
        current.clear();
    }
    current.extend(cols);
    Ok(())
}

/// Output style of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Aligned table.
    Table,
    /// `--raw`: space separated, special characters escaped.
    Raw,
    /// `--json`.
    Json,
}

/// Escapes what would break a table cell: spaces (raw only), backslashes,
/// control characters, as `\xHH` like libsmartcols.
fn escape_cell(s: &str, space: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\\' || (space && c == ' ') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(col: Column, v: Option<&str>) -> String {
    match (col.kind(), v) {
        (_, None) => "null".to_string(),
        (Kind::Text, Some(s)) => json_string(s),
        (Kind::Number, Some(s)) => s.to_string(),
        (Kind::Bool, Some(s)) => (s != "0").to_string(),
    }
}

/// Renders the list of devices.
pub fn render(infos: &[DeviceInfo], cols: &[Column], style: Style, headings: bool) -> String {
    let rows: Vec<Vec<Option<String>>> = infos
        .iter()
        .map(|i| {
            cols.iter()
                .map(|c| match (style, c.value(i)) {
                    // Like losetup, the table aligns "MAJ:MIN" on the colon.
                    (Style::Table, Some(v)) if matches!(c, Column::MajMin | Column::BackMajMin) => {
                        Some(match v.split_once(':') {
                            Some((a, b)) => format!("{a:>3}:{b:<3}"),
                            None => v,
                        })
                    }
                    (_, v) => v,
                })
                .collect()
        })
        .collect();
    match style {
        Style::Json => render_json(&rows, cols),
        Style::Raw => {
            let mut out = String::new();
            let mut line = |cells: Vec<String>| {
                out.push_str(&cells.join(" "));
                out.push('\n');
            };
            if headings {
                line(cols.iter().map(|c| c.header().to_string()).collect());
            }
            for row in &rows {
                line(
                    row.iter()
                        .map(|v| escape_cell(v.as_deref().unwrap_or(""), true))
                        .collect(),
                );
            }
            out
        }
        Style::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| escape_cell(v.as_deref().unwrap_or(""), false))
                        .collect()
                })
                .collect();
            let mut widths: Vec<usize> = cols
                .iter()
                .map(|c| if headings { c.header().len() } else { 0 })
                .collect();
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let mut out = String::new();
            let mut line = |row: Vec<&str>| {
                let mut s = String::new();
                for (i, (cell, col)) in row.iter().zip(cols).enumerate() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    let last = i + 1 == cols.len();
                    if i > 0 {
                        s.push(' ');
                    }
                    if col.right() {
                        s.push_str(&" ".repeat(pad));
                        s.push_str(cell);
                    } else {
                        s.push_str(cell);
                        if !last {
                            s.push_str(&" ".repeat(pad));
                        }
                    }
                }
                out.push_str(s.trim_end());
                out.push('\n');
            };
            if headings {
                line(cols.iter().map(|c| c.header()).collect());
            }
            for row in &cells {
                line(row.iter().map(String::as_str).collect());
            }
            out
        }
    }
}

fn render_json(rows: &[Vec<Option<String>>], cols: &[Column]) -> String {
    let mut out = String::from("{\n   \"loopdevices\": [");
    for (n, row) in rows.iter().enumerate() {
        out.push_str(if n == 0 { "\n" } else { ",\n" });
        out.push_str("      {\n");
        for (i, (col, v)) in cols.iter().zip(row).enumerate() {
            out.push_str(&format!(
                "         {}: {}{}\n",
                json_string(&col.header().to_ascii_lowercase()),
                json_value(*col, v.as_deref()),
                if i + 1 < cols.len() { "," } else { "" }
            ));
        }
        out.push_str("      }");
    }
    if rows.is_empty() {
        out.push_str("]\n}\n");
    } else {
        out.push_str("\n   ]\n}\n");
    }
    out
}

/// The traditional `losetup -a` line:
/// `/dev/lff0: [2049]:131 (/srv/disk.qcow2), offset 512, format qcow2`.
pub fn old_style_line(info: &DeviceInfo) -> String {
    let file = info
        .backing_file
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = match (info.back_dev, info.back_ino) {
        (Some(dev), Some(ino)) => {
            format!("{}: [{dev:04}]:{ino} ({file})", info.path.display())
        }
        _ => format!("{}: []: ({file})", info.path.display()),
    };
    if let Some(o) = info.offset.filter(|&o| o != 0) {
        s.push_str(&format!(", offset {o}"));
    }
    if let Some(l) = info.sizelimit.filter(|&l| l != 0) {
        s.push_str(&format!(", sizelimit {l}"));
    }
    if let Some(f) = &info.format {
        s.push_str(&format!(", format {f}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dev(n: u32, file: &str, fmt: &str) -> DeviceInfo {
        DeviceInfo {
            name: format!("lff{n}"),
            index: n,
            path: PathBuf::from(format!("/dev/lff{n}")),
            backing_file: Some(file.into()),
            format: Some(fmt.into()),
            offset: Some(0),
            sizelimit: Some(0),
            autoclear: Some(false),
            partscan: Some(false),
            dio: Some(false),
            nr_layers: Some(1),
            ro: Some(false),
            size: Some(1 << 20),
            log_sec: Some(512),
            maj_min: Some((252, n)),
            back_dev: None,
            back_ino: None,
        }
    }

    fn two() -> Vec<DeviceInfo> {
        let mut b = dev(10, "/srv/images/root.qcow2", "qcow2");
        b.offset = Some(1048576);
        b.ro = Some(true);
        b.nr_layers = Some(3);
        b.back_dev = Some(libc::makedev(8, 1));
        b.back_ino = Some(131);
        vec![dev(0, "/tmp/a.img", "raw"), b]
    }

    #[test]
    fn column_names() {
        assert_eq!(Column::from_name("back-file"), Some(Column::BackFile));
        assert_eq!(Column::from_name("MAJ:MIN"), Some(Column::MajMin));
        assert_eq!(Column::from_name("log-sec"), Some(Column::LogSec));
        assert_eq!(Column::from_name("REF"), None);
        let mut cols = Column::DEFAULT.to_vec();
        parse_columns("name,format", &mut cols).unwrap();
        assert_eq!(cols, vec![Column::Name, Column::Format]);
        parse_columns("+LAYERS", &mut cols).unwrap();
        assert_eq!(cols, vec![Column::Name, Column::Format, Column::Layers]);
        assert_eq!(parse_columns("NAME,FOO", &mut cols), Err("FOO".into()));
        assert_eq!(parse_columns("", &mut cols), Err("".into()));
    }

    #[test]
    fn default_table() {
        let out = render(&two(), &Column::DEFAULT, Style::Table, true);
        assert_eq!(
            out,
            "\
NAME       SIZELIMIT  OFFSET AUTOCLEAR RO BACK-FILE              DIO LOG-SEC FORMAT
/dev/lff0          0       0         0  0 /tmp/a.img               0     512 raw
/dev/lff10         0 1048576         0  1 /srv/images/root.qcow2   0     512 qcow2
"
        );
        let out = render(&two(), &Column::DEFAULT, Style::Table, false);
        assert_eq!(
            out,
            "\
/dev/lff0  0       0 0 0 /tmp/a.img             0 512 raw
/dev/lff10 0 1048576 0 1 /srv/images/root.qcow2 0 512 qcow2
"
        );
    }

    #[test]
    fn selected_columns_and_unknown_values() {
        let cols = [
            Column::Name,
            Column::BackIno,
            Column::BackMajMin,
            Column::MajMin,
            Column::Layers,
        ];
        let out = render(&two(), &cols, Style::Table, true);
        assert_eq!(
            out,
            "\
NAME       BACK-INO BACK-MAJ:MIN MAJ:MIN LAYERS
/dev/lff0                        252:0        1
/dev/lff10      131   8:1        252:10       3
"
        );
    }

    #[test]
    fn raw_output_escapes() {
        let mut d = dev(1, "/a b\\c", "raw");
        d.ro = None;
        let out = render(
            &[d],
            &[Column::Name, Column::BackFile, Column::Ro],
            Style::Raw,
            true,
        );
        assert_eq!(out, "NAME BACK-FILE RO\n/dev/lff1 /a\\x20b\\x5cc \n");
    }

    #[test]
    fn json_output() {
        let cols = [
            Column::Name,
            Column::Sizelimit,
            Column::Ro,
            Column::BackFile,
            Column::BackIno,
            Column::Format,
        ];
        let mut v = two();
        v[0].backing_file = Some("/tmp/\"q\"\n.img".into());
        let out = render(&v, &cols, Style::Json, true);
        assert_eq!(
            out,
            r#"{
   "loopdevices": [
      {
         "name": "/dev/lff0",
         "sizelimit": 0,
         "ro": false,
         "back-file": "/tmp/\"q\"\n.img",
         "back-ino": null,
         "format": "raw"
      },
      {
         "name": "/dev/lff10",
         "sizelimit": 0,
         "ro": true,
         "back-file": "/srv/images/root.qcow2",
         "back-ino": 131,
         "format": "qcow2"
      }
   ]
}
"#
        );
        assert_eq!(
            render(&[], &cols, Style::Json, true),
            "{\n   \"loopdevices\": []\n}\n"
        );
    }

    #[test]
    fn old_style() {
        let v = two();
        assert_eq!(
            old_style_line(&v[0]),
            "/dev/lff0: []: (/tmp/a.img), format raw"
        );
        assert_eq!(
            old_style_line(&v[1]),
            "/dev/lff10: [2049]:131 (/srv/images/root.qcow2), offset 1048576, format qcow2"
        );
    }
}
