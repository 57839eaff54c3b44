//! The format engine's own cost, natively on the host: reads of an image
//! through [`qcow2_format::host::Image`] (the engine the kernel module
//! runs, with the host's decompressors and file reads) in the request
//! pattern of `qemu-img bench`, so the two can be compared read for read
//! (`bench/native` runs both).
//!
//! ```text
//! read_bench IMAGE SIZE STEP COUNT [--verify RAW]
//! ```
//!
//! Reads COUNT requests of SIZE bytes, one at a time: the first at offset
//! 0, each next one STEP bytes further, wrapped modulo the virtual size as
//! `qemu-img bench` 7.2 wraps it (`offset = (offset + step) % size`).
//! Prints one line of `key=value` pairs: `reads`, `bytes`, `secs`,
//! `usec_per_read` and `mb_per_s` (10^6 bytes per second), timing only the
//! reads (not the open). With `--verify RAW` every read is compared with
//! the same bytes of RAW (the `qemu-img convert -O raw` copy) and the
//! program exits 1 at the first difference, so a fast wrong engine cannot
//! pass for a fast one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::exit;
use std::time::Instant;

use qcow2_format::host::Image;

fn usage() -> ! {
    eprintln!("usage: read_bench IMAGE SIZE STEP COUNT [--verify RAW]");
    exit(2)
}

fn number(arg: &str) -> u64 {
    let (digits, unit) = match arg.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1 << 10),
        None => match arg.strip_suffix(['m', 'M']) {
            Some(d) => (d, 1 << 20),
            None => (arg, 1),
        },
    };
    match digits.parse::<u64>() {
        Ok(n) => n * unit,
        Err(_) => {
            eprintln!("read_bench: not a number: {arg}");
            usage()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, size, step, count, raw) = match args.as_slice() {
        [p, s, st, c] => (p, number(s), number(st), number(c), None),
        [p, s, st, c, flag, r] if flag == "--verify" => {
            (p, number(s), number(st), number(c), Some(r))
        }
        _ => usage(),
    };
    let mut image = Image::open(Path::new(path)).unwrap_or_else(|e| {
        eprintln!("read_bench: {path}: {e}");
        exit(1)
    });
    let virtual_size = image.size();
    if size == 0 || size > virtual_size {
        eprintln!("read_bench: request size {size} must be 1..={virtual_size}");
        exit(2);
    }
    let raw = raw.map(|r| {
        File::open(r).unwrap_or_else(|e| {
            eprintln!("read_bench: {r}: {e}");
            exit(1)
        })
    });
    let mut buf = vec![0u8; size as usize];
    let mut expect = vec![0u8; if raw.is_some() { size as usize } else { 0 }];
    let mut offset = 0u64;
    let start = Instant::now();
    for _ in 0..count {
        // As qemu-img bench 7.2: a request that would cross the end is
        // not wrapped itself, so keep STEP and SIZE multiples that fit.
        if offset + size > virtual_size {
            eprintln!("read_bench: offset {offset} + {size} is past the end ({virtual_size})");
            exit(2);
        }
        if let Err(e) = image.read_at(&mut buf, offset) {
            eprintln!("read_bench: read at {offset}: {e}");
            exit(1);
        }
        if let Some(raw) = raw.as_ref() {
            if let Err(e) = raw.read_exact_at(&mut expect, offset) {
                eprintln!("read_bench: raw copy at {offset}: {e}");
                exit(1);
            }
            if buf != expect {
                eprintln!("read_bench: {path}: {size} bytes at {offset} differ from the raw copy");
                exit(1);
            }
        }
        offset = (offset + step) % virtual_size;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = count * size;
    println!(
        "reads={count} bytes={bytes} secs={secs:.6} usec_per_read={:.3} mb_per_s={:.1}",
        secs * 1e6 / count.max(1) as f64,
        bytes as f64 / secs / 1e6
    );
}
