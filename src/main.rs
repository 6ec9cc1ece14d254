//! The `regcache` command line (its shape is `regcache::cli::args`): `serve` runs the mirror,
//! `check-config` validates a config file, `cache stats|ls|gc|purge` inspect and trim the cache,
//! `prefetch` and `unpin` fill and pin it, `export` and `import` carry it across an air gap,
//! `repo create` makes a hosted repository; directly, or through the running daemon's admin
//! listener when it owns the directory. The commands' work and text live in `regcache::cli`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use regcache::cli::args::{BucketCommand, BundleCommand, CacheCommand, Cli, Command, RepoCommand};
use regcache::config::Config;
use regcache::telemetry::LogControl;

/// The allocator: it keeps freed memory for reuse where glibc's returns it to the kernel and
/// takes it back page fault by page fault (a cold download's receive buffers churned through
/// about 13 % of its CPU in `perf` that way).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the process waits, after its shutdown deadline, for blocking calls to return.
const RUNTIME_STOP: Duration = Duration::from_secs(1);

fn load(path: Option<&PathBuf>) -> Result<Config, regcache::config::ConfigErrors> {
    match path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config, probe } => match load(config.as_ref()) {
            Ok(c) => {
                print!("{}", regcache::cli::render::render_config(&c));
                for w in c.warnings() {
                    println!("warning: {w}");
                }
                if probe {
                    return probe_upstreams(&c);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(64)
            }
        },
        Command::Cache { command } => cache_command(command),
        command @ (Command::Prefetch { .. } | Command::Unpin { .. }) => pin_command(command),
        Command::Bundle(command) => bundle_command(command),
        Command::Bucket {
            command:
                BucketCommand::Gc {
                    config,
                    to,
                    dry_run,
                    json,
                },
        } => operator(config.as_ref(), |config| async move {
            let report = regcache::cli::bucket_cmd::gc(&config, to, dry_run).await?;
            show(json, &report, || regcache::cli::bucket_cmd::render(&report))
        }),
        Command::Repo {
            command: RepoCommand::Create { config, name, json },
        } => operator(config.as_ref(), |config| async move {
            let (report, via) = regcache::cli::cache_cmd::create_repo(&config, &name).await?;
            show(json, &report, || {
                format!(
                    "created {}/{} ({})\n",
                    report.namespace,
                    report.repository,
                    match via {
                        regcache::cli::cache_cmd::Via::Directory =>
                            "on the directory (no daemon running)".to_string(),
                        regcache::cli::cache_cmd::Via::Daemon(a) => format!("by the running daemon at {a}"),
                    }
                )
            })
        }),
        Command::Serve { config, log_format } => {
            let config_path = config.clone();
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(64);
                }
            };
            let json = match log_format.as_deref() {
                Some(f) => f == "json",
                None => config.log.format == regcache::config::LogFormat::Json,
            };
            let logs = regcache::telemetry::init(&config.log.level, json);
            match serve(config_path, config, logs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("regcache: {e:#}");
                    let config_error = e
                        .downcast_ref::<regcache::app::StartError>()
                        .is_some_and(|e| e.is_config_error());
                    if config_error {
                        ExitCode::from(64)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// Runs an operator command: loads the config (exit 64 when it is bad), then `run` on a small
/// runtime; `Ok(true)` is success, an error is printed (exit 64 when the config is at fault).
fn operator<Fut>(path: Option<&PathBuf>, run: impl FnOnce(Config) -> Fut) -> ExitCode
where
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let _ = regcache::telemetry::init("warn", false);
    let out = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(config)));
    match out {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("regcache: {e:#}");
            let config_error = e
                .downcast_ref::<regcache::cli::cache_cmd::ControlError>()
                .is_some_and(|e| e.is_config_error());
            ExitCode::from(if config_error { 64 } else { 1 })
        }
    }
}

/// A report as pretty JSON, or as the renderer's text.
fn show<T: serde::Serialize>(json: bool, report: &T, text: impl FnOnce() -> String) -> anyhow::Result<bool> {
    match json {
        true => println!("{}", serde_json::to_string_pretty(report)?),
        false => print!("{}", text()),
    }
    Ok(true)
}

fn cache_command(command: CacheCommand) -> ExitCode {
    use regcache::cli::{cache_cmd, render};
    let (CacheCommand::Stats { config, .. }
    | CacheCommand::Ls { config, .. }
    | CacheCommand::Gc { config, .. }
    | CacheCommand::Purge { config, .. }) = &command;
    let path = config.clone();
    operator(path.as_ref(), |config| async move {
        match command {
            CacheCommand::Stats { json, .. } => {
                let (stats, via) = cache_cmd::stats(&config).await?;
                show(json, &stats, || render::render_stats(&stats, via))
            }
            CacheCommand::Ls { prefix, json, .. } => {
                let (entries, via) = cache_cmd::ls(&config, prefix.as_deref()).await?;
                show(json, &entries, || regcache::cli::ls::render_ls(&entries, via))
            }
            CacheCommand::Gc {
                to,
                hosted,
                unused_for,
                ..
            } => {
                let (report, via) = cache_cmd::gc(&config, to, hosted, unused_for).await?;
                print!("{}", render::render_gc(&report, via, unused_for));
                Ok(true)
            }
            CacheCommand::Purge { image, json, .. } => {
                let (report, via) = cache_cmd::purge(&config, &image).await?;
                show(json, &report, || render::render_purge(&report, via))
            }
        }
    })
}

