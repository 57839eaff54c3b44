//! End-to-end tests of the command line against a fake /sys and /dev tree
//! (no kernel module needed). The real ioctls run in the QEMU guest tests.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use losetup_fmt::sysfs::fake::{attach, unattached, FakeDevice};
use losetup_fmt::sysfs::Roots;
use losetup_fmt::{run, Env};

struct Tree {
    dir: tempfile::TempDir,
    env: Env,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: dir.path().join("sys"),
            dev: dir.path().join("dev"),
        };
        fs::create_dir_all(roots.sys.join("block")).unwrap();
        fs::create_dir_all(&roots.dev).unwrap();
        Tree {
            dir,
            env: Env {
                roots,
                modprobe: false,
            },
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn dev(&self, name: &str) -> String {
        self.env.roots.dev.join(name).display().to_string()
    }

    /// Runs with argv[0] = "losetup-fmt"; returns (status, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut argv: Vec<OsString> = vec!["losetup-fmt".into()];
        argv.extend(args.iter().map(OsString::from));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&argv, &self.env, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// Two attached devices and one unattached, with real backing files.
    fn populated(&self) -> (PathBuf, PathBuf) {
        let a = self.path("a.img");
        let b = self.path("images/root.qcow2");
        fs::create_dir_all(b.parent().unwrap()).unwrap();
        fs::write(&a, vec![0u8; 4096]).unwrap();
        fs::write(&b, vec![0u8; 4096]).unwrap();
        let a_s = a.display().to_string();
        let b_s = b.display().to_string();
        attach(
            &self.env.roots,
            &FakeDevice {
                index: 0,
                backing_file: &a_s,
                format: "raw",
                ..Default::default()
            },
        )
        .unwrap();
        unattached(&self.env.roots, 1).unwrap();
        attach(
            &self.env.roots,
            &FakeDevice {
                index: 2,
                backing_file: &b_s,
                format: "qcow2",
                offset: 1048576,
                ro: true,
                nr_layers: 3,
                ..Default::default()
            },
        )
        .unwrap();
        (a, b)
    }
}

#[test]
fn list_default_table() {
    let t = Tree::new();
    let (a, b) = t.populated();
    let (code, out, err) = t.run(&[]);
    assert_eq!((code, err.as_str()), (0, ""));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SIZELIMIT",
            "OFFSET",
            "AUTOCLEAR",
            "RO",
            "BACK-FILE",
            "DIO",
            "LOG-SEC",
            "FORMAT"
        ]
    );
    let row0: Vec<&str> = lines[1].split_whitespace().collect();
    let a_s = a.display().to_string();
    assert_eq!(
        row0,
        [
            t.dev("lff0").as_str(),
            "0",
            "0",
            "0",
            "0",
            a_s.as_str(),
            "0",
            "512",
            "raw"
        ]
    );
    let row2: Vec<&str> = lines[2].split_whitespace().collect();
    let b_s = b.display().to_string();
    assert_eq!(
        row2,
        [
            t.dev("lff2").as_str(),
            "0",
            "1048576",
            "0",
            "1",
            b_s.as_str(),
            "0",
            "512",
            "qcow2"
        ]
    );
    // -l and -la and --list --all are the same.
    assert_eq!(t.run(&["-l"]).1, out);
    assert_eq!(t.run(&["--list", "--all"]).1, out);
}

#[test]
fn list_noheadings_and_columns() {
    let t = Tree::new();
    t.populated();
    let (code, out, _) = t.run(&["-n", "-O", "NAME,LAYERS,MAJ:MIN,RO"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "{} 1 252:0   0\n{} 3 252:2   1\n",
            t.dev("lff0"),
            t.dev("lff2")
        )
    );
    let (_, out, _) = t.run(&["--raw", "-O", "NAME,FORMAT"]);
    assert_eq!(
        out,
        format!(
            "NAME FORMAT\n{} raw\n{} qcow2\n",
            t.dev("lff0"),
            t.dev("lff2")
        )
    );
    let (_, out, _) = t.run(&["--output-all", "-n"]);
    assert_eq!(out.lines().count(), 2);
    let (code, _, err) = t.run(&["-O", "NAME,NOPE"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "losetup-fmt: unknown column: NOPE\nTry 'losetup-fmt --help' for more information.\n"
    );
}

#[test]
fn list_backing_ids_come_from_the_file() {
    let t = Tree::new();
    let (a, _) = t.populated();
    let m = fs::metadata(&a).unwrap();
    let (_, out, _) = t.run(&["-n", "-O", "BACK-INO,BACK-MAJ:MIN"]);
    let first = out.lines().next().unwrap();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        [
            m.ino().to_string(),
            format!("{}:{}", libc::major(m.dev()), libc::minor(m.dev()))
        ]
    );
}

