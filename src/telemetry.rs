//! Logging setup (tracing): the global subscriber on stderr (text or JSON lines; ANSI colours only
//! on a terminal) and the handle that changes its filter on reload. Keeping credentials out of
//! log lines is `secret::Secret`'s job.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Changes the log filter of the running process (SIGHUP reload).
pub struct LogControl {
    reload: Reload,
    from_env: bool,
}

impl LogControl {
    /// Applies `filter` unless `RUST_LOG` decided the level at start.
    pub fn set_level(&self, filter: &str) -> Result<(), String> {
        if self.from_env {
            return Ok(());
        }
        (self.reload)(filter)
    }
}

/// Installs the global subscriber on stderr: `RUST_LOG` (or else `default_filter`) decides the
/// level; human-readable lines (coloured only when stderr is a terminal), or one JSON object per
/// line when `json` is set.
pub fn init(default_filter: &str, json: bool) -> LogControl {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal: a journal, a file or a log pipeline would keep
    // the escape codes as text.
    let base = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    fn control<L>(handle: tracing_subscriber::reload::Handle<EnvFilter, L>, from_env: bool) -> LogControl
    where
        L: 'static,
    {
        LogControl {
            reload: Box::new(move |f| {
                let filter = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }),
            from_env,
        }
    }
    if json {
        let builder = base
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = builder.try_init();
        control(handle, from_env)
    } else {
        let builder = base.with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = builder.try_init();
        control(handle, from_env)
    }
}
