//! procward: the entry point. Parse the command line, set up logging and the
//! PID 1 duties, then hand over to the supervisor.

mod cli;
mod config;
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

use std::process::ExitCode;

use tracing::warn;

use cli::{Cli, Command};
use config::{AgentSettings, AppSpec, LogFormat};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::parse(args.clone()) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("procward: {msg}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    match &cli.command {
        Some(Command::Check(args)) => return ExitCode::from(config::commands::check(args) as u8),
        Some(Command::Convert(args)) => {
            return ExitCode::from(config::commands::convert(args) as u8)
        }
        _ => {}
    }
    if let Some(Command::Observe(observe_args)) = cli.command {
        let (apps, agent) = match observe::plan(observe_args) {
            Ok(p) => p,
            Err(msg) => {
                eprintln!("procward: {msg}");
                return ExitCode::from(exit::USAGE as u8);
            }
        };
        setup_logging(&agent);
        let code = observe::run(apps, agent);
        own_log::flush(std::time::Duration::from_millis(500));
        return ExitCode::from(code as u8);
    }
    let (apps, agent) = match plan(cli, &args) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("procward: {msg}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    setup_logging(&agent);
    let code = run(apps, agent);
    init::terminal::give_back();
    // The last lines (why procward stops) should reach a stderr that is
    // read; one nobody reads does not hold the exit up for long.
    own_log::flush(std::time::Duration::from_millis(500));
    ExitCode::from(code as u8)
}

/// Turns the command line into the apps to run and the agent's settings;
/// every value is checked here, before anything starts.
fn plan(cli: Cli, args: &[std::ffi::OsString]) -> Result<(Vec<AppSpec>, AgentSettings), String> {
    let mut agent = AgentSettings::default();
    match cli.command {
        Some(Command::Run(args)) => config::commands::plan_run(args),
        Some(Command::Check(_) | Command::Convert(_) | Command::Observe(_)) => {
            unreachable!("handled in main")
        }
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
            Ok((vec![app], agent))
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
fn run(apps: Vec<AppSpec>, agent: AgentSettings) -> i32 {
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
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("procward: cannot start the event loop: {e}");
            return exit::SETUP;
        }
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
        let code = sup.run(sigs).await;
        // Captured output still in the pipes is written before exiting.
        logs.drain(std::time::Duration::from_secs(3));
        code
    })
}
