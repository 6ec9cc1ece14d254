//! The `regcache` command line: `serve` runs the mirror, `check-config` validates a config file,
//! `cache stats`, `cache ls`, `cache gc` and `cache purge` inspect and trim the cache and drop tag records
//! (directly, or through the running daemon's admin listener when it owns the directory).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use regcache::config::Config;
use regcache::telemetry::LogControl;

/// How long the process waits, after its shutdown deadline, for blocking calls to return.
const RUNTIME_STOP: Duration = Duration::from_secs(1);

/// A pull-through caching mirror for container registries.
///
/// Point Docker (`registry-mirrors`), containerd (`hosts.toml`) or CRI-O/podman
/// (`[[registry.mirror]]`) at it; it fetches each image layer once from the upstream registry and
/// serves every later pull from local disk.
#[derive(Parser)]
#[command(name = "regcache", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mirror. Without --config it listens on 0.0.0.0:5000, caches under ./regcache-data
    /// and knows docker.io (default), ghcr.io, quay.io, registry.k8s.io, gcr.io, public.ecr.aws
    /// and mcr.microsoft.com.
    Serve {
        /// TOML configuration file (see etc/regcache.toml for every key).
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Log format on stderr (overrides log.format): text or json.
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Validate a configuration file and print every problem found (exit 0 if valid, 64 if not).
    CheckConfig {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Inspect or trim the cache directory. Works whether the daemon runs or not: a running
    /// daemon is asked through its admin listener ([admin] listen) instead of being raced.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Fetch images into the cache as a pull does (manifest, index children, config and layers,
    /// optionally referrers), through the running daemon, or on the directory when none runs.
    /// Exits non-zero if any image failed.
    Prefetch {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Images as clients name them: alpine:3.20, ghcr.io/org/app@sha256:..., 127.0.0.1:5000/org/app:v1.
        images: Vec<String>,
        /// A file of images, one a line (# comments, blank lines skipped); - is standard input.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Only these platforms of a multi-platform image: os/arch[/variant], comma-separated.
        #[arg(long, value_delimiter = ',')]
        platform: Vec<String>,
        /// Also the referrers (signatures, SBOMs, attestations) of each manifest.
        #[arg(long)]
        referrers: bool,
        /// Pin what is fetched, so eviction keeps it (undo with `regcache unpin`).
        #[arg(long)]
        pin: bool,
        /// Print the progress events and the summary as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove the pins of cached images (their manifests, blobs, tag record and links), so
    /// eviction may take them again. The tag is resolved through the cached tag record.
    Unpin {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries, bytes, oldest access and pinned content.
    Stats {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What the cache holds, by upstream, repository and tag: digest, platforms, bytes and blobs
    /// cached, last pull, pinned; then cached manifests no tag points to, by digest.
    Ls {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Only images under this prefix: library/alpine, ghcr.io/org.
        #[arg(value_name = "IMAGE-PREFIX")]
        prefix: Option<String>,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Evict least recently used content now: down to the low watermark of [cache] max_size, or
    /// down to --to. Content being read and pinned content is kept.
    Gc {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Target usage, like "10GiB", "500MB" or a number of bytes.
        #[arg(long, value_parser = regcache::config::parse_size)]
        to: Option<u64>,
    },
    /// Drop the tag record of IMAGE:TAG (every tag record of IMAGE without a tag), so the next
    /// pull revalidates with the upstream at once. Content by digest stays.
    Purge {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// An image as clients name it: alpine:3.20, docker.io/library/alpine, ghcr.io/org/app:v1.
        image: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, regcache::config::ConfigErrors> {
    match path {
        Some(p) => Config::from_file(p),
        None => Ok(Config::default()),
    }
}

/// What `check-config` found: listener, cache, each upstream, client authentication.
fn print_summary(c: &Config) {
    println!(
        "config ok: listen {}, cache {}, {} upstreams (default {})",
        c.listen,
        c.cache.dir.display(),
        c.upstreams.len(),
        c.default_upstream().host
    );
    for u in &c.upstreams {
        let mut line = format!("  {} {} auth: {}", u.host, u.base_url(), u.credentials.describe());
        if let Some(n) = u.max_connections {
            line.push_str(&format!(", max_connections {n}"));
        }
        if u.client_cert.is_some() {
            line.push_str(", client certificate");
        }
        if u.private {
            line.push_str(", private (never served to anonymous clients)");
        }
        println!("{line}");
    }
    let a = &c.auth;
    println!(
        "clients: {} users, {} robot tokens, {} groups, {} access rules, anonymous {}",
        a.users.len(),
        a.tokens.len(),
        a.groups.len(),
        a.rules.len(),
        if a.anonymous == regcache::config::Anonymous::Read {
            "read"
        } else {
            "none"
        }
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(config.as_ref()) {
            Ok(c) => {
                print_summary(&c);
                for w in c.warnings() {
                    println!("warning: {w}");
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

fn cache_command(command: CacheCommand) -> ExitCode {
    let (CacheCommand::Stats { config, .. }
    | CacheCommand::Ls { config, .. }
    | CacheCommand::Gc { config, .. }
    | CacheCommand::Purge { config, .. }) = &command;
    let config = match load(config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let _ = regcache::telemetry::init("warn", false);
    let run = async {
        use regcache::cli::{cache_cmd, render};
        match command {
            CacheCommand::Stats { json, .. } => {
                let (stats, via) = cache_cmd::stats(&config).await?;
                Ok::<_, anyhow::Error>(if json {
                    format!("{}\n", serde_json::to_string_pretty(&stats)?)
                } else {
                    render::render_stats(&stats, via)
                })
            }
            CacheCommand::Ls { prefix, json, .. } => {
                let (entries, via) = cache_cmd::ls(&config, prefix.as_deref()).await?;
                Ok(if json {
                    format!("{}\n", serde_json::to_string_pretty(&entries)?)
                } else {
                    regcache::cli::ls::render_ls(&entries, via)
                })
            }
            CacheCommand::Gc { to, .. } => {
                let (report, via) = cache_cmd::gc(&config, to).await?;
                Ok(render::render_gc(&report, via))
            }
            CacheCommand::Purge { image, json, .. } => {
                let (report, via) = cache_cmd::purge(&config, &image).await?;
                Ok(if json {
                    format!("{}\n", serde_json::to_string_pretty(&report)?)
                } else {
                    render::render_purge(&report, via)
                })
            }
        }
    };
    let out = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run));
    match out {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regcache: {e:#}");
            let config_error = e
                .downcast_ref::<regcache::cli::cache_cmd::ControlError>()
                .is_some_and(|e| e.is_config_error());
            if config_error {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `regcache prefetch` and `regcache unpin`.
fn pin_command(command: Command) -> ExitCode {
    use regcache::cli::prefetch_cmd as cmd;
    let (Command::Prefetch { config, .. } | Command::Unpin { config, .. }) = &command else {
        return ExitCode::FAILURE;
    };
    let config = match load(config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let _ = regcache::telemetry::init("warn", false);
    let run = async {
        match command {
            Command::Prefetch {
                mut images,
                file,
                platform,
                referrers,
                pin,
                json,
                ..
            } => {
                if let Some(f) = file {
                    let listed =
                        cmd::read_list_file(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                    images.extend(listed);
                }
                if images.is_empty() {
                    anyhow::bail!("no images to prefetch: name them or give -f FILE");
                }
                let options = regcache::admin_api::PrefetchOptions {
                    images,
                    platforms: platform,
                    referrers,
                    pin,
                };
                let style = cmd::Style::detect(json);
                let mut progress = cmd::Progress::new(std::io::stdout(), style);
                let (events, via) = cmd::prefetch(&config, &options, |e| progress.show(e)).await?;
                if style != cmd::Style::Json {
                    print!("{}", cmd::render_summary(&events, via));
                }
                Ok::<_, anyhow::Error>(cmd::all_done(&events))
            }
            Command::Unpin { images, json, .. } => {
                for image in images {
                    let (report, via) = cmd::unpin(&config, &image).await?;
                    if json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        print!("{}", cmd::render_unpin(&report, via));
                    }
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let out = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run));
    match out {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("regcache: {e:#}");
            let config_error = e
                .downcast_ref::<regcache::cli::cache_cmd::ControlError>()
                .is_some_and(|e| e.is_config_error());
            if config_error {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
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
