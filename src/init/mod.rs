//! PID 1 duties that are not supervision: the signal mask, the subreaper,
//! the check that reaping can work, and the terminal's foreground.
//!
//! Before the supervisor loop starts a failure here ends procward with a
//! message; once it runs, nothing may end it but the end of the apps.

pub mod reaper;
pub mod signals;
pub mod terminal;

use std::io;

/// The single-threaded event loop procward runs on, in every mode; failing
/// to make it is a set-up error, said on stderr (logging may not be up).
pub fn event_loop() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("procward: cannot start the event loop: {e}");
            crate::exit::SETUP
        })
}

/// Whether procward is the init of its PID namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Makes procward the reaper of its orphaned descendants when it is not PID 1
/// (prctl(2) PR_SET_CHILD_SUBREAPER, Linux >= 3.4).
pub fn become_subreaper() -> io::Result<()> {
    if is_pid1() {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
