//! The command line's shape (clap): every command, its flags and their help text. `main.rs`
//! parses it and runs each command; the work lives in the other `cli/` files.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A pull-through caching mirror for container registries.
///
/// Point Docker (`registry-mirrors`), containerd (`hosts.toml`) or CRI-O/podman
/// (`[[registry.mirror]]`) at it; it fetches each image layer once from the upstream registry and
/// serves every later pull from local disk.
#[derive(Parser)]
#[command(name = "regcache", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Also ask every upstream and fallback for /v2/ as the daemon would (egress proxy, TLS,
        /// token service, credentials); exits 1 when one does not answer.
        #[arg(long)]
        probe: bool,
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
        /// Kubernetes or Compose manifests (YAML or JSON; - is standard input; a directory: every
        /// .yaml/.yml/.json file below it): every image their `image` fields name, e.g.
        /// `kubectl get pods -A -o yaml | regcache prefetch --from-manifests -`.
        #[arg(long = "from-manifests", value_name = "FILE")]
        from_manifests: Vec<PathBuf>,
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
    #[command(flatten)]
    Bundle(BundleCommand),
    /// The bucket replicas share ([storage] kind = "s3").
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
    /// Hosted repositories ([[hosted]] namespaces).
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
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
pub enum RepoCommand {
    /// Create a repository in a hosted namespace (needed before the first push when the
    /// namespace has create_on_push = false), e.g. local/team/app.
    Create {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BucketCommand {
    /// Delete the least recently used blobs and manifests until the bucket fits [storage]
    /// max_size (or --to), never what any replica used within [storage] gc_grace. Run it from
    /// one place for the whole cluster (a CronJob, a timer).
    Gc {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// Target usage, like "10TiB", "500GB" or a number of bytes.
        #[arg(long, value_parser = crate::config::parse_size)]
        to: Option<u64>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Write cached images to a bundle for another site: an OCI image layout in a tar archive
    /// (skopeo, ctr import and `regcache import` read it), each image named by its full upstream
    /// reference, with its cached platforms and referrers. Reads only the cache.
    Export {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// The bundle to write (- is standard output); replaced only when complete.
        #[arg(short, long)]
        output: PathBuf,
        /// Images as clients name them: alpine:3.20, ghcr.io/org/app@sha256:...
        images: Vec<String>,
        /// Every cached image (each tag, and manifests cached by digest).
        #[arg(long)]
        all: bool,
        /// Every pinned image.
        #[arg(long)]
        pinned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add the images of a bundle to the cache, under the upstream and repository each names:
    /// every digest and every reference is checked first, and a bundle with one bad byte adds
    /// nothing. Reads an export, any OCI layout (archive or directory) and `docker save`.
    Import {
        #[arg(short, long, env = "REGCACHE_CONFIG")]
        config: Option<PathBuf>,
        /// A tar archive, a directory, or - for standard input.
        bundle: PathBuf,
        /// Do not pin the imported images (they may then be evicted like pulled ones).
        #[arg(long)]
        no_pin: bool,
        /// Where entries named only by a tag (or not at all) belong: HOST/NAME.
        #[arg(long)]
        repository: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CacheCommand {
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
        #[arg(long, value_parser = crate::config::parse_size)]
        to: Option<u64>,
        /// First delete what hosted repositories no longer hold (deleted manifests and blobs
        /// that no repository links); uploads in progress are never touched.
        #[arg(long)]
        hosted: bool,
        /// Instead, evict what nobody has pulled for this long ("30d", "12h"), whatever the
        /// budget, as [cache] unused_ttl does.
        #[arg(long = "unused-for", value_name = "DURATION", value_parser = crate::config::parse_duration, conflicts_with_all = ["to", "hosted"])]
        unused_for: Option<std::time::Duration>,
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
