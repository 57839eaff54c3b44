//! [`Chain::status`] (what `LFF_GET_MAP` reports) against
//! `qemu-img map --output=json` on images made by qemu-img/qemu-io:
//! allocation, zero and compressed status, depth and host offsets.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use qcow2_format::host::Image;
use qcow2_format::StatusKind;

/// One `qemu-img map` entry, the fields compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    start: u64,
    length: u64,
    depth: u64,
    present: bool,
    zero: bool,
    data: bool,
    compressed: bool,
    /// Only for uncompressed data (qemu-img also gives it for some
    /// unallocated subclusters, which the driver does not).
    offset: Option<u64>,
}

impl Entry {
    fn follows(&self, e: &Entry) -> bool {
        let same = (
            self.depth,
            self.present,
            self.zero,
            self.data,
            self.compressed,
        ) == (e.depth, e.present, e.zero, e.data, e.compressed);
        let host = match (self.offset, e.offset) {
            (Some(a), Some(b)) => a + self.length == b,
            (None, None) => true,
            _ => false,
        };
        same && host && self.start + self.length == e.start
    }
}

fn merge(entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some(last) if last.follows(&e) => last.length += e.length,
            _ => out.push(e),
        }
    }
    out
}

/// The value of `"key": VALUE` in one JSON object of qemu-img's output.
fn field<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = obj[at..].trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

fn qemu_map(image: &Path) -> Vec<Entry> {
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "qcow2", s(image)])
        .output()
        .expect("run qemu-img map");
    assert!(
        out.status.success(),
        "qemu-img map {}: {:?}",
        image.display(),
        out
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let num = |o: &str, k: &str| {
        field(o, k)
            .unwrap_or_else(|| panic!("{k} in {o}"))
            .parse::<u64>()
            .unwrap()
    };
    let flag = |o: &str, k: &str| field(o, k) == Some("true");
    merge(text.split('{').skip(1).map(|o| {
        let data = flag(o, "data");
        // QEMU before 8.2 has no "compressed": there (no encryption, no
        // external data file) data without a host offset is compressed.
        let compressed = match field(o, "compressed") {
            Some(v) => v == "true",
            None => data && field(o, "offset").is_none(),
        };
        Entry {
            start: num(o, "start"),
            length: num(o, "length"),
            depth: num(o, "depth"),
            present: flag(o, "present"),
            zero: flag(o, "zero"),
            data,
            compressed,
            offset: if data && !compressed {
                field(o, "offset").map(|v| v.parse().unwrap())
            } else {
                None
            },
        }
    }))
}

fn our_map(image: &Path) -> Vec<Entry> {
    let mut img = Image::open(image).unwrap();
    let size = img.size();
    let mut pos = 0;
    let mut runs = Vec::new();
    while pos < size {
        let st = img.status(pos, size - pos).unwrap();
        let (present, zero, data, compressed, offset) = match st.kind {
            StatusKind::Data { host_offset } => (true, false, true, false, Some(host_offset)),
            StatusKind::Compressed => (true, false, true, true, None),
            StatusKind::Zero => (true, true, false, false, None),
            StatusKind::Unallocated => (false, true, false, false, None),
        };
        runs.push(Entry {
            start: pos,
            length: st.len,
            depth: st.depth as u64,
            present,
            zero,
            data,
            compressed,
            offset,
        });
        pos += st.len;
    }
    merge(runs)
}

fn same_map(image: &Path) {
    let want = qemu_map(image);
    let got = our_map(image);
    assert_eq!(got, want, "map of {}", image.display());
}

/// `qemu-img ARGS` (split at spaces; `{}` stands for the image `name` in
/// `dir`, `@FILE` for `FILE` in `dir`), then `qemu-io` `writes` on it;
/// returns the image's path.
fn made(dir: &Path, name: &str, args: &str, writes: &[&str]) -> PathBuf {
    let img = path(dir, name);
    let args: Vec<String> = args
        .split(' ')
        .map(|a| match a.strip_prefix('@') {
            _ if a == "{}" => s(&img).to_string(),
            Some(f) => s(&path(dir, f)).to_string(),
            None => a.to_string(),
        })
        .collect();
    qemu_img(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if !writes.is_empty() {
        qemu_io(&img, writes);
    }
    img
}

#[test]
fn plain_zero_discard() {
    let dir = tempdir();
    let writes = [
        "write -P 1 0 64k",
        "write -P 2 100000 200001",
        "write -z 1M 128k",
        "write -z -u 2M 64k",
        "discard 32k 8k",
        "write -P 3 6287360 4k",
    ];
    let args = "create -f qcow2 -o cluster_size=4k {} 6M";
    same_map(&made(dir.path(), "a.qcow2", args, &writes));
}

#[test]
fn compressed_and_mixed() {
    let dir = tempdir();
    write_raw(dir.path(), "src.raw", &mixed_data(3 << 20, 7));
    let writes = [
        "write -P 0x44 30k 50k",
        "write -z 1M 128k",
        "discard 2M 64k",
    ];
    let args = "convert -c -f raw -O qcow2 -o cluster_size=64k @src.raw {}";
    same_map(&made(dir.path(), "c.qcow2", args, &writes));
}

#[test]
fn extended_l2() {
    let dir = tempdir();
    let writes = [
        "write -P 1 0 2k",
        "write -P 2 6k 1k",
        "write -z 64k 16k",
        "write -P 3 128k 64k",
        "discard 160k 8k",
        "write -z -u 1114112 64k",
    ];
    let args = "create -f qcow2 -o extended_l2=on,cluster_size=64k {} 4M";
    same_map(&made(dir.path(), "e.qcow2", args, &writes));
}

#[test]
fn chain_with_short_raw_base() {
    let dir = tempdir();
    let d = dir.path();
    write_raw(d, "base.raw", &mixed_data(3 << 20, 9));
    let writes = ["write -P 31 1M 512k", "write -P 32 4M 256k"];
    made(
        d,
        "mid.qcow2",
        "create -f qcow2 -b base.raw -F raw {} 6M",
        &writes,
    );
    let writes = [
        "write -P 33 0 8k",
        "write -z 2M 64k",
        "write -P 34 4325376 64k",
        "write -P 35 7M 4k",
    ];
    let args = "create -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 {} 8M";
    same_map(&made(d, "top.qcow2", args, &writes));
}

#[test]
fn snapshot_applied() {
    // What the guest suite compares for a snapshot: the chain's status
    // after `qemu-img snapshot -a` (the snapshot's L1 table made active).
    let dir = tempdir();
    let d = dir.path();
    let img = made(d, "s.qcow2", "create -f qcow2 {} 4M", &["write -P 21 0 4M"]);
    qemu_img(&["snapshot", "-c", "first", s(&img)]);
    qemu_io(&img, &["write -P 22 1M 1M", "write -z 3M 64k"]);
    qemu_img(&["snapshot", "-a", "first", s(&img)]);
    same_map(&img);
}