#[test]
fn json() {
    let t = Tree::new();
    let (a, _) = t.populated();
    let (code, out, _) = t.run(&["-J", "-O", "NAME,RO,OFFSET,BACK-FILE,FORMAT"]);
    assert_eq!(code, 0);
    let expected = format!(
        r#"{{
   "loopdevices": [
      {{
         "name": "{}",
         "ro": false,
         "offset": 0,
         "back-file": "{}",
         "format": "raw"
      }},
      {{
         "name": "{}",
         "ro": true,
         "offset": 1048576,
         "back-file": "{}",
         "format": "qcow2"
      }}
   ]
}}
"#,
        t.dev("lff0"),
        a.display(),
        t.dev("lff2"),
        t.path("images/root.qcow2").display()
    );
    assert_eq!(out, expected);
    // -J alone lists everything with the default columns.
    let (_, out, _) = t.run(&["-J"]);
    assert!(out.contains("\"log-sec\": 512"));
    assert!(out.contains("\"sizelimit\": 0"));
}

#[test]
fn all_traditional_format() {
    let t = Tree::new();
    let (a, b) = t.populated();
    let (code, out, _) = t.run(&["-a"]);
    assert_eq!(code, 0);
    let ma = fs::metadata(&a).unwrap();
    let mb = fs::metadata(&b).unwrap();
    assert_eq!(
        out,
        format!(
            "{}: [{:04}]:{} ({}), format raw\n{}: [{:04}]:{} ({}), offset 1048576, format qcow2\n",
            t.dev("lff0"),
            ma.dev(),
            ma.ino(),
            a.display(),
            t.dev("lff2"),
            mb.dev(),
            mb.ino(),
            b.display()
        )
    );
}