/// `regcache export` and `regcache import`.
fn bundle_command(command: BundleCommand) -> ExitCode {
    use regcache::cli::bundle_cmd as cmd;
    let (BundleCommand::Export { config, .. } | BundleCommand::Import { config, .. }) = &command;
    let path = config.clone();
    operator(path.as_ref(), |config| async move {
        match command {
            BundleCommand::Export {
                output,
                images,
                all,
                pinned,
                json,
                ..
            } => {
                if images.is_empty() && !all && !pinned {
                    anyhow::bail!("name the images to export, or give --all or --pinned");
                }
                let options = regcache::admin_api::ExportOptions { images, all, pinned };
                let (report, via) = cmd::export(&config, &options, &output).await?;
                if output == std::path::Path::new("-") {
                    eprint!("{}", cmd::render_export(&report, &output, via));
                    return Ok(true);
                }
                show(json, &report, || cmd::render_export(&report, &output, via))
            }
            BundleCommand::Import {
                bundle,
                no_pin,
                repository,
                json,
                ..
            } => {
                let options = regcache::admin_api::ImportOptions {
                    pin: !no_pin,
                    repository,
                };
                let (report, via) = cmd::import(&config, &bundle, &options).await?;
                show(json, &report, || cmd::render_import(&report, &bundle, via))
            }
        }
    })
}

/// `check-config --probe`: every upstream asked for `/v2/`; exit 1 when one does not answer.
fn probe_upstreams(config: &Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(regcache::cli::probe_cmd::probe_all(config)) {
        Ok((report, all_ok)) => {
            print!("{report}");
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `regcache prefetch` and `regcache unpin`.
fn pin_command(command: Command) -> ExitCode {
    use regcache::cli::prefetch_cmd as cmd;
    let (Command::Prefetch { config, .. } | Command::Unpin { config, .. }) = &command else {
        return ExitCode::FAILURE;
    };
    let path = config.clone();
    operator(path.as_ref(), |config| async move {
        match command {
            Command::Prefetch {
                images,
                file,
                from_manifests,
                platform,
                referrers,
                pin,
                json,
                ..
            } => {
                let images = cmd::images_to_fetch(images, file.as_deref(), &from_manifests)?;
                let options = regcache::admin_api::PrefetchOptions {
                    images,
                    platforms: platform,
                    referrers,
                    pin,
                };
                Ok(cmd::run_prefetch(&config, &options, json).await?)
            }
            Command::Unpin { images, json, .. } => {
                for image in images {
                    let (report, via) = cmd::unpin(&config, &image).await?;
                    match json {
                        true => println!("{}", serde_json::to_string(&report)?),
                        false => print!("{}", cmd::render_unpin(&report, via)),
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    })
}

fn serve(path: Option<PathBuf>, config: Config, logs: LogControl) -> anyhow::Result<()> {
    // Blocking work (disk reads that miss the page cache, writes and syncs of downloads) is
    // short and bounded by the disk: a small pool, so a thousand slow clients are not a thousand
    // threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(48)
        .build()?;
    let served = rt.block_on(async {
        let stop = shutdown_signal()?;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let running = regcache::app::start(config).await?;
        tokio::spawn(reload_on_sighup(hup, path, logs, running.reloader()));
        running.run_until(stop).await;
        Ok(())
    });
    // What is left after the shutdown deadline (downloads cut off, their blocking writes) is
    // dropped; a blocking call stuck on a hung disk does not hold the exit.
    rt.shutdown_timeout(RUNTIME_STOP);
    served
}

/// SIGHUP re-reads the TLS listener's certificate and key, then the config file, and applies
/// what can change live: the log level and upstream credentials. Everything else is reported as needing a restart.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    logs: LogControl,
    daemon: regcache::app::Reloader,
) {
    while hup.recv().await.is_some() {
        daemon.reload_certificate();
        let config = match load(path.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "configuration reload failed; keeping the running configuration");
                continue;
            }
        };
        if let Err(e) = logs.set_level(&config.log.level) {
            tracing::warn!(error = %e, "could not apply the new log level");
        }
        for change in daemon.apply(&config) {
            tracing::warn!(%change, "not applied until a restart");
        }
        tracing::info!(level = %config.log.level, "configuration reloaded (log level, upstream credentials, client users and access rules)");
    }
}

/// Resolves on SIGTERM or SIGINT. Handlers are registered when this is called, before the
/// daemon starts listening, so an early signal is never fatal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
