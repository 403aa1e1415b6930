//! procward: the entry point. Parse the command line, set up logging and the
//! PID 1 duties, then hand over to the supervisor.

// The C `main` below replaces Rust's start-up.
#![cfg_attr(not(test), no_main)]

mod cli;
mod config;
mod control;
mod cron;
mod exit;
mod http;
mod init;
mod logs;
mod metrics;
mod notify;
mod observe;
mod own_log;
mod ready;
mod resources;
mod sockets;
mod spawn;
mod status;
mod supervise;
mod tree;
mod watch;

use tracing::warn;

use cli::{Cli, Command};
use config::commands::Plan;
use config::{AgentSettings, AppSpec, LogFormat};

/// The entry point, called by the C library in place of Rust's own start-up
/// (`std::rt::lang_start`), which procward does not need: it reads and
/// parses /proc/self/maps to find the main thread's stack and maps a signal
/// stack for its stack-overflow message (so an overflow here is a plain
/// SIGSEGV). Skipping it saves 15 system calls and 4 page faults, about 4%
/// of procward's own start (`perf stat`, `procward -- /bin/true`). Kept from
/// it: closed standard descriptors are opened on /dev/null, so none of our
/// sockets becomes someone's stderr; SIGPIPE is ignored, so a closed stdout
/// is an error to report (`block_all` sets every disposition back before an
/// app starts); stdout is flushed at the end. std reads the arguments from
/// the C library as usual.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    for fd in 0..=2 {
        // SAFETY: fcntl(2) and open(2) on integers and a NUL-terminated
        // path; open returns the lowest free descriptor, the one missing.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != fd
            {
                libc::abort();
            }
        }
    }
    // SAFETY: ignoring a signal installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = start();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code.into()
}

#[cfg_attr(test, allow(dead_code))]
fn start() -> u8 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::parse(args.clone()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("procward: {msg}");
            return exit::USAGE as u8;
        }
    };
    match &cli.command {
        Some(Command::Check(args)) => return config::commands::check(args) as u8,
        Some(Command::Convert(args)) => return config::commands::convert(args) as u8,
        Some(Command::Control(c)) => return control::client::command(c) as u8,
        Some(Command::Completions(args)) => return cli::completions(&args.shell) as u8,
        Some(Command::Man) => return cli::man() as u8,
        _ => {}
    }
    let process_file = match &cli.command {
        Some(Command::Run(r)) => Some(r.file.config.clone()),
        _ => None,
    };
    if let Some(Command::Observe(observe_args)) = cli.command {
        let (apps, agent) = match observe::plan(observe_args) {
            Ok(p) => p,
            Err(msg) => {
                eprintln!("procward: {msg}");
                return exit::USAGE as u8;
            }
        };
        setup_logging(&agent);
        let code = observe::run(apps, agent);
        own_log::flush(std::time::Duration::from_millis(500));
        return code as u8;
    }
    let (apps, agent) = match plan(cli, &args) {
        Ok(Plan::Supervise(apps, agent)) => (apps, agent),
        Ok(Plan::Observe(apps, agent)) => {
            setup_logging(&agent);
            let code = observe::run(apps, agent);
            own_log::flush(std::time::Duration::from_millis(500));
            return code as u8;
        }
        Err(msg) => {
            eprintln!("procward: {msg}");
            return exit::USAGE as u8;
        }
    };
    setup_logging(&agent);
    let name = control::paths::name_of(
        process_file.as_deref(),
        apps.first().map_or("procward", |a| a.name.as_str()),
    );
    let code = run(apps, agent, name);
    init::terminal::give_back();
    // The last lines (why procward stops) should reach a stderr that is
    // read; one nobody reads does not hold the exit up for long.
    own_log::flush(std::time::Duration::from_millis(500));
    code as u8
}

/// Turns the command line into the apps to run and the agent's settings;
/// every value is checked here, before anything starts.
fn plan(cli: Cli, args: &[std::ffi::OsString]) -> Result<Plan, String> {
    let mut agent = AgentSettings::default();
    match cli.command {
        Some(Command::Run(args)) => config::commands::plan_run(args),
        Some(
            Command::Check(_)
            | Command::Convert(_)
            | Command::Observe(_)
            | Command::Control(_)
            | Command::Completions(_)
            | Command::Man,
        ) => unreachable!("handled in main"),
        None => {
            if !cli::after_dashdash(args, &cli.cmd) {
                if let Some(e) = cli::pm2_verb(&cli.cmd) {
                    return Err(e);
                }
            }
            // Values first: an option that took the command's words
            // (`--stop-exit-codes 0 node app.js`) says so.
            cli.agent.apply(&mut agent)?;
            let mut app = AppSpec::new(cli::default_name(&cli.cmd), cli.cmd);
            // The plain wrap passes the environment exactly as given: PM2's
            // instance variable only comes with `-i`.
            app.instance_var = None;
            // PM2's sink.determineExecMode: `-i` on a node or bun command
            // means cluster mode.
            app.exec_mode = cli::exec_mode(&app.argv, cli.app.instances.is_some());
            cli.app.apply(&mut app, config::cpus::available)?;
            if app.argv.is_empty() {
                return Err("no command given\n\nUsage: procward [OPTIONS] [--] CMD [ARGS]...\n\nFor more information, try '--help'.".into());
            }
            Ok(Plan::Supervise(vec![app], agent))
        }
    }
}

