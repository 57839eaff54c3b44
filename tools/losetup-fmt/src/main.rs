//! The `losetup-fmt` binary; everything is in the library.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let env = losetup_fmt::Env::from_process();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = losetup_fmt::run(&args, &env, &mut stdout.lock(), &mut stderr.lock());
    std::process::exit(code);
}
