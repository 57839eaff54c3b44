//! Replays the inputs that found bugs (`tests/fuzz-regressions/TARGET-*`)
//! through the same harnesses the fuzz targets call.

use std::fs;
use std::path::Path;

#[test]
fn saved_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some((target, _)) = name.split_once("-crash-") else {
            continue;
        };
        let harness = vmdk_format::fuzzing::target(target)
            .unwrap_or_else(|| panic!("{name}: no harness {target}"));
        eprintln!("replaying {name}");
        harness(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no saved inputs in {dir:?}");
}
