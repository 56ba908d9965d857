/// glibc's malloc was about a fifth of the gateway's CPU under load: requests are built on the
/// tokio workers and their audit records freed on SQLite's thread, so arenas lock and
/// consolidate. mimalloc frees across threads without that. `no_thp`: with transparent huge
/// pages its arenas inflated peak RSS past the 100 MB target (measured in the commit).
/// `v2` (Cargo.toml): v3, the crate's default, gives freed pages back to the kernel a second
/// after they empty. Requests free whole pages at every group commit (each holds a ~16 KB audit
/// task until its record commits), so a second of them stayed resident, more the more requests
/// a second: 25-35 MB of a 92-105 MB peak at 256 connections. v2 reuses pages within its
/// thread's segments and purges after 10 ms: 76-80 MB there, at the same req/s and CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    private_umask();
    let cli = credgate::cli::Cli::parse();
    if !cli.command.is_server() {
        default_sigpipe();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(credgate::cli::run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`| head -1`): nothing to say to anyone.
        Err(e) if broken_pipe(&e) => std::process::ExitCode::FAILURE,
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

/// A one-shot command piped into `head` ends as any Unix filter does when its reader goes
/// away: silently, by SIGPIPE. Rust ignores SIGPIPE by default, which turns that write into an
/// error and `println!` into a panic message. Servers keep ignoring it: a client closing its
/// socket must never end the gateway.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether `e` comes from writing to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    unsafe extern "C" {
        fn mi_version() -> std::ffi::c_int;
    }

    /// v3 kept a second of freed pages resident (see `GLOBAL`): dropping the `v2` feature must
    /// not go unnoticed.
    #[test]
    fn the_allocator_is_mimalloc_v2() {
        // SAFETY: returns a constant; no state is read or written.
        let version = unsafe { mi_version() };
        assert_eq!(version / 10000, 2, "mimalloc {version}");
    }
}
