/// glibc's malloc was about a fifth of the gateway's CPU under load: requests are built on the
/// tokio workers and their audit records freed on SQLite's thread, so arenas lock and
/// consolidate. mimalloc frees across threads without that. `no_thp`: with transparent huge
/// pages its arenas inflated peak RSS past the 100 MB target (measured in the commit).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    private_umask();
    let cli = credgate::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(credgate::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Everything this process creates (the SQLite database and its WAL and SHM, archives, key
/// files) holds client hashes, the audit log or report texts: owner-only, whatever the shell's
/// umask. The code that creates those files also sets 0600 itself; this covers what it misses.
fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail, and no other
    // thread is running yet to race on it.
    unsafe {
        libc::umask(0o077);
    }
}
