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