fn setup_logging(agent: &AgentSettings) {
    let level = agent.log_level.parse().unwrap_or(tracing::Level::INFO);
    own_log::start();
    let builder = tracing_subscriber::fmt()
        .with_writer(own_log::Stderr)
        .with_max_level(level)
        .with_target(false)
        // A failed log write (stderr a closed pipe, say) is dropped: the
        // default reports it with eprintln!, which panics on EPIPE.
        .log_internal_errors(false);
    match agent.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// The PID 1 checklist, then the supervisor loop.
fn run(apps: Vec<AppSpec>, agent: AgentSettings, name: String) -> i32 {
    // First, before procward opens anything: sockets its own service
    // manager passed are adopted, every other inherited descriptor is
    // close-on-exec, so nothing leaks into the apps.
    let mut inherited = sockets::Inherited::take();
    sockets::close_inherited_on_exec(&inherited.raw_fds());
    let mut listen = Vec::new();
    for app in &apps {
        match sockets::bind_app(&app.name, &app.listen, &mut inherited) {
            Ok(held) => listen.push(held),
            Err(e) => {
                eprintln!("procward: {e}");
                return exit::SETUP;
            }
        }
    }
    // Before any thread exists, so every thread inherits the mask.
    if let Err(e) = init::signals::block_all() {
        eprintln!("procward: cannot block signals: {e}");
        return exit::SETUP;
    }
    init::terminal::claim(apps.len() == 1 && apps[0].instances == 1);
    if let Err(e) = init::become_subreaper() {
        warn!(error = %e, "cannot become a child subreaper: orphaned descendants will not be reaped \
              (are you using Linux >= 3.4?). To fix it, run procward as PID 1");
    }
    let rt = match init::event_loop() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let sigs = match init::signals::SignalSource::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("procward: cannot open a signalfd: {e}");
                return exit::SETUP;
            }
        };
        tokio::spawn(own_log::drain());
        let metrics_addr = agent.metrics_addr;
        let control_path = agent.control_socket.clone();
        let app_names = apps.iter().map(|a| a.name.clone()).collect();
        let mut sup = supervise::Supervisor::new(apps, agent);
        sup.hold_sockets(listen);
        let h = sup.handles();
        if let Some(interval) = h.sample_interval {
            tokio::spawn(resources::run(interval, h.roots.clone(), sup.samples()));
        }
        if let Some(addr) = metrics_addr {
            match http::Server::bind(addr, &h) {
                Ok(server) => {
                    tokio::spawn(server.serve());
                }
                Err(e) => {
                    eprintln!("procward: cannot serve --metrics on {addr}: {e}");
                    return exit::SETUP;
                }
            }
        }
        let logs = sup.logs();
        let shared = control::server::Shared {
            name,
            apps: app_names,
            status: h.status.clone(),
            calls: sup.calls(),
            refused: h.control_refused.clone(),
            sampled: h.sample_interval.is_some(),
            logs: sup.logs(),
        };
        // Held until procward exits: dropping it removes the socket.
        let control = std::sync::Arc::new(std::sync::Mutex::new(None));
        if notify::socket_from_env().is_some() {
            // A service: the socket exists before READY=1 can be sent, so
            // `systemctl start` followed by `procward status` finds it.
            *control.lock().unwrap_or_else(|e| e.into_inner()) =
                serve_control(control_path.as_deref(), shared);
        } else {
            let slot = control.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CONTROL_AFTER).await;
                let bound = serve_control(control_path.as_deref(), shared);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = bound;
            });
        }
        let code = sup.run(sigs).await;
        // Captured output still in the pipes is written before exiting.
        logs.drain(std::time::Duration::from_secs(3));
        drop(control.lock().unwrap_or_else(|e| e.into_inner()).take());
        code
    })
}

/// How long after its start procward makes its control socket, unless it
/// runs under a service manager (then at once, before READY=1). A run
/// shorter than this (a one-shot command, `procward -- /bin/true`) makes
/// none: nobody could have used it, and making and removing its file
/// costs more than the rest of procward's start where the directory is
/// on a disk (0.45 ms of 3.35 ms for `procward --no-autorestart --
/// /bin/true` with /run on ext4, `benches/wrap.sh`).
const CONTROL_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// Binds the control socket and serves it. Failing to is not fatal: the
/// apps run, and the log says why `procward status` will not reach them.
fn serve_control(
    explicit: Option<&std::path::Path>,
    shared: control::server::Shared,
) -> Option<control::server::Bound> {
    let name = shared.name.clone();
    let path = match control::paths::server_path(explicit, &name) {
        Ok(p) => p,
        Err(e) => {
            warn!("no control socket (`procward status` will not reach this procward): {e}");
            return None;
        }
    };
    match control::server::bind(&path) {
        Ok((listener, mut bound)) => {
            // `BASE/NAME/procward.sock`: the directory is this procward's.
            if explicit.is_none() && control::paths::runtime_directory().is_none() {
                bound.own_dir = path
                    .parent()
                    .filter(|d| d.file_name() == Some(name.as_ref()))
                    .map(|d| d.to_path_buf());
            }
            tracing::info!(path = %path.display(), name = %name, "control socket");
            tokio::spawn(control::server::Server::new(listener, shared).serve());
            Some(bound)
        }
        Err(e) => {
            warn!(path = %path.display(),
                  "no control socket (`procward status` will not reach this procward): {e}; \
                   give this procward its own with --control PATH");
            None
        }
    }
}