#[test]
fn associated() {
    let t = Tree::new();
    let (a, b) = t.populated();
    let (code, out, _) = t.run(&["-j", a.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("{}: [", t.dev("lff0"))), "{out}");
    assert_eq!(out.lines().count(), 1);
    // Through another path to the same file.
    let link = t.path("link.qcow2");
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let (_, out, _) = t.run(&["-j", link.to_str().unwrap(), "-O", "NAME", "-n"]);
    assert_eq!(out, format!("{}\n", t.dev("lff2")));
    // With an offset filter.
    let (_, out, _) = t.run(&[
        "-j",
        b.to_str().unwrap(),
        "-o",
        "1M",
        "-l",
        "-n",
        "-O",
        "NAME",
    ]);
    assert_eq!(out, format!("{}\n", t.dev("lff2")));
    let (_, out, _) = t.run(&["-j", b.to_str().unwrap(), "-o", "0"]);
    assert_eq!(out, "");
    // A file nobody uses, and one that does not exist.
    let (code, out, _) = t.run(&["-j", "/nonexistent"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn show_one() {
    let t = Tree::new();
    let (a, _) = t.populated();
    let (code, out, _) = t.run(&["lff0"]);
    assert_eq!(code, 0);
    assert!(
        out.ends_with(&format!("({}), format raw\n", a.display())),
        "{out}"
    );
    let (code, out, _) = t.run(&["-l", "-n", "-O", "NAME,FORMAT", &t.dev("lff2")]);
    assert_eq!((code, out), (0, format!("{} qcow2\n", t.dev("lff2"))));
    let (code, out, err) = t.run(&["lff1"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: No such device or address\n",
            t.dev("lff1")
        )
    );
    let (code, _, err) = t.run(&["lff9"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: failed to use device: No such device\n",
            t.dev("lff9")
        )
    );
}

#[test]
fn empty_system_lists_nothing() {
    let t = Tree::new();
    assert_eq!(
        t.run(&[]),
        (
            0,
            "NAME SIZELIMIT OFFSET AUTOCLEAR RO BACK-FILE DIO LOG-SEC FORMAT\n".into(),
            String::new()
        )
    );
    assert_eq!(t.run(&["-a"]), (0, String::new(), String::new()));
    assert_eq!(t.run(&["-J"]).1, "{\n   \"loopdevices\": []\n}\n");
    assert_eq!(t.run(&["-D"]), (0, String::new(), String::new()));
}

#[test]
fn find_without_control_node() {
    let t = Tree::new();
    let (code, out, err) = t.run(&["-f"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "losetup-fmt: cannot find an unused loop device: {}: No such file or directory\n",
            t.dev("loop-file-fmt-control")
        )
    );
    let img = t.path("x.img");
    fs::write(&img, vec![0u8; 1024]).unwrap();
    let (code, _, err) = t.run(&["-f", "--show", img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: cannot find an unused loop device: {}: No such file or directory\n",
            t.dev("loop-file-fmt-control")
        )
    );
}

#[test]
fn setup_errors_keep_errno_and_context() {
    let t = Tree::new();
    // The "device" is a regular file: the ioctl fails with ENOTTY.
    fs::write(t.env.roots.dev.join("lff0"), "").unwrap();
    let img = t.path("x.img");
    fs::write(&img, vec![0u8; 1024]).unwrap();
    let (code, _, err) = t.run(&["lff0", img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: failed to set up loop device: Inappropriate ioctl for device\n",
            t.dev("lff0")
        )
    );
    // Missing image file: the file is the context.
    let (code, _, err) = t.run(&["lff0", "/nonexistent.img"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "losetup-fmt: /nonexistent.img: failed to set up loop device: No such file or directory\n"
    );
    // Missing device node and no control node to add it.
    let (code, _, err) = t.run(&["lff5", img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: failed to set up loop device: No such file or directory\n",
            t.dev("lff5")
        )
    );
}

fn qemu_img(dir: &Path, args: &[&str]) {
    let st = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .status()
        .expect("qemu-img");
    assert!(st.success());
}

#[test]
fn setup_chain_errors_are_reported_before_any_ioctl() {
    let t = Tree::new();
    fs::write(t.env.roots.dev.join("lff0"), "").unwrap();
    qemu_img(
        t.dir.path(),
        &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"],
    );
    qemu_img(
        t.dir.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    fs::remove_file(t.path("base.qcow2")).unwrap();
    let top = t.path("top.qcow2");
    for fmt in ["auto", "qcow2"] {
        let (code, _, err) = t.run(&["--file-fmt", fmt, "lff0", top.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert_eq!(
            err,
            format!(
                "losetup-fmt: {}: cannot open backing file '{}' (named 'base.qcow2' in the image): No such file or directory\n",
                top.display(),
                t.path("base.qcow2").display()
            )
        );
    }
    // --file-fmt qcow2 on a raw file.
    let raw = t.path("raw.img");
    fs::write(&raw, vec![0u8; 4096]).unwrap();
    let (code, _, err) = t.run(&["--file-fmt=qcow2", "lff0", raw.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: not a qcow2 image (no QFI\\xfb magic)\n",
            raw.display()
        )
    );
    // Default (raw) does not look inside: it reaches the ioctl.
    let (_, _, err) = t.run(&["lff0", top.to_str().unwrap()]);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: Warning: file has the qcow2 magic but is attached as raw; \
             use --file-fmt qcow2 (or auto) to read it as qcow2\n\
             losetup-fmt: {}: failed to set up loop device: Inappropriate ioctl for device\n",
            top.display(),
            t.dev("lff0")
        )
    );
}

#[test]
fn detach_errors() {
    let t = Tree::new();
    fs::write(t.env.roots.dev.join("lff0"), "").unwrap();
    let (code, _, err) = t.run(&["-d", "lff0", "lff3"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {}: detach failed: Inappropriate ioctl for device\n\
             losetup-fmt: {}: detach failed: No such file or directory\n",
            t.dev("lff0"),
            t.dev("lff3")
        )
    );
    t.populated();
    let (code, _, err) = t.run(&["-D"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}: detach failed", t.dev("lff0"))),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: detach failed", t.dev("lff2"))),
        "{err}"
    );
    assert!(!err.contains("lff1"), "{err}");
}

#[test]
fn set_capacity_errors() {
    let t = Tree::new();
    fs::write(t.env.roots.dev.join("lff0"), "").unwrap();
    for (dev, why) in [
        ("lff0", "Inappropriate ioctl for device"),
        ("lff3", "No such file or directory"),
    ] {
        let (code, out, err) = t.run(&["-c", dev]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            format!("losetup-fmt: {}: set capacity failed: {why}\n", t.dev(dev))
        );
    }
}

/// `-L` against the populated tree: lff0 is a.img as raw from 0 to its end,
/// lff2 is images/root.qcow2 as qcow2 from 1 MiB, read-only.
#[test]
fn nooverlap_reuses_or_refuses() {
    let t = Tree::new();
    let (a, b) = t.populated();
    let (a, b) = (a.display().to_string(), b.display().to_string());
    // Same file, format and range: lff0 is reused, nothing is attached (the
    // tree has no control node, so finding a free device would fail).
    let (code, out, err) = t.run(&["-f", "-L", "--show", &a]);
    assert_eq!((code, err.as_str()), (0, ""), "{err}");
    assert_eq!(out, format!("{}\n", t.dev("lff0")));
    // Inside lff0's range, or the same bytes through another format.
    for args in [
        &["-f", "-L", "-o", "512", &a][..],
        &["-f", "-L", "--sizelimit", "1024", &a][..],
        &["-f", "-L", "--sizelimit", "512", &b][..],
    ] {
        let (code, out, err) = t.run(args);
        let file = args.last().unwrap();
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert_eq!(
            err,
            format!("losetup-fmt: {file}: overlapping loop device exists\n"),
            "{args:?}"
        );
    }
    // Without -L the same command goes on to look for a free device.
    let (code, _, err) = t.run(&["-f", "--show", &a]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot find an unused loop device"), "{err}");
}

#[test]
fn usage_errors() {
    let t = Tree::new();
    for (args, msg) in [
        (&["--bogus"][..], "unrecognized option '--bogus'"),
        (&["-a", "-d", "lff0"][..], "mutually exclusive arguments: --detach-all --all --set-capacity --detach --find --associated"),
        (&["-r", "-a"][..], "the options --{sizelimit,partscan,read-only,show,direct-io,sector-size,file-fmt,fmt-option,snapshot,trust-image-paths} are allowed during loop device setup only"),
        (&["-o", "abc", "-f", "x"][..], "failed to parse offset: 'abc'"),
    ] {
        let (code, out, err) = t.run(args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert_eq!(
            err,
            format!("losetup-fmt: {msg}\nTry 'losetup-fmt --help' for more information.\n"),
            "{args:?}"
        );
    }
}

#[test]
fn help_and_version() {
    let t = Tree::new();
    let (code, out, _) = t.run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--file-fmt <format>"));
    assert!(out.contains("Available output columns:"));
    let (code, out, _) = t.run(&["-V"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "losetup-fmt from loop-file-fmt {}\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn binary_uses_its_invocation_name() {
    let t = Tree::new();
    let out = Command::new(env!("CARGO_BIN_EXE_losetup-fmt"))
        .arg0("/sbin/losetup")
        .arg("--bogus")
        .env("LOSETUP_FMT_SYSFS", &t.env.roots.sys)
        .env("LOSETUP_FMT_DEVDIR", &t.env.roots.dev)
        .env("LOSETUP_FMT_NO_MODPROBE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "losetup: unrecognized option '--bogus'\nTry 'losetup --help' for more information.\n"
    );
    assert!(out.stdout.is_empty());

    t.populated();
    let out = Command::new(env!("CARGO_BIN_EXE_losetup-fmt"))
        .args(["-n", "-O", "NAME,FORMAT"])
        .env("LOSETUP_FMT_SYSFS", &t.env.roots.sys)
        .env("LOSETUP_FMT_DEVDIR", &t.env.roots.dev)
        .env("LOSETUP_FMT_NO_MODPROBE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} raw\n{} qcow2\n", t.dev("lff0"), t.dev("lff2"))
    );
}

/// VMDK descriptor files: the extents are resolved before any ioctl, and
/// a bad one stops the attach with a message naming the descriptor, the
/// line and the extent (exit status 1); `auto` takes a descriptor as VMDK.
#[test]
fn setup_vmdk_descriptor_errors_are_reported_before_any_ioctl() {
    let t = Tree::new();
    fs::write(t.env.roots.dev.join("lff0"), "").unwrap();
    qemu_img(
        t.dir.path(),
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentFlat",
            "split.vmdk",
            "3G",
        ],
    );
    let desc = t.path("split.vmdk");
    let d = desc.to_str().unwrap();
    // Both formats fail with `want` and exit status 1.
    let both = |want: String| {
        for fmt in ["auto", "vmdk"] {
            let (code, _, err) = t.run(&["--file-fmt", fmt, "-r", "lff0", d]);
            assert_eq!((code, &err), (1, &want), "{fmt}");
        }
    };
    // All extents there: both reach the ioctl (a regular file here, so
    // ENOTTY).
    both(format!(
        "losetup-fmt: {}: failed to set up loop device: Inappropriate ioctl for device\n",
        t.dev("lff0")
    ));
    fs::remove_file(t.path("split-f002.vmdk")).unwrap();
    both(format!(
        "losetup-fmt: {d}: line 9: cannot open extent file '{}': No such file or directory\n",
        t.path("split-f002.vmdk").display()
    ));
    // An absolute name needs consent.
    let text = fs::read_to_string(&desc).unwrap();
    let abs = t.path("split-f001.vmdk");
    fs::write(
        &desc,
        text.replace(
            "RW 4194304 FLAT \"split-f001.vmdk\" 0",
            &format!("RW 4194304 FLAT \"{}\" 0", abs.display()),
        )
        .replace("RW 2097152 FLAT \"split-f002.vmdk\" 0", "RW 2097152 ZERO"),
    )
    .unwrap();
    let (code, _, err) = t.run(&["--file-fmt=vmdk", "-r", "lff0", d]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "losetup-fmt: {d}: line 8: extent file '{}' is outside the descriptor's directory \
             (absolute or with '..'); use --trust-image-paths to follow it\n",
            abs.display()
        )
    );
    let (code, _, err) = t.run(&["--file-fmt=vmdk", "--trust-image-paths", "-r", "lff0", d]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("failed to set up loop device: Inappropriate ioctl for device\n"),
        "{err}"
    );
}
